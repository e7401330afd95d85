"""Compliance actions: consent, the consent check, explanations, human review, subject access.

Erasure lives in ``apps.compliance.erasure`` and bias reports in ``apps.compliance.bias``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.compliance import explain
from apps.compliance.models import (
    Consent,
    ConsentRefusal,
    DataSubject,
    Explanation,
    ExplanationStatus,
    Review,
    ReviewStatus,
    ReviewTrigger,
    SubjectReference,
)
from apps.inference.models import Decision, Route
from apps.inference.policy import PredictContext
from apps.registry.models import ModelFamily
from gatehouse.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from gatehouse.models import ApiKey
from gatehouse.pseudonyms import pseudonymise
from gatehouse.roles import Role, has_role

logger = logging.getLogger(__name__)


class ConsentRequired(PermissionDenied):
    code = "consent_required"


# --- Subjects and consent ------------------------------------------------------------------


def known_purposes() -> set[str]:
    """The consent purposes the platform knows: those some model family requires."""
    return set(
        ModelFamily.objects.exclude(consent_purpose="").values_list("consent_purpose", flat=True)
    )


def subject_ensure(reference: str) -> DataSubject:
    """The subject of an external reference, created (pseudonym + reference) on first sight."""
    reference = reference.strip()
    if not reference:
        raise ValidationFailed.for_field("subject", "is required", code="required")
    subject, _ = DataSubject.objects.get_or_create(pseudonym=pseudonymise(reference))
    SubjectReference.objects.get_or_create(subject=subject, defaults={"reference": reference})
    return subject


def subject_find(reference: str) -> DataSubject:
    """An existing subject, or 404 (a reference the platform never saw)."""
    subject = DataSubject.objects.filter(pseudonym=pseudonymise(reference.strip())).first()
    if subject is None:
        raise NotFound("No data subject with this reference.")
    return subject


@transaction.atomic
def consent_record(
    *,
    reference: str,
    purpose: str,
    granted: bool,
    notice_version: str,
    source: str,
    user: Any,
    key: ApiKey | None = None,
) -> Consent:
    """Record a grant or a withdrawal; effective on the very next prediction."""
    if purpose not in known_purposes():
        raise ValidationFailed.for_field(
            "purpose", f"'{purpose}' is not a purpose any model requires consent for."
        )
    if not notice_version.strip():
        raise ValidationFailed.for_field("notice_version", "is required", code="required")
    subject = subject_ensure(reference)
    consent = Consent.objects.create(
        subject=subject,
        purpose=purpose,
        granted=granted,
        notice_version=notice_version.strip(),
        source=source,
        recorded_by=user if getattr(user, "is_authenticated", False) else None,
        api_key=key,
    )
    logger.info("consent %s for %s recorded", "grant" if granted else "withdrawal", purpose)
    return consent


def consent_latest(*, pseudonym: str, purpose: str) -> tuple[bool, int] | None:
    """(granted, consent id) of the subject's latest choice for ``purpose``, or None."""
    return (
        Consent.objects.filter(subject__pseudonym=pseudonym, purpose=purpose)
        .order_by("-id")
        .values_list("granted", "id")
        .first()
    )


def consent_current(*, pseudonym: str, purpose: str) -> bool | None:
    """The subject's current choice for ``purpose``: True, False (withdrawn) or None (never)."""
    latest = consent_latest(pseudonym=pseudonym, purpose=purpose)
    return None if latest is None else latest[0]


def consent_check(context: PredictContext) -> str | None:
    """The pre-predict policy check: a family that requires a purpose needs the subject's
    current consent to it; the consent event that allows it is recorded in the decision
    (``consent:<id>``). A refusal is recorded without the inputs."""
    purpose = context.family.consent_purpose
    if not purpose:
        return None
    latest = consent_latest(pseudonym=context.subject_pseudonym, purpose=purpose)
    if latest is not None and latest[0]:
        return f"consent:{latest[1]}"
    state = None if latest is None else latest[0]
    reason = "never_given" if state is None else "withdrawn"
    ConsentRefusal.objects.create(
        family=context.family,
        purpose=purpose,
        subject_pseudonym=context.subject_pseudonym,
        reason=reason,
        actor_user=context.user if getattr(context.user, "is_authenticated", False) else None,
    )
    what = "has withdrawn consent" if state is False else "has not given consent"
    raise ConsentRequired(f"The subject {what} for '{purpose}'; no prediction was made.")


# --- Explanations and review rules (run when decisions are recorded) -----------------------


