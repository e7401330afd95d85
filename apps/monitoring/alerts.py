"""Alert rules (error-rate spike, latency SLO, model-extraction sweep), delivery of alerts to
e-mail and a signed webhook, the live push of new alerts, and their acknowledgement.

Alerts themselves are ``gatehouse.models.Alert``, raised through ``gatehouse.services``; drift,
bias and erasure-deadline alerts and the authentication-failure counter are raised elsewhere.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from auditlog.context import auditlog_value, set_actor
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from apps.inference.models import Decision, Route
from apps.monitoring import tasks
from apps.monitoring.models import (
    LATENCY_BUCKETS_MS,
    IncidentEvent,
    MetricMinute,
    MonitoringPolicy,
)
from apps.registry.models import ModelFamily
from apps.registry.selectors import family_list
from gatehouse import extensions, live
from gatehouse.errors import Conflict, NotFound, OTPRequired
from gatehouse.models import Alert, ApiKey, Notification
from gatehouse.otp import is_verified
from gatehouse.roles import Role, has_role
from gatehouse.services import alert_raise_once, notification_create
from gatehouse.webhooks import SIGNATURE_HEADER, WEBHOOK_TIMEOUT_S, sign

logger = logging.getLogger(__name__)

# Who sees and acknowledges alerts.
ALERT_ROLES: frozenset[Role] = frozenset({Role.ADMIN, Role.MODEL_OWNER, Role.COMPLIANCE_OFFICER})

# Traffic rules judge the per-minute rows of the last WINDOW_MINUTES (the current minute too).
WINDOW_MINUTES = 5
# Extraction sweeps: the recent decisions of each API key.
SWEEP_WINDOW = timedelta(minutes=10)
SWEEP_MIN_DECISIONS = 50
SWEEP_MAX_DECISIONS = 500
SWEEP_ONE_FEATURE_SHARE = 0.8
GRID_MIN_VALUES = 3
GRID_MAX_VALUES = 10
GRID_MIN_DISTINCT_ROWS = 0.8

_SENT_TTL_S = 24 * 3600


class DeliveryFailed(OSError):
    """A channel could not take the alert; an OSError so that the delivery task retries."""


# --- Helpers -------------------------------------------------------------------------------


def percentile_from_buckets(
    buckets: Sequence[float], q: float, bounds: Sequence[float] = LATENCY_BUCKETS_MS
) -> float | None:
    """The ``q`` quantile (0 < q <= 1) of a histogram, as the upper bound of its bucket.

    ``buckets`` holds one count per bound of ``bounds`` and a last one for +Inf, not
    cumulative. The result is the upper bound of the first bucket at which the cumulative count
    reaches the nearest rank ``ceil(q * total)``: an upper estimate of the true quantile, never
    below it, accurate to one bucket. ``math.inf`` when that is the +Inf bucket; None for an
    empty histogram.
    """
    if not 0 < q <= 1:
        raise ValueError("q must be in (0, 1].")
    total = sum(buckets)
    if total <= 0:
        return None
    rank = max(1.0, math.ceil(q * total - 1e-9))
    cumulative = 0.0
    for i, count in enumerate(buckets):
        cumulative += count
        if cumulative >= rank:
            return float(bounds[i]) if i < len(bounds) else math.inf
    return math.inf


def _add_buckets(into: list[float], buckets: Sequence[float]) -> None:
    if len(into) < len(buckets):
        into.extend([0] * (len(buckets) - len(into)))
    for i, count in enumerate(buckets):
        into[i] += count


def _policy_for(families: Sequence[int]) -> dict[int, MonitoringPolicy]:
    found = {p.family_id: p for p in MonitoringPolicy.objects.filter(family_id__in=families)}
    return {f: found.get(f) or MonitoringPolicy(family_id=f) for f in families}


# --- Rules ---------------------------------------------------------------------------------


@dataclass
class _Traffic:
    slug: str
    requests: int = 0
    errors: int = 0
    buckets: list[float] = field(default_factory=list)


def _traffic(now: datetime) -> dict[int, _Traffic]:
    """Requests, errors and the latency histogram per family over the window (shadow traffic
    left out: nobody waits for it)."""
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=WINDOW_MINUTES - 1)
    rows = (
        MetricMinute.objects.filter(minute__gte=start, minute__lte=now)
        .exclude(route=Route.SHADOW)
        .values_list("family_id", "family__slug", "requests", "errors", "latency_buckets")
    )
    out: dict[int, _Traffic] = {}
    for family_id, slug, requests, errors, buckets in rows:
        traffic = out.setdefault(family_id, _Traffic(slug=slug))
        traffic.requests += requests
        traffic.errors += errors
        _add_buckets(traffic.buckets, buckets or [])
    return out


def error_rate_alerts(*, now: datetime | None = None) -> list[Alert]:
    """Per family: errors / requests over the window above the policy's ``error_rate_max``,
    with at least ``min_requests`` requests."""
    now = now or timezone.now()
    traffic = _traffic(now)
    policies = _policy_for(list(traffic))
    raised = []
    for family_id, t in traffic.items():
        policy = policies[family_id]
        if t.requests < max(1, policy.min_requests):
            continue
        rate = t.errors / t.requests
        if rate <= policy.error_rate_max:
            continue
        alert = alert_raise_once(
            kind="error_rate",
            severity="critical",
            title=f"{t.slug}: error rate {rate:.1%} over the last {WINDOW_MINUTES} minutes",
            detail=f"{t.errors} errors in {t.requests} requests; the policy allows "
            f"{policy.error_rate_max:.1%}.",
            subject=f"family:{t.slug}",
            family=t.slug,
        )
        if alert is not None:
            raised.append(alert)
    return raised


def latency_alerts(*, now: datetime | None = None) -> list[Alert]:
    """Per family: p95 of the latency histogram over the window above the policy's
    ``latency_p95_slo_ms``, with at least ``min_requests`` timed requests."""
    now = now or timezone.now()
    traffic = _traffic(now)
    policies = _policy_for(list(traffic))
    raised = []
    for family_id, t in traffic.items():
        policy = policies[family_id]
        if sum(t.buckets) < max(1, policy.min_requests):
            continue
        p95 = percentile_from_buckets(t.buckets, 0.95)
        if p95 is None or p95 <= policy.latency_p95_slo_ms:
            continue
        shown = f"> {LATENCY_BUCKETS_MS[-1]:g}" if math.isinf(p95) else f"<= {p95:g}"
        alert = alert_raise_once(
            kind="latency_slo",
            severity="warning",
            title=f"{t.slug}: p95 latency {shown} ms over the last {WINDOW_MINUTES} minutes",
            detail=f"The SLO is p95 <= {policy.latency_p95_slo_ms:g} ms "
            f"({int(sum(t.buckets))} requests; p95 read from histogram buckets).",
            subject=f"family:{t.slug}",
            family=t.slug,
        )
        if alert is not None:
            raised.append(alert)
    return raised


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _regular_step(values: Sequence[float]) -> bool:
    """Whether sorted distinct ``values`` are equally spaced."""
    steps = [b - a for a, b in itertools.pairwise(values)]
    first = steps[0]
    return first > 0 and all(abs(s - first) <= 1e-6 * max(1.0, abs(first)) for s in steps)


def sweep_pattern(inputs: Sequence[Any]) -> tuple[str, str] | None:
    """The grid pattern in one key's consecutive inputs (oldest first), as (name, evidence), or
    None. Two heuristics, either is enough:

    - ``one_feature_at_a_time``: at least 80 % of consecutive pairs with the same features
      differ in exactly one feature (a sweep varies one input while holding the rest; real
      applicants differ in several features at once, identical retries in none);
    - ``regular_grid``: every numeric feature that varies takes 3 to 10 distinct values, all on
      one regular step, and at least 80 % of the rows are distinct (a lattice of probe points;
      real data has many irregular values in at least one numeric feature, and a client
      re-scoring the same few rows has few distinct rows).
    """
    rows = [r for r in inputs if isinstance(r, dict)]
    if len(rows) < 2:
        return None
    pairs = one = 0
    for a, b in itertools.pairwise(rows):
        if a.keys() != b.keys():
            continue
        pairs += 1
        one += sum(1 for k in a if a[k] != b[k]) == 1
    if pairs and one / pairs >= SWEEP_ONE_FEATURE_SHARE:
        return "one_feature_at_a_time", f"{one / pairs:.0%} of {pairs} consecutive pairs"

    features = set().union(*(r.keys() for r in rows))
    varying = 0
    for name in sorted(features):
        values = [r.get(name) for r in rows]
        if not all(_is_number(v) for v in values):
            continue
        distinct = sorted({float(v) for v in values if v is not None})
        if len(distinct) < 2:
            continue
        if not (GRID_MIN_VALUES <= len(distinct) <= GRID_MAX_VALUES and _regular_step(distinct)):
            return None
        varying += 1
    distinct_rows = len({json.dumps(r, sort_keys=True, default=str) for r in rows})
    if varying and distinct_rows >= GRID_MIN_DISTINCT_ROWS * len(rows):
        return "regular_grid", f"{varying} numeric features on regular steps"
    return None


def sweep_alerts(*, now: datetime | None = None) -> list[Alert]:
    """Per API key with at least SWEEP_MIN_DECISIONS decisions in the last SWEEP_WINDOW: a
    grid-like pattern in its inputs (``sweep_pattern``) raises ``extraction_sweep``."""
    now = now or timezone.now()
    recent = (
        Decision.objects.filter(
            created_at__gte=now - SWEEP_WINDOW,
            created_at__lte=now,
            api_key__isnull=False,
            inputs__isnull=False,
        ).exclude(route=Route.SHADOW)  # a shadow decision repeats a served one's inputs
    )
    busy = list(
        recent.values("api_key_id")
        .annotate(n=Count("id"))
        .filter(n__gte=SWEEP_MIN_DECISIONS)
        .values_list("api_key_id", "n")
    )
    if not busy:
        return []
    prefixes = dict(ApiKey.objects.filter(pk__in=[k for k, _ in busy]).values_list("pk", "prefix"))
    raised = []
    for key_id, n in busy:
        latest = recent.filter(api_key_id=key_id).order_by("-created_at")[:SWEEP_MAX_DECISIONS]
        inputs = list(latest.values_list("inputs", flat=True))[::-1]
        found = sweep_pattern(inputs)
        if found is None:
            continue
        pattern, evidence = found
        prefix = prefixes.get(key_id, f"#{key_id}")
        alert = alert_raise_once(
            kind="extraction_sweep",
            severity="critical",
            title=f"API key {prefix}… sends grid-like inputs (possible model extraction)",
            detail=f"Pattern {pattern}: {evidence}, over {n} decisions in the last "
            f"{int(SWEEP_WINDOW.total_seconds() // 60)} minutes. Consider revoking the key or "
            "answering it with labels only.",
            subject=f"key:{prefix}",
        )
        if alert is not None:
            raised.append(alert)
    return raised


def evaluate_rules(*, now: datetime | None = None) -> list[Alert]:
    """Every periodic rule once (the beat task ``monitoring.evaluate_alert_rules``); returns
    the alerts raised now (an open alert of the same kind and subject is not raised again)."""
    now = now or timezone.now()
    return [*error_rate_alerts(now=now), *latency_alerts(now=now), *sweep_alerts(now=now)]


# --- Selectors -----------------------------------------------------------------------------


def can_see_alerts(user: Any) -> bool:
    return bool(getattr(user, "is_active", False)) and has_role(user, *ALERT_ROLES)


def sees_every_alert(user: Any) -> bool:
    """Administrators and compliance officers see every alert, platform alerts included;
    model owners see only the alerts of families they may view."""
    return can_see_alerts(user) and has_role(user, Role.ADMIN, Role.COMPLIANCE_OFFICER)


def _scoped(alerts: QuerySet[Alert], user: Any) -> QuerySet[Alert]:
    if not can_see_alerts(user):
        return alerts.none()
    if sees_every_alert(user):
        return alerts
    return alerts.filter(family__in=family_list(user=user).values("slug"))


def alert_visible_to(user: Any, alert: Alert) -> bool:
    """``_scoped``'s rule for one alert already loaded."""
    if not can_see_alerts(user):
        return False
    if sees_every_alert(user):
        return True
    return bool(alert.family) and family_list(user=user).filter(slug=alert.family).exists()


