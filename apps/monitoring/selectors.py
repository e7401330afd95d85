"""Reads of monitoring: the dashboard's numbers per family, from the per-minute roll-ups."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.utils import timezone

from apps.inference.models import Route
from apps.inference.routing import routing_for
from apps.monitoring.alerts import percentile_from_buckets as percentile
from apps.monitoring.models import (
    LATENCY_BUCKETS_MS,
    SCORE_BINS,
    IncidentEvent,
    MetricMinute,
)
from apps.registry import selectors as registry_selectors
from apps.registry.models import ModelFamily, ModelVersion, VersionStatus
from apps.registry.permissions import FamilyAction
from gatehouse.roles import Role, has_role

WINDOW_MIN = 15  # minutes of history on the dashboard
RATE_MIN = 5  # minutes over which rates and percentiles are computed
ROUTES = (Route.PRODUCTION, Route.CANARY, Route.SHADOW)


@dataclass
class FamilyStats:
    family: ModelFamily
    production: ModelVersion | None = None
    suspended: bool = False
    canary: str = ""
    canary_percent: int = 0
    shadow: str = ""
    requests_per_s: float = 0.0
    requests_last_min: int = 0
    error_rate: float | None = None
    errors: int = 0
    refusals: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    split: dict[str, int] = field(default_factory=dict)
    score_bins: list[int] = field(default_factory=lambda: [0] * SCORE_BINS)
    series: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    rollback_to: str = ""
    drift: Any = None
    open_reviews: int = 0
    may_manage: bool = False


def visible_families(user: Any) -> list[ModelFamily]:
    return list(registry_selectors.family_list(user=user, action=FamilyAction.VIEW))


def family_stats(
    families: Iterable[ModelFamily], *, user: Any = None, now: Any = None
) -> list[FamilyStats]:
    """The dashboard's numbers for each family, from one read of the last 15 minutes."""
    now = (now or timezone.now()).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=WINDOW_MIN - 1)
    rate_start = now - timedelta(minutes=RATE_MIN - 1)
    families = list(families)
    by_family: dict[int, FamilyStats] = {f.pk: FamilyStats(family=f) for f in families}
    minutes = [start + timedelta(minutes=i) for i in range(WINDOW_MIN)]
    for stats in by_family.values():
        stats.series = [0] * WINDOW_MIN
        stats.labels = [m.strftime("%H:%M") for m in minutes]
        stats.split = {str(r): 0 for r in ROUTES}
    rate_buckets: dict[int, list[int]] = {
        pk: [0] * (len(LATENCY_BUCKETS_MS) + 1) for pk in by_family
    }
    rate_requests: dict[int, int] = dict.fromkeys(by_family, 0)
    for row in MetricMinute.objects.filter(family_id__in=by_family, minute__gte=start):
        stats = by_family[row.family_id]
        index = int((row.minute - start).total_seconds() // 60)
        if row.route != Route.SHADOW and 0 <= index < WINDOW_MIN:
            stats.series[index] += row.requests
        if row.route:
            stats.split[row.route] = stats.split.get(row.route, 0) + row.requests
        stats.refusals += row.refusals
        if row.route != Route.SHADOW:
            stats.score_bins = [
                a + b
                for a, b in zip(stats.score_bins, row.score_bins or [0] * SCORE_BINS, strict=True)
            ]
        if row.minute >= rate_start and row.route != Route.SHADOW:
            rate_requests[row.family_id] += row.requests
            stats.errors += row.errors
            if row.latency_buckets:
                rate_buckets[row.family_id] = [
                    a + b
                    for a, b in zip(rate_buckets[row.family_id], row.latency_buckets, strict=True)
                ]
        if row.minute == now and row.route != Route.SHADOW:
            stats.requests_last_min += row.requests
    for pk, stats in by_family.items():
        requests = rate_requests[pk]
        elapsed_s = (RATE_MIN - 1) * 60 + max(1, timezone.now().second)
        stats.requests_per_s = round(requests / elapsed_s, 2)
        stats.error_rate = round(stats.errors / requests, 4) if requests else None
        buckets = rate_buckets[pk]
        stats.p50, stats.p95, stats.p99 = (percentile(buckets, q) for q in (0.5, 0.95, 0.99))
        _serving(stats, user)
    return [by_family[f.pk] for f in families]


def _serving(stats: FamilyStats, user: Any) -> None:
    family = stats.family
    config = routing_for(family)
    stats.suspended = config.suspended
    stats.canary = config.canary_version.version if config.canary_version else ""
    stats.canary_percent = config.canary_percent
    stats.shadow = config.shadow_version.version if config.shadow_version else ""
    stats.production = registry_selectors.production_version(family=family)
    stats.rollback_to = rollback_target(family) or ""
    if user is not None:
        stats.may_manage = has_role(user, Role.ADMIN) or user.has_perm(
            FamilyAction.MANAGE.perm, family
        )


def rollback_target(family: ModelFamily) -> str | None:
    """The version that was in production before the current one and can serve again."""
    current = registry_selectors.production_version(family=family)
    history = registry_selectors.production_history(family=family)
    for label, _since, _until in reversed(history):
        if current is not None and label == current.version:
            continue
        version = family.versions.filter(version=label).first()
        if (
            version is not None
            and version.status in (VersionStatus.APPROVED, VersionStatus.STAGING)
            and not version.retrain_required
        ):
            return label
    return None


def totals(families: Iterable[ModelFamily]) -> list[dict[str, Any]]:
    """All-time totals per family, version and route (what ``/metrics`` exposes)."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    rows = MetricMinute.objects.filter(family__in=list(families)).select_related(
        "family", "version"
    )
    for row in rows:
        key = (row.family.slug, row.version.version if row.version else "", row.route)
        entry = out.setdefault(
            key,
            {
                "family": key[0],
                "version": key[1],
                "route": key[2],
                "requests": 0,
                "errors": 0,
                "refusals": 0,
                "rows": 0,
                "latency_sum_ms": 0.0,
                "latency_buckets": [0] * (len(LATENCY_BUCKETS_MS) + 1),
            },
        )
        for name in ("requests", "errors", "refusals", "rows", "latency_sum_ms"):
            entry[name] += getattr(row, name)
        if row.latency_buckets:
            entry["latency_buckets"] = [
                a + b for a, b in zip(entry["latency_buckets"], row.latency_buckets, strict=True)
            ]
    return list(out.values())


def events(families: Iterable[ModelFamily], limit: int = 15) -> list[IncidentEvent]:
    ids = [f.pk for f in families]
    return list(
        IncidentEvent.objects.filter(family_id__in=ids).select_related("family", "actor")[:limit]
    )
