"""The model registry: families, versions with signatures and lineage, gates, transitions."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class RiskClass(models.TextChoices):
    """EU AI Act risk classes; the promotion policy differs per class."""

    MINIMAL = "minimal", "Minimal"
    LIMITED = "limited", "Limited"
    HIGH = "high", "High"


class LegalBasis(models.TextChoices):
    """GDPR Art. 6(1) legal bases."""

    CONSENT = "consent", "Consent (6(1)(a))"
    CONTRACT = "contract", "Contract (6(1)(b))"
    LEGAL_OBLIGATION = "legal_obligation", "Legal obligation (6(1)(c))"
    VITAL_INTERESTS = "vital_interests", "Vital interests (6(1)(d))"
    PUBLIC_TASK = "public_task", "Public task (6(1)(e))"
    LEGITIMATE_INTERESTS = "legitimate_interests", "Legitimate interests (6(1)(f))"
    NOT_APPLICABLE = "not_applicable", "No personal data"


class ModelFamily(models.Model):
    """A named model serving one purpose (e.g. ``credit-risk``); the unit of access control.

    Permissions are granted per family with django-guardian: view, predict, manage, approve.
    The compliance metadata here is what every version of the family is governed by.
    """

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_families"
    )
    purposes = models.JSONField(default=list, blank=True, help_text="Purposes of processing.")
    legal_basis = models.CharField(max_length=30, choices=LegalBasis.choices, blank=True)
    consent_purpose = models.SlugField(
        max_length=64, blank=True, help_text="Consent purpose required to predict, if any."
    )
    risk_class = models.CharField(max_length=10, choices=RiskClass.choices, default=RiskClass.HIGH)
    retention_days = models.PositiveIntegerField(
        default=183, help_text="How long decision records are kept (AI Act: at least 6 months)."
    )
    explain_decisions = models.BooleanField(
        default=True,
        help_text="Explain every decision when it is made (else only when an explanation is "
        "asked for).",
    )
    review_below_confidence = models.FloatField(
        null=True,
        blank=True,
        help_text="Send a decision to human review when its top score is below this.",
    )
    review_labels = models.JSONField(
        default=list, blank=True, help_text="Labels (adverse outcomes) always sent to review."
    )
    legal_hold = models.BooleanField(
        default=False, help_text="Keep decision records past their retention (litigation)."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]
        verbose_name_plural = "model families"
        permissions = [
            ("predict_modelfamily", "Can request predictions from the model family"),
            ("manage_modelfamily", "Can register and configure versions of the model family"),
            ("approve_modelfamily", "Can approve versions of the model family"),
        ]

    def __str__(self) -> str:
        return self.slug


class VersionStatus(models.TextChoices):
    REGISTERED = "registered", "Registered"
    VALIDATED = "validated", "Validated"
    APPROVED = "approved", "Approved"
    STAGING = "staging", "Deployed to staging"
    PRODUCTION = "production", "Deployed to production"
    RETIRED = "retired", "Retired"
    REJECTED = "rejected", "Rejected"
    RETRAIN_REQUIRED = "retrain_required", "Retrain required"


class Framework(models.TextChoices):
    STATE_DICT = "torch_state_dict", "torch eager (state_dict + architecture)"
    TORCHSCRIPT = "torchscript", "TorchScript"


class ModelVersion(models.Model):
    """One trained model of a family: artifact, signature, metrics, lineage and model card.

    The artifact is stored content-addressed by SHA-256 and verified at every load. Lineage
    keeps the training data's name, version and hash, and the pseudonyms of the data subjects
    whose records were used (8-byte HMAC digests, sorted, concatenated), so that an erasure can
    find the versions it touches without keeping identities.
    """

    family = models.ForeignKey(ModelFamily, on_delete=models.PROTECT, related_name="versions")
    version = models.CharField(max_length=40)
    status = models.CharField(
        max_length=20, choices=VersionStatus.choices, default=VersionStatus.REGISTERED
    )
    description = models.TextField(blank=True)

    framework = models.CharField(max_length=20, choices=Framework.choices)
    architecture = models.CharField(max_length=40, blank=True)
    architecture_kwargs = models.JSONField(default=dict, blank=True)
    artifact_sha256 = models.CharField(max_length=64)
    artifact_size = models.PositiveBigIntegerField()
    validation_sha256 = models.CharField(max_length=64, blank=True)
    validation_rows = models.PositiveIntegerField(default=0)
    mar_sha256 = models.CharField(max_length=64, blank=True)

    signature = models.JSONField()
    metrics = models.JSONField(default=dict, blank=True)

    dataset_name = models.CharField(max_length=120, blank=True)
    dataset_version = models.CharField(max_length=60, blank=True)
    dataset_sha256 = models.CharField(max_length=64, blank=True)
    training_subjects = models.BinaryField(default=b"", blank=True)
    training_subject_count = models.PositiveIntegerField(default=0)
    # Erasure (GDPR 17) of subjects in the training data: their digests are removed from
    # ``training_subjects``; the version must be retrained before it may be promoted.
    erased_subjects = models.PositiveIntegerField(default=0)
    retrain_required = models.BooleanField(default=False)

    intended_use = models.TextField(blank=True)
    limitations = models.TextField(blank=True)
    ethical_considerations = models.TextField(blank=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["family", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["family", "version"], name="version_unique_in_family"),
            models.UniqueConstraint(
                fields=["family"],
                condition=models.Q(status="production"),
                name="one_production_version_per_family",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.family.slug} v{self.version}"

    @property
    def model_card_complete(self) -> bool:
        return all(
            text.strip()
            for text in (self.intended_use, self.limitations, self.ethical_considerations)
        )

    @property
    def is_serving(self) -> bool:
        return self.status in (VersionStatus.STAGING, VersionStatus.PRODUCTION)

    def metric(self, name: str) -> Any:
        return (self.metrics.get("overall") or {}).get(name)


class VersionTransition(models.Model):
    """One status change of a version: who, when, why. The history of a version."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="transitions")
    from_status = models.CharField(max_length=20, choices=VersionStatus.choices, blank=True)
    to_status = models.CharField(max_length=20, choices=VersionStatus.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+"
    )
    reason = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["at", "pk"]
        indexes = [models.Index(fields=["to_status", "at"])]

    def __str__(self) -> str:
        return f"{self.version}: {self.from_status or '-'} -> {self.to_status}"


class GateResult(models.Model):
    """The outcome of one promotion gate for a version, from its latest validation."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="gates")
    gate = models.CharField(max_length=80)
    passed = models.BooleanField()
    measured = models.CharField(max_length=200, blank=True)
    threshold = models.CharField(max_length=200, blank=True)
    detail = models.CharField(max_length=300, blank=True)
    run_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.gate}: {'pass' if self.passed else 'fail'}"
