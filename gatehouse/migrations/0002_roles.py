"""Create the six role groups and give the platform-wide permissions each role needs."""

from django.db import migrations

ROLES = ["business_user", "api_consumer", "model_owner", "approver", "compliance_officer", "admin"]

# Model-level permissions by role; per-family rights are granted per object (django-guardian).
GLOBAL_PERMISSIONS = {
    "admin": [
        ("auth", "view_user"), ("auth", "change_user"), ("auth", "view_group"),
        ("gatehouse", "view_apikey"), ("gatehouse", "change_apikey"),
        ("auditlog", "view_logentry"),
    ],
    "compliance_officer": [("auditlog", "view_logentry")],
}


def create_roles(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name in ROLES:
        group, _ = Group.objects.get_or_create(name=name)
        for app_label, codename in GLOBAL_PERMISSIONS.get(name, []):
            perm = Permission.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            if perm is not None:
                group.permissions.add(perm)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("gatehouse", "0001_initial"),
        ("auditlog", "__latest__"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