def alerts_visible(*, user: Any, active_only: bool = True) -> QuerySet[Alert]:
    """Alerts ``user`` may see, newest first: unacknowledged only unless ``active_only`` is
    False; none for users outside ALERT_ROLES; for model owners only those of the families
    they may view."""
    alerts = _scoped(Alert.objects.select_related("acknowledged_by"), user).order_by("-created_at")
    return alerts.filter(acknowledged_at__isnull=True) if active_only else alerts


def alerts_recently_acknowledged(*, user: Any, days: int = 7) -> QuerySet[Alert]:
    since = timezone.now() - timedelta(days=days)
    return (
        alerts_visible(user=user, active_only=False)
        .filter(acknowledged_at__gte=since)
        .order_by("-acknowledged_at")
    )


# --- Acknowledgement -----------------------------------------------------------------------


def _save_as(instance: Any, user: Any, fields: list[str]) -> None:
    """Save with ``user`` as the audit entry's actor, in a request (where the middleware's
    context is restored afterwards, with its remote address kept) or outside one."""
    previous = auditlog_value.get(None)
    extra = {}
    if isinstance(previous, dict):
        extra = {k: previous.get(k) for k in ("remote_addr", "remote_port")}
    try:
        with set_actor(user, **extra):
            instance.save(update_fields=fields)
    finally:
        if previous is not None:
            auditlog_value.set(previous)


