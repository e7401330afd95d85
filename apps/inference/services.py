"""The prediction path: check, route, validate, predict, record (transparency log), reply.

Every served row gets exactly one decision record, committed before the reply leaves; a
refused or failed request records none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.urls import reverse

from apps.inference import policy, records, routing
from apps.inference.backends import get_backend
from apps.inference.models import Decision, IdempotentReply, OutputMode, RoutingConfig
from apps.registry import encoding
from apps.registry.models import ModelFamily, ModelVersion
from gatehouse.errors import Conflict, PayloadTooLarge, ValidationFailed
from gatehouse.models import ApiKey
from gatehouse.pseudonyms import pseudonymise
from gatehouse.tlog import tree
from gatehouse.tlog.verify import b64

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictRequest:
    rows: list[dict[str, Any]]
    subject: str = ""
    purpose: str = ""
    jurisdiction: str = ""
    idempotency_key: str = ""
    request_id: str = ""


def _actor_tag(user: Any, key: ApiKey | None) -> str:
    return f"key:{key.pk}" if key is not None else f"user:{user.pk}"


def _digest(family: ModelFamily, request: PredictRequest) -> str:
    body = {
        "family": family.slug,
        "rows": request.rows,
        "subject": request.subject,
        "purpose": request.purpose,
        "jurisdiction": request.jurisdiction,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _validate_rows(version: ModelVersion, config: RoutingConfig, rows: list[Any]) -> None:
    if not rows:
        raise ValidationFailed.for_field("rows", "At least one row is required.")
    if len(rows) > config.max_rows:
        raise PayloadTooLarge(
            f"rows: at most {config.max_rows} rows per request, got {len(rows)}.",
            errors=[
                {"field": "rows", "message": f"at most {config.max_rows}", "type": "too_many_rows"}
            ],
        )
    errors = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            errors.append({"field": f"rows.{i}", "message": "must be an object", "type": "type"})
            continue
        for field, message in encoding.check_row(version.signature, row):
            errors.append({"field": f"rows.{i}.{field}", "message": message, "type": "invalid"})
    if errors:
        fields = ", ".join(e["field"] for e in errors[:5])
        raise ValidationFailed(f"Invalid rows: {fields}.", errors=errors[:100])


def _recorded_inputs(version: ModelVersion, row: dict[str, Any]) -> dict[str, Any]:
    """Inputs as recorded: ``pii`` features pseudonymised, so no raw identifier is kept."""
    out: dict[str, Any] = {}
    for feature in version.signature["features"]:
        value = row.get(feature["name"])
        if value is not None and feature.get("pii"):
            value = pseudonymise(str(value))
        out[feature["name"]] = value
    return out


def _shape_output(labels: list[str], probabilities: list[float]) -> tuple[str, dict[str, float]]:
    best = max(range(len(labels)), key=lambda i: probabilities[i])
    scores = {label: round(float(p), 6) for label, p in zip(labels, probabilities, strict=True)}
    return labels[best], scores


def reply_scores(scores: dict[str, float], config: RoutingConfig) -> dict[str, float] | None:
    if config.output_mode == OutputMode.LABEL:
        return None
    if config.output_mode == OutputMode.TOP_K:
        top = sorted(scores.items(), key=lambda item: -item[1])[: max(1, config.top_k)]
        return {label: round(p, 2) for label, p in top}
    return scores


def build_decisions(
    *,
    family: ModelFamily,
    version: ModelVersion,
    route: str,
    user: Any,
    key: ApiKey | None,
    request: PredictRequest,
    probabilities: list[list[float]],
    latency_ms: float,
    pseudonym: str,
    policy_ref: str = "",
) -> list[Decision]:
    """Unsaved decision records for served rows; ``records.record`` stores them and queues
    their leaves (callers that record many requests record them together)."""
    labels = version.signature["output"]["labels"]
    decisions: list[Decision] = []
    for index, (row, probs) in enumerate(zip(request.rows, probabilities, strict=True)):
        label, scores = _shape_output(labels, probs)
        inputs = _recorded_inputs(version, row)
        salt = records.new_salt()
        decisions.append(
            Decision(
                request_id=request.request_id,
                family=family,
                version=version,
                version_label=version.version,
                artifact_sha256=version.artifact_sha256,
                route=route,
                actor_user=user if getattr(user, "is_authenticated", False) else None,
                api_key=key,
                purpose=request.purpose,
                jurisdiction=request.jurisdiction,
                row_index=index,
                label=label,
                scores=scores,
                latency_ms=latency_ms,
                subject_pseudonym=pseudonym,
                inputs=inputs,
                policy_ref=policy_ref,
                payload_salt=salt,
                payload_digest=records.payload_digest(
                    salt, subject_pseudonym=pseudonym, inputs=inputs, label=label, scores=scores
                ),
            )
        )
    return decisions


def predict(
    *, family: ModelFamily, user: Any, key: ApiKey | None, request: PredictRequest
) -> tuple[int, dict[str, Any]]:
    """Serve ``request`` for ``family`` (access already checked); (status, body) of the reply.

    A refused or failed request records no decision; the failure hooks see it.
    """
    try:
        return _predict(family=family, user=user, key=key, request=request)
    except Exception as exc:
        policy.run_failure_hooks(family, exc)
        raise


def _predict(
    *, family: ModelFamily, user: Any, key: ApiKey | None, request: PredictRequest
) -> tuple[int, dict[str, Any]]:
    started = time.perf_counter()
    actor = _actor_tag(user, key)
    if request.idempotency_key:
        previous = IdempotentReply.objects.filter(actor=actor, key=request.idempotency_key).first()
        if previous is not None:
            return _replay(previous, family, request)
    serving = routing.serving(family)
    config = serving.config
    routing.ensure_serving(family, config)  # the kill-switch answers before anything else
    if family.consent_purpose and not request.subject:
        raise ValidationFailed.for_field(
            "subject",
            f"is required: '{family.slug}' needs consent for '{family.consent_purpose}'.",
            code="required",
        )
    pseudonym = pseudonymise(request.subject) if request.subject else ""
    policy_ref = policy.run_checks(
        policy.PredictContext(
            family=family,
            user=user,
            subject_pseudonym=pseudonym,
            purpose=request.purpose,
            jurisdiction=request.jurisdiction,
            n_rows=len(request.rows),
        )
    )
    choice = routing.choose_among(
        family=family,
        config=config,
        production=serving.production,
        sticky_key=pseudonym or request.request_id,
        jurisdiction=request.jurisdiction,
    )
    version = choice.version
    _validate_rows(version, config, request.rows)
    probabilities = get_backend().predict(version, request.rows)
    latency_ms = (time.perf_counter() - started) * 1000
    decisions = build_decisions(
        family=family,
        version=version,
        route=choice.route,
        user=user,
        key=key,
        request=request,
        probabilities=probabilities,
        latency_ms=latency_ms,
        pseudonym=pseudonym,
        policy_ref=policy_ref,
    )
    # Leaves and signed promises before the transaction: they depend on the records alone, and
    # signing must not hold a write lock (SQLite's is the whole database's).
    entries = records.entries(decisions)
    body = _body(family, decisions, entries, config)
    try:
        with transaction.atomic():
            records.record(decisions, entries)
            policy.run_recorded_hooks(decisions, request.rows)
            if request.idempotency_key:
                IdempotentReply.objects.create(
                    actor=actor,
                    key=request.idempotency_key,
                    request_digest=_digest(family, request),
                    status=200,
                    body=body,
                )
    except IntegrityError:
        if not request.idempotency_key:
            raise
        # A concurrent retry with the same key won: answer what it answered.
        previous = IdempotentReply.objects.filter(actor=actor, key=request.idempotency_key).first()
        if previous is None:
            raise
        return _replay(previous, family, request)
    if config.shadow_version_id:
        _shadow(config, request, decisions)
    return 200, body


def _body(
    family: ModelFamily,
    decisions: list[Decision],
    entries: list[tree.Entry],
    config: RoutingConfig,
) -> dict[str, Any]:
    return {
        "model": family.slug,
        "predictions": [
            {
                "decision_id": str(d.id),
                "label": d.label,
                "scores": reply_scores(d.scores, config),
                "model_version": d.version_label,
                "route": d.route,
                "receipt": receipt_promise(d, entry),
            }
            for d, entry in zip(decisions, entries, strict=True)
        ],
    }


def receipt_promise(decision: Decision, entry: tree.Entry) -> dict[str, str]:
    """What the reply carries of the log at once: the leaf hash and the signed promise to
    integrate it; the inclusion proof is at ``url`` once integrated."""
    return {
        "leaf_hash": b64(entry.leaf_hash),
        "promise": records.promise(decision, entry),
        "url": reverse("api:decision_receipt", kwargs={"decision_id": decision.id}),
    }


def _replay(
    previous: IdempotentReply, family: ModelFamily, request: PredictRequest
) -> tuple[int, dict[str, Any]]:
    if previous.request_digest != _digest(family, request):
        raise Conflict(
            "This Idempotency-Key was used with a different request.", code="idempotency_conflict"
        )
    return previous.status, previous.body


def _shadow(config: RoutingConfig, request: PredictRequest, served: list[Decision]) -> None:
    """Run the shadow version on a copy after commit, off the request thread; never returned."""
    from apps.inference.shadow import submit

    shadow = config.shadow_version
    if shadow is None or shadow.pk == served[0].version_id or shadow.status not in routing.SERVABLE:
        return  # only approved versions receive traffic, shadow traffic too
    pseudonym = served[0].subject_pseudonym
    transaction.on_commit(
        lambda: submit(shadow_version_id=shadow.pk, request=request, pseudonym=pseudonym)
    )


@transaction.atomic
def routing_update(*, family: ModelFamily, user: Any, data: dict[str, Any]) -> RoutingConfig:
    """Change how a family is served; effective on the next request, audited."""
    from apps.inference.routing import SERVABLE

    config = routing.routing_for(family)

    def servable(label: str | None, field: str) -> ModelVersion | None:
        if not label:
            return None
        version = ModelVersion.objects.filter(family=family, version=label).first()
        if version is None or version.status not in SERVABLE:
            raise ValidationFailed.for_field(field, f"{label} is not an approved version.")
        return version

    config.canary_version = servable(data.get("canary_version"), "canary_version")
    config.shadow_version = servable(data.get("shadow_version"), "shadow_version")
    for name in (
        "suspended",
        "suspended_reason",
        "canary_percent",
        "output_mode",
        "top_k",
        "max_rows",
        "jurisdiction_rules",
    ):
        if name in data:
            setattr(config, name, data[name])
    config.updated_by = user
    config.save()
    logger.info("routing of %s changed by user %s", family.slug, user.pk)
    return config


@transaction.atomic
def outcome_record(*, decision: Decision, label: str, user: Any) -> Any:
    from apps.inference.models import Outcome

    labels = decision.version.signature["output"]["labels"]
    if label not in labels:
        raise ValidationFailed.for_field("label", f"must be one of {', '.join(labels)}")
    outcome, _ = Outcome.objects.update_or_create(
        decision=decision,
        defaults={"label": label, "recorded_by": user if user.is_authenticated else None},
    )
    return outcome


def idempotent_replies_purge(*, older_than_hours: int | None = None) -> int:
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    hours = settings.IDEMPOTENCY_TTL_HOURS if older_than_hours is None else older_than_hours
    cutoff = timezone.now() - timedelta(hours=hours)
    deleted, _ = IdempotentReply.objects.filter(created_at__lt=cutoff).delete()
    return deleted


@transaction.atomic
def subject_records_erase(*, pseudonym: str) -> dict[str, int]:
    """Erase a data subject from the inference records (GDPR 17); counts per store.

    Decision records keep their place in the log but lose the personal payload (pseudonym,
    inputs, outputs, salt): their leaves cover only the payload's salted digest, so it still
    verifies and the digest can no longer be linked to anyone. The subject's outcomes, the
    outputs copied into batch rows and cached idempotent replies go too. Idempotent.
    """

    from apps.inference.models import BatchRow, Outcome

    ids = list(Decision.objects.filter(subject_pseudonym=pseudonym).values_list("id", flat=True))
    outcomes, _ = Outcome.objects.filter(decision_id__in=ids).delete()
    batch_rows = (
        BatchRow.objects.filter(decision_id__in=ids)
        .exclude(label="", scores=None)
        .update(label="", scores=None)
    )
    wanted = {str(i) for i in ids}
    replies = [
        reply.pk
        for reply in IdempotentReply.objects.only("pk", "body")
        if wanted & {p.get("decision_id") for p in (reply.body or {}).get("predictions", [])}
    ]
    IdempotentReply.objects.filter(pk__in=replies).delete()
    decisions = _erase_payloads(Decision.objects.filter(id__in=ids))
    return {
        "decision_payloads": decisions,
        "outcomes": outcomes,
        "batch_rows": batch_rows,
        "idempotent_replies": len(replies),
    }


def _erase_payloads(decisions: Any) -> int:
    """Remove the personal payload of ``decisions`` (a queryset), keeping their leaves."""
    from django.utils import timezone

    return int(
        decisions.update(
            subject_pseudonym="",
            inputs=None,
            label="",
            scores={},
            payload_salt="",
            erased_at=timezone.now(),
        )
    )


@dataclass(frozen=True)
class RetentionResult:
    expired: list[Any]  # ids of the records deleted by this purge
    deleted: int  # records deleted (their leaves stay in the log)
    cascaded: dict[str, int]  # rows deleted with them, per model label


@transaction.atomic
def decisions_retention_purge(*, now: Any = None) -> RetentionResult:
    """Apply each family's retention (unless on legal hold): records past it lose their
    payload and are deleted; their leaves and the nodes above them stay, marked purged, so the
    rest of the log and the receipts of kept records still verify."""
    from datetime import timedelta

    from django.db.models import Q
    from django.utils import timezone

    from apps.inference.models import BatchRow, Outcome

    now = now or timezone.now()
    expired_q = Q(pk__in=[])
    for family in ModelFamily.objects.filter(legal_hold=False):
        expired_q |= Q(family=family, created_at__lt=now - timedelta(days=family.retention_days))
    expired = list(Decision.objects.filter(expired_q).values_list("id", flat=True))
    Outcome.objects.filter(decision_id__in=expired).delete()
    BatchRow.objects.filter(decision_id__in=expired).update(decision=None)
    _, per_model = Decision.objects.filter(id__in=expired).delete()
    records.forget(expired, when=now)
    deleted = per_model.get(Decision._meta.label, 0)
    if expired:
        logger.info("retention: %d records expired and deleted", deleted)
    return RetentionResult(expired=expired, deleted=deleted, cascaded=per_model)
