"""Compliance endpoints: consents, explanations, reviews, subject access, erasure, bias reports."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Router, Schema, Status
from pydantic import Field

from apps.compliance import bias, erasure, selectors, services
from apps.compliance.models import BiasReport, ConsentSource, ErasureRequest, Review
from apps.inference import selectors as inference_selectors
from gatehouse.auth import api_key_of, require_verified_session
from gatehouse.errors import PermissionDenied
from gatehouse.schemas import ErrorOut

router = Router(tags=["compliance"])
# 422: a path or query parameter that does not parse (a UUID, a status name).
ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut}
WRITE_ERRORS = {**ERRORS, 409: ErrorOut, 422: ErrorOut}


# --- Consent ---------------------------------------------------------------------------------


class ConsentIn(Schema):
    subject: str = Field(min_length=1, max_length=200, description="External reference.")
    purpose: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")
    granted: bool
    notice_version: str = Field(min_length=1, max_length=40)
    source: ConsentSource = ConsentSource.API


class ConsentOut(Schema):
    id: int
    purpose: str
    granted: bool
    notice_version: str
    source: str
    recorded_at: datetime


class ConsentHistoryOut(Schema):
    current: dict[str, bool]
    history: list[ConsentOut]


@router.post("/consents", response={201: ConsentOut, **WRITE_ERRORS}, url_name="consent_record")
def record_consent(request: HttpRequest, payload: ConsentIn) -> Status[ConsentOut]:
    """Record that a subject granted (``granted: true``) or withdrew (``false``) consent for a
    purpose; a withdrawal takes effect on the very next prediction."""
    key = api_key_of(request)
    if not selectors.may_act_for_subjects(request.user, key):
        raise PermissionDenied("You may not record consent.")
    consent = services.consent_record(
        reference=payload.subject,
        purpose=payload.purpose,
        granted=payload.granted,
        notice_version=payload.notice_version,
        source=payload.source,
        user=request.user,
        key=key,
    )
    return Status(201, ConsentOut.from_orm(consent))


@router.get("/subjects/{reference}/consents", response={200: ConsentHistoryOut, **ERRORS})
def subject_consents(request: HttpRequest, reference: str) -> ConsentHistoryOut:
    """A subject's consent history (newest first) and current choice per purpose."""
    consents = selectors.consent_history(
        user=request.user, key=api_key_of(request), reference=reference
    )
    return ConsentHistoryOut(
        current=selectors.consent_state(consents),
        history=[ConsentOut.from_orm(c) for c in consents],
    )


@router.get("/subjects/{reference}/export", response={200: dict[str, Any], **ERRORS})
def subject_export(request: HttpRequest, reference: str) -> dict[str, Any]:
    """Subject access (GDPR 15): everything held about the subject. Compliance officers, in a
    2FA-verified browser session."""
    require_verified_session(request)
    return selectors.subject_export(user=request.user, reference=reference)


# --- Explanations and review -----------------------------------------------------------------


class ExplanationOut(Schema):
    decision_id: str
    status: str
    model: str
    model_version: str
    artifact_sha256: str
    method: str
    target: str
    output_kind: str
    baseline: str
    output: float | None
    baseline_output: float | None
    convergence_delta: float | None
    attributions: dict[str, float]
    reasons: list[str]
    error: str
    computed_at: datetime | None


@router.get(
    "/decisions/{decision_id}/explanation",
    response={200: ExplanationOut, **ERRORS},
    url_name="decision_explanation",
)
def decision_explanation(request: HttpRequest, decision_id: uuid.UUID) -> ExplanationOut:
    """Feature attributions of a decision, by the version that made it (``status`` is
    ``pending`` while a worker computes them)."""
    decision = inference_selectors.decision_get(
        user=request.user, key=api_key_of(request), decision_id=str(decision_id)
    )
    explanation = services.explanation_for(decision)
    return ExplanationOut(**selectors.explanation_view(explanation))


class ReviewRequestIn(Schema):
    reason: str = Field(min_length=1, max_length=2000)


class ReviewDecisionIn(Schema):
    final_label: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)


class ReviewOut(Schema):
    id: int
    decision_id: uuid.UUID
    status: str
    trigger: str
    request_reason: str
    requested_at: datetime
    final_label: str
    review_reason: str
    reviewed_at: datetime | None


@router.post("/decisions/{decision_id}/review", response={201: ReviewOut, **WRITE_ERRORS})
def request_review(
    request: HttpRequest, decision_id: uuid.UUID, payload: ReviewRequestIn
) -> Status[ReviewOut]:
    """Contest a decision: a person will confirm or override it (GDPR 22(3))."""
    key = api_key_of(request)
    decision = inference_selectors.decision_get(
        user=request.user, key=key, decision_id=str(decision_id)
    )
    review = services.review_request(
        decision=decision,
        user=request.user,
        key=key,
        reason=payload.reason,
        by_subject=key is not None,
    )
    return Status(201, ReviewOut.from_orm(review))


@router.get("/reviews", response={200: list[ReviewOut], **ERRORS})
def list_reviews(
    request: HttpRequest, status: Literal["open", "confirmed", "overridden"] = "open"
) -> list[Review]:
    """Reviews the caller may decide (compliance officers, the family's approvers)."""
    require_verified_session(request)
    return selectors.review_queue(user=request.user, status=status)


