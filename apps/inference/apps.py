from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "apps.inference"
    label = "inference"
    verbose_name = "Inference"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from apps.inference import records
        from apps.inference.models import Outcome, RoutingConfig
        from gatehouse import extensions
        from gatehouse.roles import Role

        records.register_kind()

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
        # GET /health reports the backend (not required: a TorchServe outage answers 503 on
        # predictions, but must not take the pages, the kill-switch and the audit trail away).
        extensions.register_health_check(
            extensions.HealthCheck("inference", _backend_status, required=False)
        )


def _backend_status() -> str:
    from apps.inference.backends import get_backend

    return str(get_backend().health()["status"])