def alert_acknowledge(*, alert_id: int, user: Any) -> Alert:
    """Mark an alert as seen by ``user`` (audited; an incident event on the dashboard).

    Only those who may see it (others get not found) in a session verified with a second
    factor; Conflict if someone acknowledged it already.
    """
    if not can_see_alerts(user):
        raise NotFound("No such alert.")
    if not is_verified(user):
        raise OTPRequired()
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(pk=alert_id).first()
        if alert is None or not alert_visible_to(user, alert):
            raise NotFound("No such alert.")
        if alert.acknowledged_at is not None:
            raise Conflict("This alert was acknowledged already.", code="already_acknowledged")
        alert.acknowledged_at = timezone.now()
        alert.acknowledged_by = user
        _save_as(alert, user, ["acknowledged_at", "acknowledged_by"])
        family = None
        if alert.family:
            family = ModelFamily.objects.filter(slug=alert.family).first()
        IncidentEvent.objects.create(
            family=family,
            kind="alert_acknowledged",
            detail=f"[{alert.severity}] {alert.title}"[:300],
            actor=user,
        )
    return alert


# --- Delivery ------------------------------------------------------------------------------


def alert_payload(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "severity": alert.severity,
        "title": alert.title,
        "detail": alert.detail,
        "subject": alert.subject,
        "created_at": alert.created_at.isoformat(),
    }


