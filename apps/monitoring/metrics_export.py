"""``/metrics``: the per-minute roll-ups summed into Prometheus counters and histograms.

A custom collector (prometheus_client) reads ``MetricMinute`` at scrape time, so ``/metrics``
and the dashboard show the same numbers, and every process's counts are included.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from apps.monitoring import selectors
from apps.monitoring.models import LATENCY_BUCKETS_MS
from apps.registry.models import ModelFamily

LABELS = ["family", "version", "route"]


class RollupCollector:
    """Collects the totals of every family at scrape time."""

    def collect(self) -> Iterator[Any]:
        totals = selectors.totals(ModelFamily.objects.all())
        requests = CounterMetricFamily(
            "gatehouse_predict_requests",
            "Predict requests (served, refused or failed).",
            labels=LABELS,
        )
        rows = CounterMetricFamily("gatehouse_predict_rows", "Rows served.", labels=LABELS)
        errors = CounterMetricFamily(
            "gatehouse_predict_errors", "Predict requests answered with a 5xx.", labels=LABELS
        )
        refusals = CounterMetricFamily(
            "gatehouse_predict_refusals",
            "Predict requests refused by policy (consent).",
            labels=LABELS,
        )
        latency = HistogramMetricFamily(
            "gatehouse_predict_latency_ms",
            "Predict latency of served requests (ms).",
            labels=LABELS,
        )
        for entry in totals:
            labels = [entry["family"], entry["version"], entry["route"]]
            requests.add_metric(labels, entry["requests"])
            rows.add_metric(labels, entry["rows"])
            errors.add_metric(labels, entry["errors"])
            refusals.add_metric(labels, entry["refusals"])
            if entry["version"]:
                cumulative, running = [], 0
                for bound, count in zip(
                    [*map(str, LATENCY_BUCKETS_MS), "+Inf"], entry["latency_buckets"], strict=True
                ):
                    running += count
                    cumulative.append((bound, running))
                latency.add_metric(labels, cumulative, sum_value=entry["latency_sum_ms"])
        yield from (requests, rows, errors, refusals, latency)


def exposition() -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RollupCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
