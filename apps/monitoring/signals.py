"""Signal receivers of monitoring (connected in ``MonitoringConfig.ready``)."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from apps.registry.models import ModelVersion

logger = logging.getLogger(__name__)


def build_drift_reference(version_id: int) -> None:
    """Take the drift reference of a newly registered version; a failure is logged, never
    raised (the registration has committed; the reference is taken lazily at the first check)."""
    from apps.monitoring import drift

    try:
        version = ModelVersion.objects.select_related("family").get(pk=version_id)
        drift.build_reference(version)
    except Exception:
        logger.exception("drift reference of model version %s could not be built", version_id)


@receiver(post_save, sender=ModelVersion, dispatch_uid="monitoring.drift_reference")
def version_registered(
    sender: type[ModelVersion], instance: ModelVersion, created: bool, raw: bool, **kwargs: Any
) -> None:
    """A new version's drift reference is built once its registration commits (a registration
    that rolls back builds nothing)."""
    if not created or raw or not instance.validation_sha256:
        return
    transaction.on_commit(partial(build_drift_reference, instance.pk))