def on_decisions_recorded(decisions: Sequence[Decision], rows: Sequence[dict[str, Any]]) -> None:
    """Inside the transaction that records served decisions: explain them (inline when the
    model is linear, else by a task after commit) and open reviews the family's rule asks for."""
    served = [(d, r) for d, r in zip(decisions, rows, strict=True) if d.route != Route.SHADOW]
    if not served:
        return
    family = served[0][0].family
    if family.explain_decisions:
        _explain_new(served)
    if family.review_below_confidence is not None or family.review_labels:
        for decision, _ in served:
            if reason := _review_reason(family, decision):
                Review.objects.create(  # one by one: each opened review is audited
                    decision=decision,
                    family=family,
                    subject_pseudonym=decision.subject_pseudonym,
                    trigger=ReviewTrigger.RULE,
                    request_reason=reason,
                )


def _review_reason(family: ModelFamily, decision: Decision) -> str:
    if decision.label in (family.review_labels or []):
        return f"Adverse outcome '{decision.label}' is always reviewed."
    top = max(decision.scores.values()) if decision.scores else 1.0
    threshold = family.review_below_confidence
    if threshold is not None and top < threshold:
        return f"Low confidence: {top:.2f} < {threshold:.2f}."
    return ""


def _explain_new(served: list[tuple[Decision, dict[str, Any]]]) -> None:
    by_version: dict[int, list[tuple[Decision, dict[str, Any]]]] = {}
    for decision, row in served:
        by_version.setdefault(decision.version_id, []).append((decision, row))
    pending: list[str] = []
    for items in by_version.values():
        version = items[0][0].version
        if explain.method_for(version) == explain.LINEAR:
            _store(items, inline=True)
        else:
            _store(items, inline=False)
            pending.extend(str(d.id) for d, _ in items)
    if pending:
        transaction.on_commit(lambda: _queue_explanations(pending))


def _queue_explanations(pending: list[str]) -> None:
    """Queue the explanations of committed decisions. The prediction is already recorded and
    must still be answered when the broker is down: the explanations stay pending and
    ``compliance.resume_explanations`` sends them again. No result is kept (none is read), so
    queueing never waits on the result backend's reconnection retries."""
    from apps.compliance.tasks import explain_decisions

    try:
        explain_decisions.apply_async(args=(pending,), ignore_result=True)
    except Exception:
        logger.warning(
            "explanations of %d decision(s) not queued (broker unavailable); left pending for "
            "compliance.resume_explanations",
            len(pending),
            exc_info=True,
        )


def _store(items: list[tuple[Decision, dict[str, Any]]], *, inline: bool) -> None:
    version = items[0][0].version
    results: list[explain.Attribution | None] = [None] * len(items)
    error = ""
    if inline:
        try:
            results = list(
                explain.explain_rows(version, [r for _, r in items], [d.label for d, _ in items])
            )
        except Exception as exc:  # an explanation failure must not fail the served decision
            logger.exception("explaining %d decisions of %s failed", len(items), version)
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
    Explanation.objects.bulk_create(
        [
            _explanation(decision, version, result, error if inline else "")
            for (decision, _), result in zip(items, results, strict=True)
        ]
    )


def _explanation(
    decision: Decision, version: Any, result: explain.Attribution | None, error: str
) -> Explanation:
    explanation = Explanation(decision=decision, version=version, target=decision.label)
    if result is not None:
        _fill(explanation, result)
    elif error:
        explanation.status, explanation.error = ExplanationStatus.FAILED, error
    return explanation


def _fill(explanation: Explanation, result: explain.Attribution) -> None:
    explanation.status = ExplanationStatus.DONE
    explanation.method = result.method
    explanation.target = result.target
    explanation.output_kind = result.output_kind
    explanation.baseline = result.baseline
    explanation.output = result.output
    explanation.baseline_output = result.baseline_output
    explanation.attributions = result.attributions
    explanation.convergence_delta = result.convergence_delta
    explanation.error = ""
    explanation.computed_at = timezone.now()


def explanations_compute(decision_ids: Sequence[str]) -> int:
    """Compute pending explanations from the recorded inputs (the task's work); idempotent."""
    todo = list(
        Explanation.objects.select_related("decision", "version")
        .filter(decision_id__in=decision_ids)
        .exclude(status=ExplanationStatus.DONE)
    )
    by_version: dict[int, list[Explanation]] = {}
    for item in todo:
        by_version.setdefault(item.version_id, []).append(item)
    done = 0
    for items in by_version.values():
        usable = [e for e in items if e.decision.erased_at is None and e.decision.inputs]
        try:
            results = explain.explain_rows(
                items[0].version,
                [e.decision.inputs or {} for e in usable],
                [e.decision.label for e in usable],
            )
        except Exception as exc:
            logger.exception("explaining %d decisions failed", len(usable))
            for item in usable:
                item.status = ExplanationStatus.FAILED
                item.error = f"{type(exc).__name__}: {str(exc)[:200]}"
                item.save(update_fields=["status", "error"])
            continue
        for item, result in zip(usable, results, strict=True):
            _fill(item, result)
            item.save()
            done += 1
    return done


