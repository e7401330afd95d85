"""Choosing the version that serves a request: production, sticky canary, jurisdiction rules."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from apps.inference.models import Route, RoutingConfig
from apps.registry.models import ModelFamily, ModelVersion, VersionStatus
from gatehouse.errors import PermissionDenied, ServiceUnavailable
from gatehouse.freshness import Fingerprint, FreshMemo, fingerprint

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


@dataclass(frozen=True)
class Serving:
    """What the predict path needs to route a request: the routing and the production version.

    Shared between the requests of a process (see ``serving``): read it, never change it.
    """

    config: RoutingConfig
    production: ModelVersion | None


_serving: FreshMemo[Serving] = FreshMemo()


def _serving_rows(family_id: int) -> Fingerprint:
    # Every column of the routing row, and the identity of every servable version: any change
    # to either (kill-switch, canary, a promotion or retirement) gives another fingerprint.
    routing_table = RoutingConfig._meta.db_table
    version_table = ModelVersion._meta.db_table
    return fingerprint(
        f"SELECT * FROM {routing_table} WHERE family_id = %s",  # noqa: S608 (table names)
        [family_id],
    ) + fingerprint(
        f"SELECT id, status, updated_at, artifact_sha256 FROM {version_table} "  # noqa: S608
        "WHERE family_id = %s AND status IN (%s, %s, %s) ORDER BY id",
        [family_id, *SERVABLE],
    )


def serving(family: ModelFamily) -> Serving:
    """The family's routing and production version for serving a request.

    Built through the ORM once per process and reused while the rows it comes from are
    unchanged: two raw, indexed reads per request instead of two ORM queries with joins. The
    rows are read on every call, so the kill-switch and promotions apply at once, everywhere.
    """

    def build() -> Serving:
        production = (
            ModelVersion.objects.filter(family=family, status=VersionStatus.PRODUCTION)
            .order_by("pk")
            .first()
        )
        return Serving(routing_for(family), production)

    return _serving.get(family.pk, lambda: _serving_rows(family.pk), build)


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
    return choose_among(
        family=family,
        config=config,
        production=production,
        sticky_key=sticky_key,
        jurisdiction=jurisdiction,
    )


def choose_among(
    *,
    family: ModelFamily,
    config: RoutingConfig,
    production: ModelVersion | None,
    sticky_key: str,
    jurisdiction: str,
) -> Choice:
    """``choose`` with the production version already read (``serving``)."""
    ensure_serving(family, config)
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
