from __future__ import annotations

from django.apps import AppConfig


class GatehouseConfig(AppConfig):
    name = "gatehouse"
    verbose_name = "Gatehouse platform"

    def ready(self) -> None:
        from auditlog.registry import auditlog
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from django_otp.plugins.otp_static.models import StaticDevice
        from django_otp.plugins.otp_totp.models import TOTPDevice
        from guardian.models import GroupObjectPermission, UserObjectPermission

        import gatehouse.celery  # noqa: F401  (the Celery app, so that tasks are sent to it)
        from gatehouse import extensions, signals
        from gatehouse.models import Alert, ApiKey
        from gatehouse.roles import Role
        from gatehouse.tlog import audit, witness
        from gatehouse.tlog import tree as tlog_tree

        signals.connect()
        audit.connect()
        witness.connect()
        # GET /health: "degraded" when no sequencer integrates the queued leaves in time.
        extensions.register_health_check(extensions.HealthCheck("decision_log", tlog_tree.health))

        # Every record of a human decision about access is audited; secrets never enter `changes`.
        auditlog.register(ApiKey, exclude_fields=["key_hash", "last_used_at"])
        auditlog.register(
            get_user_model(),
            include_fields=["username", "is_active", "is_staff", "is_superuser", "groups"],
            m2m_fields={"groups"},
        )
        auditlog.register(Group, m2m_fields={"permissions"})
        auditlog.register(UserObjectPermission)
        auditlog.register(GroupObjectPermission)
        auditlog.register(TOTPDevice, include_fields=["name", "confirmed", "user"])
        auditlog.register(StaticDevice, include_fields=["name", "confirmed", "user"])
        if not auditlog.contains(Alert):
            # Who acknowledged which alert, and when.
            auditlog.register(Alert, include_fields=["acknowledged_at", "acknowledged_by"])

        from django.conf import settings

        all_roles = frozenset(Role)
        docs_roles = (
            frozenset({Role.API_CONSUMER, Role.MODEL_OWNER, Role.ADMIN})
            if settings.API_DOCS_PUBLIC
            else frozenset({Role.ADMIN})  # staff only in production
        )
        for item in (
            extensions.NavItem("Home", "home", all_roles, order=0),
            extensions.NavItem(
                "API keys",
                "api_keys",
                all_roles,
                order=80,
                description="Create, list and revoke keys for the REST API.",
            ),
            extensions.NavItem(
                "API docs",
                "api:openapi-view",
                docs_roles,
                order=85,
                description="The OpenAPI reference of /api/v1/.",
            ),
            extensions.NavItem(
                "Audit trail",
                "audit_log",
                frozenset({Role.ADMIN, Role.COMPLIANCE_OFFICER}),
                order=90,
                description="Who changed what, and when.",
            ),
            extensions.NavItem(
                "Administration",
                "admin:index",
                frozenset({Role.ADMIN}),
                order=95,
                description="Users, roles and object permissions.",
            ),
        ):
            extensions.register_nav(item)
