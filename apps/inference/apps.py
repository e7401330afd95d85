from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "apps.inference"
    label = "inference"
    verbose_name = "Inference"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from apps.inference.models import Outcome, RoutingConfig
        from gatehouse import extensions
        from gatehouse.roles import Role

        # Routing changes (kill-switch, canary, shadow) are human decisions: audited.
        auditlog.register(RoutingConfig)
        auditlog.register(Outcome)
        extensions.register_nav(
            extensions.NavItem(
                "Predict",
                "inference:predict_home",
                frozenset({Role.BUSINESS_USER, Role.ADMIN}),
                order=5,
                description="Request a prediction from a model in production and see your "
                "recent decisions.",
            )
        )
        extensions.register_nav(
            extensions.NavItem(
                "Serving",
                "serving:serving_list",
                frozenset({Role.MODEL_OWNER, Role.ADMIN}),
                order=15,
                description="Kill-switch, canary, shadow and output of the families you manage.",
            )
        )