def _sent_key(alert: Alert, channel: str) -> str:
    """The alert's id and creation time: a database restored or recreated beside a cache that
    remembers an old alert of the same id must not silence the new one."""
    return f"gh:alert-sent:{alert.pk}:{alert.created_at.timestamp():.6f}:{channel}"


def deliver(alert_id: int) -> dict[str, Any]:
    """Send one alert to the configured channels; returns what was sent, e.g.
    ``{"email": 2, "webhook": 200}`` (empty when no channel is configured).

    E-mail goes to ALERT_EMAILS; the webhook gets the JSON of ``alert_payload`` signed with
    ALERT_WEBHOOK_SECRET. A channel that succeeded is remembered for a day, so a retry after a
    failure of the other channel does not send it twice. A failure raises an OSError
    (``DeliveryFailed``, or the SMTP error), which makes the task retry.
    """
    alert = Alert.objects.filter(pk=alert_id).first()
    if alert is None:
        return {}
    sent: dict[str, Any] = {}
    recipients = list(settings.ALERT_EMAILS)
    if recipients and not cache.get(_sent_key(alert, "email")):
        # Alert texts carry no personal data (rules name families and key prefixes only).
        body = "\n".join(
            [
                alert.title,
                "",
                f"Severity: {alert.severity}",
                f"Kind: {alert.kind}",
                f"Subject: {alert.subject or '-'}",
                f"Raised: {alert.created_at:%Y-%m-%d %H:%M:%S %Z}",
                "",
                alert.detail,
                "",
                f"Alert #{alert.pk}: acknowledge it on the Alerts page of Gatehouse.",
            ]
        )
        send_mail(
            subject=f"[Gatehouse {alert.severity}] {alert.title}",
            message=body,
            from_email=None,
            recipient_list=recipients,
            fail_silently=False,
        )
        cache.set(_sent_key(alert, "email"), 1, timeout=_SENT_TTL_S)
        sent["email"] = len(recipients)
    url = settings.ALERT_WEBHOOK_URL
    if url and not cache.get(_sent_key(alert, "webhook")):
        secret = settings.ALERT_WEBHOOK_SECRET
        if not secret:
            logger.error("alert webhook not sent: ALERT_WEBHOOK_SECRET is empty (unsigned body)")
            return sent
        body_bytes = json.dumps(alert_payload(alert), sort_keys=True).encode("utf-8")
        try:
            response = httpx.post(
                url,
                content=body_bytes,
                headers={
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: sign(body_bytes, secret),
                },
                timeout=WEBHOOK_TIMEOUT_S,
            )
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"alert webhook failed: {type(exc).__name__}") from exc
        if not response.is_success:
            raise DeliveryFailed(f"alert webhook answered {response.status_code}")
        cache.set(_sent_key(alert, "webhook"), 1, timeout=_SENT_TTL_S)
        sent["webhook"] = response.status_code
    return sent


