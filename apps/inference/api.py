"""Inference endpoints: ``/api/v1/models/{family}`` (describe, predict, routing) and
``/api/v1/decisions/{id}`` (read, outcome)."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest
from ninja import Header, Router

from apps.inference import routing, selectors, services
from apps.inference.models import RoutingConfig
from apps.inference.schemas import (
    DecisionOut,
    ModelDescriptionOut,
    OutcomeIn,
    PredictIn,
    PredictOut,
    RoutingIn,
    RoutingOut,
)
from apps.registry import selectors as registry_selectors
from apps.registry.permissions import FamilyAction
from gatehouse.auth import api_key_of, require_key_scope
from gatehouse.schemas import ErrorOut

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
    fam = registry_selectors.family_get(
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
        scores=decision.scores,
        outcome=outcome.label if outcome else None,
    )


@router.get("/decisions/{decision_id}", response={200: DecisionOut, **ERRORS})
def get_decision(request: HttpRequest, decision_id: uuid.UUID) -> DecisionOut:
    decision = selectors.decision_get(
        user=request.user, key=api_key_of(request), decision_id=str(decision_id)
    )
    return _decision_out(decision)


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