def explanation_for(decision: Decision) -> Explanation:
    """The decision's explanation; a decision made without one gets it computed now, from the
    version that made it and the recorded input (inline when linear, else queued)."""
    existing = Explanation.objects.filter(decision=decision).first()
    if existing is not None:
        return existing
    if decision.route == Route.SHADOW or decision.erased_at is not None or not decision.inputs:
        raise NotFound("This decision has no explanation (shadow or erased).")
    with transaction.atomic():
        _explain_new([(decision, decision.inputs)])
    return Explanation.objects.get(decision=decision)


# --- Human review ----------------------------------------------------------------------------


@transaction.atomic
def review_request(
    *, decision: Decision, user: Any, key: ApiKey | None, reason: str, by_subject: bool
) -> Review:
    """Send a decision to human review (contested by the subject, or by staff)."""
    if decision.route == Route.SHADOW:
        raise NotFound("No such decision.")
    if not reason.strip():
        raise ValidationFailed.for_field("reason", "A reason is required.", code="required")
    review, created = Review.objects.get_or_create(
        decision=decision,
        defaults={
            "family": decision.family,
            "subject_pseudonym": decision.subject_pseudonym,
            "trigger": ReviewTrigger.SUBJECT if by_subject else ReviewTrigger.STAFF,
            "request_reason": reason.strip()[:2000],
            "requested_by": user if getattr(user, "is_authenticated", False) else None,
        },
    )
    if not created and review.status != ReviewStatus.OPEN:
        raise Conflict("This decision was reviewed already.", code="already_reviewed")
    return review


def can_review(user: Any, family: ModelFamily) -> bool:
    from apps.registry.permissions import FamilyAction

    return has_role(user, Role.COMPLIANCE_OFFICER) or user.has_perm(
        FamilyAction.APPROVE.perm, family
    )


@transaction.atomic
def review_decide(*, review_id: int, user: Any, final_label: str, reason: str) -> Review:
    """Confirm or override a decision under review; the result is the decision's effective
    outcome from now on. Needs a compliance officer or an approver of the family."""
    review = (
        Review.objects.select_for_update()
        .select_related("decision", "decision__version", "family")
        .filter(pk=review_id)
        .first()
    )
    if review is None or not can_review(user, review.family):
        raise NotFound("No such review.")
    if review.status != ReviewStatus.OPEN:
        raise Conflict("This review is closed.", code="already_reviewed")
    labels = review.decision.version.signature["output"]["labels"]
    if final_label not in labels:
        raise ValidationFailed.for_field("final_label", f"must be one of {', '.join(labels)}")
    if not reason.strip():
        raise ValidationFailed.for_field("reason", "A written reason is required.")
    review.final_label = final_label
    review.status = (
        ReviewStatus.CONFIRMED if final_label == review.decision.label else ReviewStatus.OVERRIDDEN
    )
    review.reviewer = user
    review.reviewed_at = timezone.now()
    review.review_reason = reason.strip()[:2000]
    review.save()
    return review


def effective_label(decision: Decision) -> str:
    review = getattr(decision, "review", None)
    if review is not None and review.status == ReviewStatus.OVERRIDDEN:
        return review.final_label
    return decision.label


# --- Retention ---------------------------------------------------------------------------------


@transaction.atomic
def retention_purge(*, now: Any = None) -> dict[str, int]:
    """The scheduled purge: decision records past their family's retention (unless on legal
    hold) are deleted with their explanation and review; their leaves stay in the log, so it
    still verifies."""
    from apps.inference import services as inference_services

    result = inference_services.decisions_retention_purge(now=now)
    return {
        "expired": len(result.expired),
        "deleted": result.deleted,
        "explanations": result.cascaded.get(Explanation._meta.label, 0),
        "reviews": result.cascaded.get(Review._meta.label, 0),
    }


def explanations_stalled(*, stale_s: int = 60) -> list[str]:
    """Decision ids whose explanation has been pending for ``stale_s`` (a lost task message:
    the file-system broker loses what a killed worker had taken)."""
    from datetime import timedelta

    cutoff = timezone.now() - timedelta(seconds=stale_s)
    return [
        str(pk)
        for pk in Explanation.objects.filter(
            status=ExplanationStatus.PENDING, created_at__lt=cutoff
        ).values_list("decision_id", flat=True)[:5000]
    ]
