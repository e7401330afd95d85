"""Background work of the registry."""

from __future__ import annotations

from celery import shared_task

from apps.registry import services


@shared_task(
    name="registry.package_version",
    acks_late=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=3,
)
def package_version(version_id: int) -> str:
    """Package an approved version as a TorchServe archive."""
    return services.version_package(version_id=version_id).mar_sha256
