"""Compliance: data subjects, consent, explanations, reviews, erasure requests, bias reports.

Subjects appear everywhere else only as keyed-HMAC pseudonyms; the external reference is kept
in one table (``SubjectReference``) that only compliance roles read, and that an erasure deletes.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.inference.models import Decision
from apps.registry.models import ModelVersion


class DataSubject(models.Model):
    """A person decisions are made about, known to the platform by pseudonym only."""

    pseudonym = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"subject {self.pseudonym[:12]}"


class SubjectReference(models.Model):
    """The external reference (customer number, case id) of a subject: the only link back to
    the person. Readable by compliance officers; deleted by an erasure."""

    subject = models.OneToOneField(DataSubject, on_delete=models.CASCADE, related_name="reference")
    reference = models.CharField(max_length=200, unique=True)

    def __str__(self) -> str:
        return f"reference of {self.subject_id}"


class ConsentSource(models.TextChoices):
    WEB = "web", "Web form"
    APP = "app", "Mobile app"
    PAPER = "paper", "Signed paper form"
    PHONE = "phone", "Recorded phone call"
    BRANCH = "branch", "In person"
    API = "api", "Partner system (API)"


class Consent(models.Model):
    """One consent event: granted or withdrawn, for one purpose. Append-only; the latest event
    per (subject, purpose) is the subject's current choice."""

    subject = models.ForeignKey(DataSubject, on_delete=models.CASCADE, related_name="consents")
    purpose = models.SlugField(max_length=64)
    granted = models.BooleanField()
    notice_version = models.CharField(max_length=40)
    source = models.CharField(max_length=10, choices=ConsentSource.choices)
    recorded_at = models.DateTimeField(default=timezone.now)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    api_key = models.ForeignKey(
        "gatehouse.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-recorded_at", "-id"]
        indexes = [models.Index(fields=["subject", "purpose", "-recorded_at"])]

    def __str__(self) -> str:
        return f"{'grant' if self.granted else 'withdrawal'} for {self.purpose}"


class ConsentRefusal(models.Model):
    """A prediction refused for want of consent: recorded without the inputs."""

    family = models.ForeignKey("registry.ModelFamily", on_delete=models.CASCADE, related_name="+")
    purpose = models.SlugField(max_length=64)
    subject_pseudonym = models.CharField(max_length=64, db_index=True)
    reason = models.CharField(max_length=20)  # never_given | withdrawn
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"refusal ({self.reason}) on {self.family_id}"


class ExplanationStatus(models.TextChoices):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class Explanation(models.Model):
    """Feature attributions of one decision, by the version that made it.

    ``attributions`` maps each model-input feature to its share of ``output - baseline_output``
    (one-hot columns of a category are summed into their feature).
    """

    decision = models.OneToOneField(Decision, on_delete=models.CASCADE, related_name="explanation")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(
        max_length=10, choices=ExplanationStatus.choices, default=ExplanationStatus.PENDING
    )
    method = models.CharField(max_length=30, blank=True)
    target = models.CharField(max_length=200, blank=True, help_text="The explained label.")
    output_kind = models.CharField(max_length=30, blank=True)
    baseline = models.CharField(max_length=200, blank=True)
    output = models.FloatField(null=True)
    baseline_output = models.FloatField(null=True)
    attributions = models.JSONField(default=dict)
    convergence_delta = models.FloatField(null=True)
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    computed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"explanation of {self.decision_id}"


class ReviewStatus(models.TextChoices):
    OPEN = "open"
    CONFIRMED = "confirmed"
    OVERRIDDEN = "overridden"


class ReviewTrigger(models.TextChoices):
    SUBJECT = "subject_request", "Contested by the subject"
    RULE = "rule", "Family review rule"
    STAFF = "staff", "Sent by staff"


class Review(models.Model):
    """Human review of an automated decision (GDPR 22(3), AI Act 14)."""

    decision = models.OneToOneField(Decision, on_delete=models.CASCADE, related_name="review")
    family = models.ForeignKey("registry.ModelFamily", on_delete=models.CASCADE, related_name="+")
    subject_pseudonym = models.CharField(max_length=64, blank=True, db_index=True)
    trigger = models.CharField(max_length=20, choices=ReviewTrigger.choices)
    request_reason = models.TextField(blank=True)
    requested_at = models.DateTimeField(default=timezone.now)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    status = models.CharField(max_length=12, choices=ReviewStatus.choices, default="open")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    final_label = models.CharField(max_length=200, blank=True)
    review_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["requested_at"]

    def __str__(self) -> str:
        return f"review of {self.decision_id} ({self.status})"


class ErasureStatus(models.TextChoices):
    PENDING = "pending", "Awaiting a second compliance officer"
    APPROVED = "approved", "Approved, erasing"
    DONE = "done", "Erased"
    REJECTED = "rejected", "Rejected"


class ErasureRequest(models.Model):
    """A data subject's request to be erased (GDPR 17), decided by a second person.

    Until it is executed it points at the subject; afterwards the subject is gone and only the
    certificate (counts per store, no personal data) remains.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subject = models.ForeignKey(
        DataSubject, on_delete=models.SET_NULL, null=True, blank=True, related_name="erasures"
    )
    status = models.CharField(
        max_length=10, choices=ErasureStatus.choices, default=ErasureStatus.PENDING
    )
    received_at = models.DateTimeField(default=timezone.now)
    deadline = models.DateTimeField()
    channel = models.CharField(max_length=40, blank=True)
    note = models.TextField(blank=True, help_text="Context, without personal data.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True, help_text="Rows erased per store.")
    deadline_alerted = models.BooleanField(default=False)

    class Meta:
        ordering = ["deadline"]
        constraints = [
            models.UniqueConstraint(
                fields=["subject"],
                condition=models.Q(status__in=["pending", "approved"]),
                name="one_open_erasure_per_subject",
            )
        ]

    def __str__(self) -> str:
        return f"erasure request {self.id}"


class BiasReport(models.Model):
    """Fairness of one version over a window of decisions with outcomes, or its validation set."""

    class Source(models.TextChoices):
        DECISIONS = "decisions", "Live decisions with outcomes"
        VALIDATION = "validation", "Validation set"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=12, choices=Source.choices)
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    min_group_size = models.PositiveIntegerField()
    rows = models.PositiveIntegerField(default=0)
    results = models.JSONField(default=dict)
    breaches = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"bias report of {self.version_id} ({self.source})"