@router.post("/reviews/{review_id}/decision", response={200: ReviewOut, **WRITE_ERRORS})
def decide_review(request: HttpRequest, review_id: int, payload: ReviewDecisionIn) -> Review:
    """Confirm (same label) or override (another label) with a written reason."""
    require_verified_session(request)
    return services.review_decide(
        review_id=review_id,
        user=request.user,
        final_label=payload.final_label,
        reason=payload.reason,
    )


# --- Erasure ---------------------------------------------------------------------------------


class ErasureIn(Schema):
    subject: str = Field(min_length=1, max_length=200, description="External reference.")
    channel: str = Field(default="", max_length=40)
    note: str = Field(default="", max_length=2000)


class ErasureDecisionIn(Schema):
    reason: str = Field(min_length=1, max_length=2000)


class ErasureOut(Schema):
    id: uuid.UUID
    status: str
    received_at: datetime
    deadline: datetime
    decided_at: datetime | None
    completed_at: datetime | None
    counts: dict[str, Any]


@router.post("/erasure-requests", response={201: ErasureOut, **WRITE_ERRORS})
def create_erasure(request: HttpRequest, payload: ErasureIn) -> Status[ErasureRequest]:
    """Register a subject's erasure request; a second compliance officer decides it."""
    key = api_key_of(request)
    created = erasure.erasure_create(
        reference=payload.subject,
        user=request.user,
        key=key,
        channel=payload.channel,
        note=payload.note,
    )
    return Status(201, created)


@router.get("/erasure-requests/{request_id}", response={200: ErasureOut, **ERRORS})
def get_erasure(request: HttpRequest, request_id: uuid.UUID) -> ErasureRequest:
    return selectors.erasure_get(user=request.user, key=api_key_of(request), request_id=request_id)


@router.post("/erasure-requests/{request_id}/approve", response={200: ErasureOut, **WRITE_ERRORS})
def approve_erasure(
    request: HttpRequest, request_id: uuid.UUID, payload: ErasureDecisionIn
) -> ErasureRequest:
    """Approve (four eyes, 2FA): the erasure then runs in the background."""
    require_verified_session(request)
    return erasure.erasure_decide(
        request_id=request_id, user=request.user, approve=True, reason=payload.reason
    )


@router.post("/erasure-requests/{request_id}/reject", response={200: ErasureOut, **WRITE_ERRORS})
def reject_erasure(
    request: HttpRequest, request_id: uuid.UUID, payload: ErasureDecisionIn
) -> ErasureRequest:
    require_verified_session(request)
    return erasure.erasure_decide(
        request_id=request_id, user=request.user, approve=False, reason=payload.reason
    )


@router.get("/erasure-requests/{request_id}/certificate", response={200: dict[str, Any], **ERRORS})
def erasure_certificate(request: HttpRequest, request_id: uuid.UUID) -> dict[str, Any]:
    """What was erased, when, approved by whom: counts only, no personal data."""
    found = selectors.erasure_get(user=request.user, key=api_key_of(request), request_id=request_id)
    return erasure.certificate(found)


# --- Bias reports ----------------------------------------------------------------------------


class BiasReportIn(Schema):
    family: str
    version: str
    source: Literal["decisions", "validation"] = "decisions"
    window_start: datetime | None = None
    window_end: datetime | None = None


class BiasReportOut(Schema):
    id: uuid.UUID
    family: str
    version: str
    source: str
    window_start: datetime | None
    window_end: datetime | None
    min_group_size: int
    rows: int
    results: dict[str, Any]
    breaches: list[dict[str, Any]]
    created_at: datetime


def _report_out(report: BiasReport) -> BiasReportOut:
    return BiasReportOut(
        id=report.id,
        family=report.version.family.slug,
        version=report.version.version,
        source=report.source,
        window_start=report.window_start,
        window_end=report.window_end,
        min_group_size=report.min_group_size,
        rows=report.rows,
        results=report.results,
        breaches=report.breaches,
        created_at=report.created_at,
    )


@router.post("/bias-reports", response={201: BiasReportOut, **WRITE_ERRORS})
def create_bias_report(request: HttpRequest, payload: BiasReportIn) -> Status[BiasReportOut]:
    """Compute a bias report for a version over live decisions with outcomes, or its
    validation set; a threshold of the promotion policy crossed raises an alert."""
    require_verified_session(request)
    selectors.require_officer(request.user)
    version = selectors.version_for_report(
        user=request.user, family=payload.family, version=payload.version
    )
    report = bias.report_create(
        version=version,
        source=payload.source,
        user=request.user,
        start=payload.window_start,
        end=payload.window_end,
    )
    return Status(201, _report_out(report))


@router.get("/bias-reports/{report_id}", response={200: BiasReportOut, **ERRORS})
def get_bias_report(request: HttpRequest, report_id: uuid.UUID) -> BiasReportOut:
    return _report_out(
        selectors.bias_report_get(user=request.user, report_id=report_id, key=api_key_of(request))
    )


@router.get(
    "/bias-reports/{report_id}/csv",
    response=ERRORS,
    openapi_extra={
        "responses": {
            200: {
                "description": "Groups and differences as CSV.",
                "content": {"text/csv": {"schema": {"type": "string"}}},
            }
        }
    },
)
def bias_report_csv(request: HttpRequest, report_id: uuid.UUID) -> HttpResponse:
    report = selectors.bias_report_get(
        user=request.user, report_id=report_id, key=api_key_of(request)
    )
    response = HttpResponse(bias.report_csv(report), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="bias-{report.pk}.csv"'
    return response
