"""Model owners may create model families (rights on each family are per object)."""

from django.db import migrations


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    config = apps.get_app_config("registry")
    config.models_module = True
    create_permissions(config, verbosity=0, apps=apps)
    config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    perm = Permission.objects.get(content_type__app_label="registry", codename="add_modelfamily")
    Group.objects.get(name="model_owner").permissions.add(perm)


class Migration(migrations.Migration):
    dependencies = [("registry", "0001_initial"), ("gatehouse", "0002_roles")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
