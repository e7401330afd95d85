from __future__ import annotations

from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "apps.registry"
    label = "registry"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from apps.registry import demo, selectors
        from apps.registry.models import ModelFamily, ModelVersion, VersionTransition
        from gatehouse import extensions
        from gatehouse.roles import Role

        auditlog.register(ModelFamily)
        # Lineage digests and the (large) metrics stay out of audit `changes`.
        auditlog.register(
            ModelVersion, exclude_fields=["training_subjects", "metrics", "updated_at"]
        )
        auditlog.register(VersionTransition)
        extensions.register_family_choices(selectors.family_choices)
        extensions.register_demo_step(demo.create_demo_families)
        extensions.register_demo_step(demo.create_demo_models)
        extensions.register_nav(
            extensions.NavItem(
                "Models",
                "registry:family_list",
                frozenset(Role),
                order=10,
                description="The model families you may use, and what you may do with each.",
            )
        )
        extensions.register_nav(
            extensions.NavItem(
                "Approvals",
                "registry:approval_queue",
                frozenset({Role.APPROVER}),
                order=20,
                description="Validated model versions waiting for your approval or rejection.",
            )
        )
