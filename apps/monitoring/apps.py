from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "apps.monitoring"
    label = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from apps.inference import policy
        from apps.monitoring import alerts, metrics, signals  # noqa: F401  (signals: receivers)
        from apps.monitoring.models import MonitoringPolicy
        from apps.monitoring.views import DASHBOARD_ROLES, render_dashboard
        from gatehouse import extensions

        # Counting costs the predict path a dictionary update (see apps.monitoring.metrics).
        policy.register_recorded_hook(metrics.on_decisions_recorded)
        policy.register_failure_hook(metrics.on_failure)
        extensions.register_live_topic(
            extensions.LiveTopic("monitoring", render_dashboard, DASHBOARD_ROLES)
        )
        auditlog.register(MonitoringPolicy)
        alerts.connect()  # alerts raised anywhere are delivered (e-mail, webhook) and pushed
        extensions.register_nav(
            extensions.NavItem(
                "Monitoring",
                "monitoring:dashboard",
                DASHBOARD_ROLES,
                order=30,
                description="Live traffic, latency, errors, drift and alerts; kill-switch, "
                "rollback and canary without redeploying.",
            )
        )
