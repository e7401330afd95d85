"""Background work of monitoring: drift checks, alert rules, alert delivery."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="monitoring.drift_check")
def drift_check() -> int:
    """Compare recent live inputs of every serving version with its reference."""
    from apps.monitoring import drift

    return len(drift.check_all())


@shared_task(name="monitoring.evaluate_alert_rules")
def evaluate_alert_rules() -> int:
    """Error-rate spikes, latency SLO breaches, authentication failures, grid sweeps."""
    from apps.monitoring import alerts

    return len(alerts.evaluate_rules())


@shared_task(
    name="monitoring.deliver_alert",
    acks_late=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=5,
)
def deliver_alert(alert_id: int) -> dict[str, Any]:
    """Send one alert to the configured channels (e-mail, signed webhook)."""
    from apps.monitoring import alerts

    return alerts.deliver(alert_id)
