"""Periodic and background work of the platform."""

from __future__ import annotations

from celery import shared_task

from gatehouse import services


@shared_task(name="gatehouse.tasks.warn_expiring_api_keys")
def warn_expiring_api_keys(within_days: int = 7) -> int:
    return services.apikeys_warn_expiring(within_days=within_days)