# --- Listener: delivery and live push ------------------------------------------------------


def _alert_viewers(alert: Alert) -> list[Any]:
    candidates = (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(Q(is_superuser=True) | Q(groups__name__in=[r.value for r in ALERT_ROLES]))
        .distinct()
    )
    return [user for user in candidates if alert_visible_to(user, alert)]


def _alerts_url() -> str:
    try:
        return reverse("monitoring:alerts")
    except NoReverseMatch:
        return ""


def on_alert_raised(alert: Alert) -> None:
    """After an alert commits: enqueue its delivery (when a channel is configured), notify the
    users who may see alerts, and insert it into open alert lists."""
    if settings.ALERT_EMAILS or settings.ALERT_WEBHOOK_URL:
        try:
            tasks.deliver_alert.delay(alert.pk)
        except Exception:
            logger.exception("alert %s: delivery could not be enqueued", alert.pk)
    levels: dict[str, str] = {
        Alert.Severity.CRITICAL: Notification.Level.ERROR,
        Alert.Severity.WARNING: Notification.Level.WARNING,
    }
    level = levels.get(alert.severity, Notification.Level.INFO)
    link = _alerts_url()
    row = ""
    if link:  # the row's acknowledge button needs the URLs
        row = render_to_string(
            "monitoring/partials/alert_list.html#live_row", {"alert": alert, "oob": True}
        )
    for user in _alert_viewers(alert):
        notification_create(
            user=user,
            text=f"Alert ({alert.severity}): {alert.title}"[:500],
            link=link,
            level=level,
            dedupe_key=f"alert:{alert.pk}",
        )
        if row:
            live.push_html(user.pk, row, event="alert")


def connect() -> None:
    """Register the alert listener (called from ``MonitoringConfig.ready``)."""
    extensions.register_alert_listener(on_alert_raised)
