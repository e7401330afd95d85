"""Choosing the version that serves a request: production, sticky canary, jurisdiction rules."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from apps.inference.models import Route, RoutingConfig
from apps.registry.models import ModelFamily, ModelVersion, VersionStatus
from gatehouse.errors import PermissionDenied, ServiceUnavailable

SERVABLE = (VersionStatus.APPROVED, VersionStatus.STAGING, VersionStatus.PRODUCTION)


class FamilySuspended(ServiceUnavailable):
    code = "suspended"
    default_detail = "This model is suspended; no predictions are served."


@dataclass(frozen=True)
class Choice:
    version: ModelVersion
    route: str


def routing_for(family: ModelFamily) -> RoutingConfig:
    """The family's routing; the defaults (unsaved) until someone changes them, so that the
    audit trail shows who set a routing, not who happened to predict first."""
    config = (
        RoutingConfig.objects.select_related("canary_version", "shadow_version")
        .filter(family=family)
        .first()
    )
    return config or RoutingConfig(family=family)


def bucket(family: ModelFamily, sticky_key: str) -> int:
    """A stable number 0-99 for a subject (or request): the same subject keeps its arm."""
    digest = hashlib.sha256(f"{family.slug}:{sticky_key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100


def ensure_serving(family: ModelFamily, config: RoutingConfig) -> None:
    if config.suspended:
        raise FamilySuspended(
            f"'{family.slug}' is suspended"
            + (f": {config.suspended_reason}" if config.suspended_reason else "."),
            retry_after=30,
        )


def choose(
    *, family: ModelFamily, config: RoutingConfig, sticky_key: str, jurisdiction: str
) -> Choice:
    """The serving version; only approved (approved/staging/production) versions qualify."""
    ensure_serving(family, config)
    production = ModelVersion.objects.filter(family=family, status=VersionStatus.PRODUCTION).first()
    candidates: list[Choice] = []
    canary = config.canary_version
    if (
        canary is not None
        and canary.status in SERVABLE
        and config.canary_percent > 0
        and bucket(family, sticky_key) < config.canary_percent
    ):
        candidates.append(Choice(canary, Route.CANARY))
    if production is not None:
        candidates.append(Choice(production, Route.PRODUCTION))
    if not candidates:
        raise ServiceUnavailable(
            f"'{family.slug}' has no version in production.",
            code="no_production_version",
            retry_after=60,
        )
    allowed = (config.jurisdiction_rules or {}).get(jurisdiction) if jurisdiction else None
    if allowed is None:
        return candidates[0]
    for choice in candidates:
        if choice.version.version in allowed:
            return choice if choice is candidates[0] else Choice(choice.version, Route.POLICY)
    raise PermissionDenied(
        f"No version of '{family.slug}' is approved for jurisdiction {jurisdiction}.",
        code="jurisdiction_not_served",
    )
