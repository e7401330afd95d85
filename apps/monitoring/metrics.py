"""Traffic metrics that cost the predict path nothing but a dictionary update.

Each process that serves predictions (web workers, Celery workers running batches, the demo
traffic command) counts in memory, per (family, version, route, minute): requests, errors,
refusals, rows, latency (sum and histogram) and the top-score histogram. A daemon thread of
that process flushes the deltas every ``METRICS_FLUSH_S`` seconds into ``MetricMinute`` rows
(adding to what other processes wrote) and then tells open dashboards to refresh. So there is
no per-request aggregate query, and the dashboard and ``/metrics`` read the same rows.

The counters are fed through the inference app's extension points: the recorded hook (served
decisions, counted once their transaction commits) and the failure hook (refusals and errors).
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from apps.monitoring.models import LATENCY_BUCKETS_MS, SCORE_BINS, MetricMinute

logger = logging.getLogger(__name__)

Key = tuple[int, int | None, str, datetime]  # family, version, route, minute


@dataclass
class Counts:
    requests: int = 0
    errors: int = 0
    refusals: int = 0
    rows: int = 0
    latency_sum_ms: float = 0.0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    score_bins: list[int] = field(default_factory=lambda: [0] * SCORE_BINS)
    labels: dict[str, int] = field(default_factory=dict)


def _minute(now: datetime | None = None) -> datetime:
    return (now or timezone.now()).replace(second=0, microsecond=0)


def latency_bucket(latency_ms: float) -> int:
    """Index of the histogram bucket of ``latency_ms`` (the last one is +Inf)."""
    return bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)


def score_bin(score: float) -> int:
    return min(SCORE_BINS - 1, max(0, int(score * SCORE_BINS)))


class Recorder:
    """The per-process counters and their flusher."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Key, Counts] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- counting (called on the predict path: memory only) ---------------------------------

    def _counts(self, key: Key) -> Counts:
        counts = self._pending.get(key)
        if counts is None:
            counts = self._pending[key] = Counts()
        return counts

    def served(self, decisions: Sequence[Any]) -> None:
        minute = _minute()
        with self._lock:
            seen: set[tuple[Key, str]] = set()
            for d in decisions:
                key = (d.family_id, d.version_id, d.route, minute)
                counts = self._counts(key)
                if (key, d.request_id) not in seen:  # one request may serve several rows
                    seen.add((key, d.request_id))
                    counts.requests += 1
                    counts.latency_sum_ms += d.latency_ms
                    counts.latency_buckets[latency_bucket(d.latency_ms)] += 1
                counts.rows += 1
                if d.scores:
                    counts.score_bins[score_bin(max(d.scores.values()))] += 1
                counts.labels[d.label] = counts.labels.get(d.label, 0) + 1
        self._ensure_thread()

    def failed(self, family_id: int, *, refusal: bool, error: bool) -> None:
        with self._lock:
            counts = self._counts((family_id, None, "", _minute()))
            counts.requests += 1
            counts.refusals += int(refusal)
            counts.errors += int(error)
        self._ensure_thread()

    # --- flushing ----------------------------------------------------------------------------

    def flush(self) -> int:
        """Add the pending counts to their minute rows; the number of rows written."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        try:
            with transaction.atomic():
                for key, counts in pending.items():
                    _add(key, counts)
        except Exception:
            logger.exception("metrics flush failed; %d rows kept for the next flush", len(pending))
            with self._lock:  # put them back: nothing counted is lost to a failed flush
                for key, counts in pending.items():
                    _merge(self._counts(key), counts)
            return 0
        _announce()
        return len(pending)

    def _ensure_thread(self) -> None:
        interval = float(getattr(settings, "METRICS_FLUSH_S", 1.0))
        if interval <= 0 or (self._thread is not None and self._thread.is_alive()):
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._run, args=(interval,), name="gatehouse-metrics", daemon=True
            )
            self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.flush()
            finally:
                close_old_connections()

    def pending(self) -> dict[Key, Counts]:
        with self._lock:
            return dict(self._pending)

    def reset(self) -> None:
        """Forget counts not flushed yet (tests)."""
        with self._lock:
            self._pending.clear()


def _merge(into: Counts, extra: Counts) -> None:
    into.requests += extra.requests
    into.errors += extra.errors
    into.refusals += extra.refusals
    into.rows += extra.rows
    into.latency_sum_ms += extra.latency_sum_ms
    into.latency_buckets = [
        a + b for a, b in zip(into.latency_buckets, extra.latency_buckets, strict=True)
    ]
    into.score_bins = [a + b for a, b in zip(into.score_bins, extra.score_bins, strict=True)]
    for label, n in extra.labels.items():
        into.labels[label] = into.labels.get(label, 0) + n


def _add(key: Key, counts: Counts) -> None:
    family_id, version_id, route, minute = key
    row, _ = MetricMinute.objects.select_for_update().get_or_create(
        family_id=family_id,
        version_id=version_id,
        route=route,
        minute=minute,
        defaults={
            "latency_buckets": [0] * (len(LATENCY_BUCKETS_MS) + 1),
            "score_bins": [0] * SCORE_BINS,
            "labels": {},
        },
    )
    total = Counts(
        requests=row.requests,
        errors=row.errors,
        refusals=row.refusals,
        rows=row.rows,
        latency_sum_ms=row.latency_sum_ms,
        latency_buckets=list(row.latency_buckets) or [0] * (len(LATENCY_BUCKETS_MS) + 1),
        score_bins=list(row.score_bins) or [0] * SCORE_BINS,
        labels=dict(row.labels),
    )
    _merge(total, counts)
    for name in ("requests", "errors", "refusals", "rows", "latency_sum_ms"):
        setattr(row, name, getattr(total, name))
    row.latency_buckets, row.score_bins, row.labels = (
        total.latency_buckets,
        total.score_bins,
        total.labels,
    )
    row.save()


_last_announce = 0.0


def _announce() -> None:
    """Tell open dashboards that new numbers are in (at most twice a second per process)."""
    global _last_announce
    now = time.monotonic()
    if now - _last_announce < 0.5:
        return
    _last_announce = now
    from gatehouse.live import publish_topic

    publish_topic("monitoring")


recorder = Recorder()


# --- Extension-point receivers (registered in MonitoringConfig.ready) -------------------------


def on_decisions_recorded(decisions: Sequence[Any], rows: Sequence[dict[str, Any]]) -> None:
    """Count served (and shadow) decisions once their transaction commits."""
    batch = list(decisions)
    transaction.on_commit(lambda: recorder.served(batch))


def on_failure(family: Any, error: BaseException) -> None:
    """Count a refused or failed predict request: 5xx as an error, 403 as a refusal."""
    status = int(getattr(error, "status_code", 500))
    recorder.failed(family.pk, refusal=status == 403, error=status >= 500)
