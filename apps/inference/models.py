"""Inference: per-family routing, decision records (leaves of the transparency log), idempotent
replies, outcomes."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.registry.models import ModelFamily, ModelVersion


class OutputMode(models.TextChoices):
    """How much of the model's output a caller sees (less output resists model extraction)."""

    SCORES = "scores", "Label and every class score"
    TOP_K = "top_k", "Label and the top-k scores, rounded"
    LABEL = "label", "Label only"


class RoutingConfig(models.Model):
    """How a family's traffic is served: kill-switch, canary, shadow, jurisdiction rules.

    Read on every request (one indexed row), so a change is effective at once, everywhere.
    """

    family = models.OneToOneField(ModelFamily, on_delete=models.CASCADE, related_name="routing")
    suspended = models.BooleanField(default=False)
    suspended_reason = models.CharField(max_length=300, blank=True)
    canary_version = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    canary_percent = models.PositiveSmallIntegerField(default=0)
    shadow_version = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    output_mode = models.CharField(
        max_length=10, choices=OutputMode.choices, default=OutputMode.SCORES
    )
    top_k = models.PositiveSmallIntegerField(default=3)
    max_rows = models.PositiveIntegerField(default=100)
    # {"EU": ["1.0.0", "2.0.0"]}: subjects of that jurisdiction only on these versions.
    jurisdiction_rules = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    def __str__(self) -> str:
        return f"routing of {self.family.slug}"


class Route(models.TextChoices):
    PRODUCTION = "production"
    CANARY = "canary"
    SHADOW = "shadow"
    POLICY = "policy"


class Decision(models.Model):
    """One served (or shadowed) row: what was decided, by which approved version, for whom.

    Append-only, and a leaf of the transparency log (``apps.inference.records``): the leaf
    covers every field but the personal payload, which enters only through ``payload_digest``
    (salted), so that erasing the payload and its salt leaves the log verifiable and the digest
    unlinkable.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    request_id = models.CharField(max_length=64)
    family = models.ForeignKey(ModelFamily, on_delete=models.PROTECT, related_name="+")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    version_label = models.CharField(max_length=40)
    artifact_sha256 = models.CharField(max_length=64)
    route = models.CharField(max_length=12, choices=Route.choices)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+"
    )
    api_key = models.ForeignKey(
        "gatehouse.ApiKey", on_delete=models.PROTECT, null=True, related_name="+"
    )
    purpose = models.CharField(max_length=64, blank=True)
    jurisdiction = models.CharField(max_length=16, blank=True)
    # What allowed the prediction, from the pre-predict checks (e.g. ``consent:42``).
    policy_ref = models.CharField(max_length=200, blank=True)
    row_index = models.PositiveIntegerField(default=0)
    label = models.CharField(max_length=200)
    scores = models.JSONField()
    latency_ms = models.FloatField()
    # Personal payload: pseudonymised inputs and subject; erasable.
    subject_pseudonym = models.CharField(max_length=64, blank=True, db_index=True)
    inputs = models.JSONField(null=True)
    payload_salt = models.CharField(max_length=32, blank=True)
    payload_digest = models.CharField(max_length=64)
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["family", "created_at"])]

    def __str__(self) -> str:
        return f"decision {self.id}"


class IdempotentReply(models.Model):
    """The reply given to a request with an ``Idempotency-Key``: a retry gets it again."""

    actor = models.CharField(max_length=80, help_text="user:<id> or key:<id>")
    key = models.CharField(max_length=200)
    request_digest = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField()
    body = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["actor", "key"], name="idempotency_key_per_actor")
        ]

    def __str__(self) -> str:
        return f"{self.actor} {self.key}"


class Outcome(models.Model):
    """The ground truth learned later for a decision (monitoring, bias reports)."""

    decision = models.OneToOneField(Decision, on_delete=models.CASCADE, related_name="outcome")
    label = models.CharField(max_length=200)
    recorded_at = models.DateTimeField(default=timezone.now)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )

    def __str__(self) -> str:
        return f"outcome of {self.decision_id}"


class BatchStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class BatchJob(models.Model):
    """A CSV of cases scored in the background (``apps.inference.batch``), chunk by chunk.

    Visible to its creator only (and, when submitted with a key, to that key only). One run
    works a job at a time: it holds the lease (``lease_owner``) and renews ``heartbeat_at`` at
    every committed chunk; a job whose heartbeat stopped is resumed by the sweeper.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    family = models.ForeignKey(ModelFamily, on_delete=models.PROTECT, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    api_key = models.ForeignKey(
        "gatehouse.ApiKey", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    status = models.CharField(
        max_length=10, choices=BatchStatus.choices, default=BatchStatus.QUEUED
    )
    # The uploaded CSV, in the artifact store under its SHA-256.
    input_name = models.CharField(max_length=200, blank=True)
    input_sha256 = models.CharField(max_length=64)
    input_bytes = models.PositiveBigIntegerField(default=0)
    subject_column = models.CharField(max_length=200, blank=True)
    purpose = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    chunk_rows = models.PositiveIntegerField(default=200)
    total_rows = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0, help_text="Rows processed (scored or not).")
    rows_failed = models.PositiveIntegerField(default=0, help_text="Rows refused as invalid.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Runs that claimed the job.")
    lease_owner = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    enqueued_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    result_sha256 = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["created_by", "created_at"]),
            models.Index(fields=["status", "heartbeat_at"]),
        ]

    def __str__(self) -> str:
        return f"batch job {self.id}"

    @property
    def rows_scored(self) -> int:
        return self.rows_done - self.rows_failed

    @property
    def percent(self) -> int:
        return int(100 * self.rows_done / self.total_rows) if self.total_rows else 0


class BatchRowStatus(models.TextChoices):
    OK = "ok"
    ERROR = "error"


class BatchRow(models.Model):
    """The outcome of one row of a batch job: its decision, or why it was not scored.

    ``(job, row_number)`` is unique: a row is recorded once, whatever crashes or races.
    """

    job = models.ForeignKey(BatchJob, on_delete=models.CASCADE, related_name="rows")
    row_number = models.PositiveIntegerField(help_text="1-based data row of the input CSV.")
    status = models.CharField(max_length=8, choices=BatchRowStatus.choices)
    decision = models.ForeignKey(
        Decision, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    label = models.CharField(max_length=200, blank=True)
    scores = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["job", "row_number"]
        constraints = [
            models.UniqueConstraint(fields=["job", "row_number"], name="batch_row_once_per_job")
        ]

    def __str__(self) -> str:
        return f"row {self.row_number} of {self.job_id}"
