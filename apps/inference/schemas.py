"""Schemas of the inference API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Schema
from pydantic import Field


class PredictIn(Schema):
    rows: list[Any] = Field(min_length=1, description="Objects keyed by feature name.")
    subject: str = Field(
        default="",
        max_length=200,
        description="External reference of the data subject (required when "
        "the family requires consent).",
    )
    purpose: str = Field(default="", max_length=64)
    jurisdiction: str = Field(default="", max_length=16, pattern=r"^$|^[A-Z]{2,16}$")


class PromiseOut(Schema):
    leaf_hash: str = Field(description="base64 SHA-256(0x00 || leaf) of the decision record")
    promise: str = Field(description="the log's signed promise to integrate it (signed note)")
    url: str = Field(description="where the receipt with the inclusion proof is served")


class PredictionOut(Schema):
    decision_id: str
    label: str
    scores: dict[str, float] | None
    model_version: str
    route: str
    receipt: PromiseOut


class ReceiptOut(Schema):
    format: str
    kind: str
    record_id: str
    origin: str
    public_key: str
    leaf: str = Field(description="the canonical leaf: non-personal fields + payload digest")
    leaf_hash: str
    promise: str
    status: str = Field(description="integrated, or pending (ask again after Retry-After)")
    leaf_index: int | None
    tree_size: int | None
    root_hash: str | None
    proof: str | None = Field(description="C2SP tlog-proof: index, audit path, checkpoint")
    checkpoint: str | None


class PredictOut(Schema):
    model: str
    predictions: list[PredictionOut]


class ModelDescriptionOut(Schema):
    family: str
    name: str
    serving_version: str | None
    consent_purpose: str
    subject_required: bool
    max_rows: int
    output_mode: str
    suspended: bool
    features: list[dict[str, Any]]
    labels: list[str]


class RoutingIn(Schema):
    suspended: bool = False
    suspended_reason: str = Field(default="", max_length=300)
    canary_version: str | None = None
    canary_percent: int = Field(default=0, ge=0, le=100)
    shadow_version: str | None = None
    output_mode: str = Field(default="scores", pattern="^(scores|top_k|label)$")
    top_k: int = Field(default=3, ge=1, le=100)
    max_rows: int = Field(default=100, ge=1, le=10000)
    jurisdiction_rules: dict[str, list[str]] = Field(default_factory=dict)


class RoutingOut(RoutingIn):
    updated_at: datetime | None  # None: the defaults, never saved


class OutcomeIn(Schema):
    label: str = Field(min_length=1, max_length=200)


class DecisionOut(Schema):
    id: str
    created_at: datetime
    family: str
    model_version: str
    artifact_sha256: str
    route: str
    label: str
    scores: dict[str, float] | None
    outcome: str | None
