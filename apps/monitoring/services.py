"""Incident controls: kill-switch, rollback and canary share, each effective on the next request
(no restart), audited (routing and version transitions are), and shown as an event."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from apps.inference import services as inference_services
from apps.inference.routing import routing_for
from apps.monitoring.models import IncidentEvent
from apps.monitoring.selectors import rollback_target
from apps.registry import services as registry_services
from apps.registry.models import ModelFamily, VersionStatus
from apps.registry.permissions import FamilyAction
from gatehouse.errors import Conflict, PermissionDenied, ValidationFailed
from gatehouse.live import publish_topic
from gatehouse.otp import is_verified
from gatehouse.roles import Role, has_role

logger = logging.getLogger(__name__)


def _require_operator(user: Any, family: ModelFamily) -> None:
    """Managers of the family (or admins), in a session verified with 2FA."""
    if not (has_role(user, Role.ADMIN) or user.has_perm(FamilyAction.MANAGE.perm, family)):
        raise PermissionDenied(f"You may not operate '{family.slug}'.")
    if not is_verified(user):
        raise PermissionDenied(
            "Incident controls need a session verified with 2FA.", code="otp_required"
        )


def _routing_data(family: ModelFamily, **changes: Any) -> dict[str, Any]:
    config = routing_for(family)
    data: dict[str, Any] = {
        "canary_version": config.canary_version.version if config.canary_version else None,
        "shadow_version": config.shadow_version.version if config.shadow_version else None,
    }
    data.update(changes)
    return data


def _event(family: ModelFamily, user: Any, kind: str, detail: str) -> IncidentEvent:
    event = IncidentEvent.objects.create(family=family, kind=kind, detail=detail[:300], actor=user)
    transaction.on_commit(lambda: publish_topic("monitoring"))
    return event


@transaction.atomic
def kill_switch(
    *, family: ModelFamily, user: Any, suspend: bool, reason: str = ""
) -> IncidentEvent:
    """Suspend (503 from the next request on) or resume a family."""
    _require_operator(user, family)
    if suspend and not reason.strip():
        raise ValidationFailed.for_field("reason", "Say why the model is suspended.")
    inference_services.routing_update(
        family=family,
        user=user,
        data=_routing_data(
            family, suspended=suspend, suspended_reason=reason.strip()[:300] if suspend else ""
        ),
    )
    what = f"suspended: {reason.strip()}" if suspend else "resumed"
    logger.warning(
        "kill-switch: %s %s by user %s", family.slug, "on" if suspend else "off", user.pk
    )
    return _event(family, user, "kill_switch" if suspend else "resumed", f"{family.slug} {what}")


@transaction.atomic
def rollback(*, family: ModelFamily, user: Any) -> IncidentEvent:
    """Deploy the previous production version again (one click); the current one steps back
    to approved."""
    _require_operator(user, family)
    label = rollback_target(family)
    if label is None:
        raise Conflict(
            "There is no earlier approved production version to roll back to.", code="no_rollback"
        )
    version = family.versions.get(version=label)
    current = family.versions.filter(status=VersionStatus.PRODUCTION).first()
    registry_services.version_deploy(
        version=version,
        user=user,
        target=VersionStatus.PRODUCTION,
        reason="rollback from the dashboard",
    )
    before = f"v{current.version}" if current else "none"
    return _event(family, user, "rollback", f"{family.slug}: {before} -> v{label}")


@transaction.atomic
def canary_set(*, family: ModelFamily, user: Any, percent: int) -> IncidentEvent:
    _require_operator(user, family)
    if not 0 <= percent <= 100:
        raise ValidationFailed.for_field("canary_percent", "must be between 0 and 100")
    config = routing_for(family)
    if percent and config.canary_version is None:
        raise ValidationFailed.for_field("canary_percent", "the family has no canary version")
    inference_services.routing_update(
        family=family, user=user, data=_routing_data(family, canary_percent=percent)
    )
    label = config.canary_version.version if config.canary_version else "-"
    return _event(family, user, "canary", f"{family.slug}: canary v{label} at {percent} %")
