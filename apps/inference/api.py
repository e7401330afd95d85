"""Inference endpoints: ``/api/v1/models/{family}`` (describe, predict, routing) and
``/api/v1/decisions/{id}`` (read, outcome)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from ninja import File, Form, Header, Query, Router, Schema, Status
from ninja.files import UploadedFile
from pydantic import Field

from apps.inference import batch, routing, selectors, services
from apps.inference.models import BatchJob, BatchStatus, RoutingConfig
from apps.inference.schemas import (
    DecisionOut,
    ModelDescriptionOut,
    OutcomeIn,
    PredictIn,
    PredictOut,
    ReceiptOut,
    RoutingIn,
    RoutingOut,
)
from apps.registry import selectors as registry_selectors
from apps.registry.permissions import FamilyAction
from gatehouse.auth import api_key_of, require_key_scope
from gatehouse.schemas import ErrorOut
from gatehouse.tlog import receipts

router = Router(tags=["inference"])
ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut}
PREDICT_ERRORS = {**ERRORS, 409: ErrorOut, 413: ErrorOut, 422: ErrorOut, 503: ErrorOut}


@router.get("/models/{family}", response={200: ModelDescriptionOut, **ERRORS})
def describe(request: HttpRequest, family: str) -> ModelDescriptionOut:
    """The serving signature: what a request must contain, with types, ranges and choices."""
    require_key_scope(request, action="predict")
    fam = registry_selectors.family_get(
        user=request.user, slug=family, action=FamilyAction.PREDICT, key=api_key_of(request)
    )
    config = routing.routing_for(fam)
    version = registry_selectors.production_version(family=fam)
    signature: dict[str, Any] = (
        version.signature if version else {"features": [], "output": {"labels": []}}
    )
    return ModelDescriptionOut(
        family=fam.slug,
        name=fam.name,
        serving_version=version.version if version else None,
        consent_purpose=fam.consent_purpose,
        subject_required=bool(fam.consent_purpose),
        max_rows=config.max_rows,
        output_mode=config.output_mode,
        suspended=config.suspended,
        features=signature["features"],
        labels=signature["output"]["labels"],
    )


@router.post("/models/{family}/predict", response={200: PredictOut, **PREDICT_ERRORS})
def predict(
    request: HttpRequest,
    family: str,
    payload: PredictIn,
    idempotency_key: str = Header(default="", alias="Idempotency-Key", max_length=200),
) -> Any:
    """Predict for 1..N rows. Each row gets a decision record before the reply is sent."""
    require_key_scope(request, action="predict")
    fam = registry_selectors.family_for_serving(
        user=request.user, slug=family, action=FamilyAction.PREDICT, key=api_key_of(request)
    )
    _, body = services.predict(
        family=fam,
        user=request.user,
        key=api_key_of(request),
        request=services.PredictRequest(
            rows=payload.rows,
            subject=payload.subject,
            purpose=payload.purpose,
            jurisdiction=payload.jurisdiction,
            idempotency_key=idempotency_key,
            request_id=getattr(request, "request_id", ""),
        ),
    )
    return body


def _routing_out(config: RoutingConfig) -> RoutingOut:
    return RoutingOut(
        suspended=config.suspended,
        suspended_reason=config.suspended_reason,
        canary_version=config.canary_version.version if config.canary_version else None,
        canary_percent=config.canary_percent,
        shadow_version=config.shadow_version.version if config.shadow_version else None,
        output_mode=config.output_mode,
        top_k=config.top_k,
        max_rows=config.max_rows,
        jurisdiction_rules=config.jurisdiction_rules,
        updated_at=config.updated_at,
    )


@router.get("/models/{family}/routing", response={200: RoutingOut, **ERRORS})
def get_routing(request: HttpRequest, family: str) -> RoutingOut:
    require_key_scope(request, action="manage")
    fam = registry_selectors.family_get(
        user=request.user, slug=family, action=FamilyAction.MANAGE, key=api_key_of(request)
    )
    return _routing_out(routing.routing_for(fam))


@router.put("/models/{family}/routing", response={200: RoutingOut, **ERRORS, 422: ErrorOut})
def put_routing(request: HttpRequest, family: str, payload: RoutingIn) -> RoutingOut:
    """Kill-switch, canary, shadow, output mode, row limit, jurisdiction rules (audited)."""
    require_key_scope(request, action="manage")
    fam = registry_selectors.family_get(
        user=request.user, slug=family, action=FamilyAction.MANAGE, key=api_key_of(request)
    )
    config = services.routing_update(family=fam, user=request.user, data=payload.model_dump())
    return _routing_out(config)


def _decision_out(decision: Any) -> DecisionOut:
    outcome = getattr(decision, "outcome", None)
    return DecisionOut(
        id=str(decision.id),
        created_at=decision.created_at,
        family=decision.family.slug,
        model_version=decision.version_label,
        artifact_sha256=decision.artifact_sha256,
        route=decision.route,
        label=decision.label,
        # The family's output mode applies here too, or a label-only caller could read scores.
        scores=services.reply_scores(decision.scores, routing.routing_for(decision.family)),
        outcome=outcome.label if outcome else None,
    )


@router.get("/decisions/{decision_id}", response={200: DecisionOut, **ERRORS})
def get_decision(request: HttpRequest, decision_id: uuid.UUID) -> DecisionOut:
    decision = selectors.decision_get(
        user=request.user, key=api_key_of(request), decision_id=str(decision_id)
    )
    return _decision_out(decision)


@router.get(
    "/decisions/{decision_id}/receipt",
    response={200: ReceiptOut, 202: ReceiptOut, **ERRORS, 409: ErrorOut, 422: ErrorOut},
    url_name="decision_receipt",
)
def get_receipt(
    request: HttpRequest,
    decision_id: uuid.UUID,
    response: HttpResponse,
    tree_size: int | None = Query(default=None, ge=1),
) -> Any:
    """The decision's receipt: leaf, signed promise and, once integrated, the inclusion proof
    against the latest checkpoint (or the kept one of ``tree_size``). 202 with Retry-After
    while not integrated. Check it offline: ``python -m gatehouse.tlog.verify``."""
    decision = selectors.decision_get(
        user=request.user, key=api_key_of(request), decision_id=str(decision_id)
    )
    body = selectors.decision_receipt(decision=decision, tree_size=tree_size)
    if body["status"] != "integrated":
        response["Retry-After"] = str(receipts.retry_after_s())
        return Status(202, body)
    return body


@router.post(
    "/decisions/{decision_id}/outcome", response={200: DecisionOut, **ERRORS, 422: ErrorOut}
)
def record_outcome(request: HttpRequest, decision_id: uuid.UUID, payload: OutcomeIn) -> Any:
    """Record the ground truth of a decision (for monitoring and bias reports)."""
    decision = selectors.decision_get(
        user=request.user, key=api_key_of(request), decision_id=str(decision_id)
    )
    services.outcome_record(decision=decision, label=payload.label, user=request.user)
    return _decision_out(
        selectors.decision_get(
            user=request.user, key=api_key_of(request), decision_id=str(decision_id)
        )
    )


# --- Batch scoring ------------------------------------------------------------------------------


class BatchRowErrorOut(Schema):
    row: int = Field(description="1-based data row of the uploaded CSV.")
    error: str


class BatchJobOut(Schema):
    id: str
    family: str
    status: str = Field(description="queued, running, done or failed.")
    input_name: str
    input_sha256: str
    subject_column: str
    purpose: str
    total_rows: int
    rows_done: int = Field(description="Rows processed so far: scored or refused.")
    rows_scored: int
    rows_failed: int = Field(description="Rows refused as invalid (see row_errors).")
    progress: float = Field(description="rows_done / total_rows, 0 to 1.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str
    result_sha256: str | None
    result_url: str | None
    row_errors: list[BatchRowErrorOut] = Field(description="The first refused rows.")


def _batch_out(job: BatchJob) -> BatchJobOut:
    done = job.status == BatchStatus.DONE and bool(job.result_sha256)
    return BatchJobOut(
        id=str(job.id),
        family=job.family.slug,
        status=job.status,
        input_name=job.input_name,
        input_sha256=job.input_sha256,
        subject_column=job.subject_column,
        purpose=job.purpose,
        total_rows=job.total_rows,
        rows_done=job.rows_done,
        rows_scored=job.rows_scored,
        rows_failed=job.rows_failed,
        progress=round(job.rows_done / job.total_rows, 4) if job.total_rows else 0.0,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job.error,
        result_sha256=job.result_sha256 if done else None,
        result_url=reverse("api:batch_result", kwargs={"job_id": job.id}) if done else None,
        row_errors=[BatchRowErrorOut(**e) for e in batch.batch_row_errors(job=job)],
    )


@router.post(
    "/models/{family}/batch",
    response={202: BatchJobOut, **PREDICT_ERRORS, 429: ErrorOut},
    url_name="batch_submit",
)
def submit_batch(
    request: HttpRequest,
    family: str,
    file: UploadedFile = File(...),  # noqa: B008
    purpose: Form[str] = "",
    subject_column: Form[str] = "",
) -> Status[BatchJobOut]:
    """Score a CSV in the background: multipart with ``file`` (a header row naming the
    columns: every model input of the serving version, optionally non-input features and the
    subject column), ``purpose`` and ``subject_column`` (required when the family needs
    consent). 202 once the job is queued; a header that does not fit is 422 and nothing is
    stored; 503 when the queue is unavailable (the job is then not accepted)."""
    require_key_scope(request, action="predict")
    key = api_key_of(request)
    fam = registry_selectors.family_get(
        user=request.user, slug=family, action=FamilyAction.PREDICT, key=key
    )
    job = batch.batch_submit(
        family=fam,
        user=request.user,
        key=key,
        file=file,
        filename=file.name or "",
        purpose=purpose,
        subject_column=subject_column,
        request_id=getattr(request, "request_id", ""),
    )
    return Status(202, _batch_out(job))


@router.get("/batch/{job_id}", response={200: BatchJobOut, **ERRORS}, url_name="batch_job")
def get_batch(request: HttpRequest, job_id: uuid.UUID) -> BatchJobOut:
    """Status and progress of one of the caller's batch jobs (others: 404)."""
    require_key_scope(request, action="predict")
    job = batch.batch_job_get(user=request.user, key=api_key_of(request), job_id=job_id)
    return _batch_out(job)


@router.get(
    "/batch/{job_id}/result",
    response={**ERRORS, 409: ErrorOut},
    url_name="batch_result",
    openapi_extra={
        "responses": {
            200: {
                "description": "The input columns, then decision_id, label, score_<label> "
                "for each label, and error (for rows that were not scored).",
                "content": {"text/csv": {"schema": {"type": "string"}}},
            }
        }
    },
)
def get_batch_result(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    """The result CSV of a done job, one line per input row in input order (409 before)."""
    require_key_scope(request, action="predict")
    job = batch.batch_job_get(user=request.user, key=api_key_of(request), job_id=job_id)
    response = HttpResponse(batch.batch_result(job=job), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="batch-{job.id}.csv"'
    return response
