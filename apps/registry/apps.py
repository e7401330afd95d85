from __future__ import annotations

from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "apps.registry"
    label = "registry"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from apps.registry import demo, selectors
        from apps.registry.models import ModelFamily
        from gatehouse import extensions
        from gatehouse.roles import Role

        auditlog.register(ModelFamily)
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
