"""Monitoring: per-minute traffic roll-ups, drift references and snapshots, incident events,
and the per-family thresholds that turn them into alerts (``gatehouse.models.Alert``)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.registry.models import ModelFamily, ModelVersion

# Upper bounds (ms) of the latency histogram's buckets; the last bucket is +Inf.
LATENCY_BUCKETS_MS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
# Top-score (confidence) histogram: ten equal bins over [0, 1].
SCORE_BINS = 10


class MetricMinute(models.Model):
    """Traffic of one family/version/route in one minute, rolled up from per-process counters.

    Written by the flusher of each serving process (adds its deltas), never per request.
    ``latency_buckets`` has one count per bound of ``LATENCY_BUCKETS_MS`` plus +Inf (not
    cumulative); ``score_bins`` counts the top score of served rows in ten bins.
    """

    family = models.ForeignKey(ModelFamily, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    route = models.CharField(max_length=12, blank=True)
    minute = models.DateTimeField(db_index=True)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0, help_text="5xx answers (backend, crash).")
    refusals = models.PositiveIntegerField(default=0, help_text="Consent and policy refusals.")
    rows = models.PositiveIntegerField(default=0)
    latency_sum_ms = models.FloatField(default=0)
    latency_buckets = models.JSONField(default=list)
    score_bins = models.JSONField(default=list)
    labels = models.JSONField(default=dict)

    class Meta:
        ordering = ["-minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["family", "version", "route", "minute"], name="one_metric_row_per_minute"
            )
        ]

    def __str__(self) -> str:
        return f"{self.family_id}/{self.version_id}/{self.route} @ {self.minute:%H:%M}"


class MonitoringPolicy(models.Model):
    """Per-family thresholds; a family without a row uses the defaults of the fields."""

    family = models.OneToOneField(ModelFamily, on_delete=models.CASCADE, related_name="monitoring")
    drift_window = models.PositiveIntegerField(
        default=500, help_text="Live inputs (most recent decisions) compared with the reference."
    )
    drift_min_rows = models.PositiveIntegerField(default=100)
    psi_warning = models.FloatField(default=0.1)
    psi_alert = models.FloatField(default=0.25)
    ks_p_alert = models.FloatField(default=0.01, help_text="KS test p-value below which: drift.")
    latency_p95_slo_ms = models.FloatField(default=500)
    error_rate_max = models.FloatField(default=0.05)
    min_requests = models.PositiveIntegerField(
        default=20, help_text="Requests in the window before rates are judged."
    )

    def __str__(self) -> str:
        return f"monitoring policy of {self.family_id}"


class DriftReference(models.Model):
    """The training/validation distribution of each model input of a version.

    ``features`` maps a feature to ``{"kind": "numeric", "edges": [...], "proportions": [...],
    "sample": [...]}`` (decile edges, share per bin, a sorted sample for the KS test) or
    ``{"kind": "categorical", "proportions": {value: share}}``.
    """

    version = models.OneToOneField(ModelVersion, on_delete=models.CASCADE, related_name="+")
    rows = models.PositiveIntegerField()
    features = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"drift reference of {self.version_id}"


class DriftStatus(models.TextChoices):
    OK = "ok"
    WARNING = "warning"
    DRIFT = "drift"
    INSUFFICIENT = "insufficient", "Not enough live data"


class DriftSnapshot(models.Model):
    """One comparison of recent live inputs with the reference: per feature and overall."""

    family = models.ForeignKey(ModelFamily, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    computed_at = models.DateTimeField(default=timezone.now, db_index=True)
    rows = models.PositiveIntegerField()
    status = models.CharField(max_length=12, choices=DriftStatus.choices)
    features = models.JSONField(default=dict)

    class Meta:
        ordering = ["-computed_at"]

    def __str__(self) -> str:
        return f"drift of {self.version_id}: {self.status}"


class IncidentEvent(models.Model):
    """Something an operator did or the platform noticed, shown on the dashboard's timeline:
    kill-switch, rollback, canary change, alert acknowledged."""

    family = models.ForeignKey(
        ModelFamily, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    kind = models.CharField(max_length=30)
    detail = models.CharField(max_length=300)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"
