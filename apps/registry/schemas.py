"""Schemas of the registry API (and the metadata a registration carries)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from ninja import Schema
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from apps.registry.models import Framework, LegalBasis, RiskClass
from apps.registry.signature import Signature

SEMVER = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]{1,20})?$"
SHA256_OR_EMPTY = r"^$|^[0-9a-f]{64}$"


def _matching(value: Any, pattern: str, code: str, message: str) -> Any:
    """``value`` if it is not a string or matches ``pattern``; else an error saying ``message``
    (run before the field's own ``pattern``, which stays for the API schema, so that users read
    words rather than a regular expression)."""
    if isinstance(value, str) and not re.fullmatch(pattern, value):
        raise PydanticCustomError(code, message)
    return value


class FamilyIn(Schema):
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$")
    name: str = Field(min_length=1, max_length=120)
    description: str = Field(default="", max_length=2000)
    purposes: list[str] = Field(default_factory=list, max_length=20)
    legal_basis: LegalBasis | Literal[""] = ""
    consent_purpose: str = Field(default="", pattern=r"^$|^[a-z0-9_-]{1,64}$")
    risk_class: RiskClass = RiskClass.HIGH
    retention_days: int = Field(default=183, ge=1, le=36500)
    explain_decisions: bool = True
    review_below_confidence: float | None = Field(default=None, ge=0, le=1)
    review_labels: list[str] = Field(default_factory=list, max_length=20)


class FamilyOut(Schema):
    slug: str
    name: str
    description: str
    owner: str
    purposes: list[str]
    legal_basis: str
    consent_purpose: str
    risk_class: str
    retention_days: int
    actions: list[str]
    production_version: str | None


class VersionMetadata(Schema):
    """Everything about a version except its files (artifact and validation CSV)."""

    version: str = Field(pattern=SEMVER, description="Semantic version, e.g. 1.2.0")
    framework: Framework
    architecture: str = Field(default="", max_length=40)
    architecture_kwargs: dict[str, Any] = Field(default_factory=dict)
    signature: Signature
    description: str = Field(default="", max_length=2000)
    intended_use: str = Field(default="", max_length=5000)
    limitations: str = Field(default="", max_length=5000)
    ethical_considerations: str = Field(default="", max_length=5000)
    dataset_name: str = Field(default="", max_length=120)
    dataset_version: str = Field(default="", max_length=60)
    dataset_sha256: str = Field(default="", pattern=SHA256_OR_EMPTY)
    training_subject_refs: list[str] = Field(default_factory=list, max_length=5_000_000)

    @field_validator("version", mode="before")
    @classmethod
    def _semver(cls, value: Any) -> Any:
        return _matching(value, SEMVER, "semver", "must be a semantic version such as 1.2.0")

    @field_validator("dataset_sha256", mode="before")
    @classmethod
    def _sha256(cls, value: Any) -> Any:
        return _matching(
            value, SHA256_OR_EMPTY, "sha256", "must be 64 lowercase hex characters (a SHA-256)"
        )

    @field_validator("training_subject_refs")
    @classmethod
    def _refs(cls, refs: list[str]) -> list[str]:
        if any(not r.strip() or len(r) > 200 for r in refs):
            raise ValueError("each subject reference must be 1-200 characters")
        return refs


class GateOut(Schema):
    gate: str
    passed: bool
    measured: str
    threshold: str
    detail: str


class TransitionOut(Schema):
    from_status: str
    to_status: str
    actor: str | None
    reason: str
    at: datetime


class VersionOut(Schema):
    family: str
    version: str
    status: str
    framework: str
    architecture: str
    artifact_sha256: str
    artifact_size: int
    mar_sha256: str
    signature: dict[str, Any]
    metrics: dict[str, Any]
    dataset_name: str
    dataset_version: str
    dataset_sha256: str
    training_subject_count: int
    intended_use: str
    limitations: str
    ethical_considerations: str
    created_by: str
    created_at: datetime
    gates: list[GateOut]
    transitions: list[TransitionOut]


class ReasonIn(Schema):
    reason: str = Field(min_length=3, max_length=2000)


class DeployIn(Schema):
    target: Literal["staging", "production"]
    reason: str = Field(min_length=3, max_length=2000)


class ProductionSpanOut(Schema):
    version: str
    since: datetime
    until: datetime | None
