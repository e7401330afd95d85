"""Platform-wide records: API keys and user notifications."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiKeyAction(models.TextChoices):
    """What a key may do, on top of what its owner is granted (a key never adds rights)."""

    VIEW = "view", "View models"
    PREDICT = "predict", "Request predictions"
    MANAGE = "manage", "Manage models"
    SUBJECTS = "subjects", "Record consent, review and erasure requests of data subjects"


class ApiKey(models.Model):
    """A credential for the REST API, owned by one user and scoped to families and actions.

    Only the SHA-256 of the key is stored (the key has 256 random bits, so a slow hash adds
    nothing); the key itself is shown once at creation. An empty ``families`` list means every
    family the owner is granted.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True, help_text="Shown to tell keys apart.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    families = models.JSONField(default=list, blank=True)
    actions = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}...)"

    def is_usable(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and self.expires_at > now and self.user.is_active

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "active"

    def allows(self, action: str, family_slug: str | None = None) -> bool:
        if action not in self.actions:
            return False
        return family_slug is None or not self.families or family_slug in self.families


class Notification(models.Model):
    """A message for one user, shown in the header and pushed live over the websocket."""

    class Level(models.TextChoices):
        INFO = "info"
        WARNING = "warning"
        ERROR = "error"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    text = models.CharField(max_length=500)
    link = models.CharField(max_length=300, blank=True)
    dedupe_key = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "dedupe_key"],
                condition=~models.Q(dedupe_key=""),
                name="notification_unique_dedupe_key",
            )
        ]
        indexes = [models.Index(fields=["user", "read_at"])]

    def __str__(self) -> str:
        return self.text


class Alert(models.Model):
    """Something an operator must look at: raised by any app, acknowledged by a person."""

    class Severity(models.TextChoices):
        INFO = "info"
        WARNING = "warning"
        CRITICAL = "critical"

    kind = models.CharField(max_length=60, db_index=True)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    title = models.CharField(max_length=200)
    detail = models.TextField(blank=True)
    subject = models.CharField(max_length=200, blank=True, help_text="What it is about.")
    family = models.CharField(
        max_length=64,
        blank=True,
        db_index=True,
        help_text="Slug of the model family it concerns: those who may view that family see it. "
        "Empty for platform alerts (keys, sign-ins, erasures), seen by administrators and "
        "compliance officers only.",
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.title}"


class RateLimitCounter(models.Model):
    """The request count of one caller in one rate-limit scope, for the current fixed window.

    One row per (scope, caller), reset when a new window starts, so the table never grows with
    time. Written only by ``gatehouse.ratelimit`` with one atomic upsert per request.
    """

    bucket = models.CharField(max_length=120, primary_key=True, help_text="scope:caller")
    window_start = models.BigIntegerField(help_text="Start of the counted window (epoch s).")
    hits = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.bucket}@{self.window_start}: {self.hits}"


# The transparency log's tables belong to this app (gatehouse/tlog/models.py).
from gatehouse.tlog.models import LogCheckpoint, LogLeaf, LogLease, LogNode  # noqa: E402

__all__ = ["LogCheckpoint", "LogLeaf", "LogLease", "LogNode"]
