"""Reads of the compliance app, scoped to the caller."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from apps.compliance import explain
from apps.compliance.models import (
    BiasReport,
    Consent,
    DataSubject,
    ErasureRequest,
    Explanation,
    Review,
    ReviewStatus,
)
from apps.compliance.services import can_review, effective_label, subject_find
from apps.inference import selectors as inference_selectors
from apps.inference.models import Decision, Route
from apps.registry.models import ModelVersion
from gatehouse.errors import Conflict, NotFound, PermissionDenied
from gatehouse.models import ApiKey
from gatehouse.roles import Role, has_role


def require_officer(user: Any, key: ApiKey | None = None) -> None:
    """Compliance officers in a browser session (2FA is enforced by the session auth)."""
    if key is not None or not has_role(user, Role.COMPLIANCE_OFFICER, Role.ADMIN):
        raise PermissionDenied("Only compliance officers may see data subjects.")


def may_act_for_subjects(user: Any, key: ApiKey | None) -> bool:
    """Compliance officers, or a partner system's key allowed 'subjects' (consent, review and
    erasure requests on the subject's behalf)."""
    if key is not None:
        # A key never adds rights: its owner must be a partner system's account (an API
        # consumer) or a compliance officer.
        return key.allows("subjects") and has_role(
            key.user, Role.API_CONSUMER, Role.COMPLIANCE_OFFICER
        )
    return has_role(user, Role.COMPLIANCE_OFFICER)


def consent_history(*, user: Any, key: ApiKey | None, reference: str) -> list[Consent]:
    if not may_act_for_subjects(user, key):
        raise PermissionDenied("You may not read consent records.")
    subject = subject_find(reference)
    return list(Consent.objects.filter(subject=subject).select_related("recorded_by"))


def consent_state(consents: list[Consent]) -> dict[str, bool]:
    """The current choice per purpose (consents are newest first)."""
    state: dict[str, bool] = {}
    for consent in consents:
        state.setdefault(consent.purpose, consent.granted)
    return state


def explanation_view(explanation: Explanation) -> dict[str, Any]:
    decision = explanation.decision
    ranked = sorted(explanation.attributions.items(), key=lambda item: -abs(item[1]))
    return {
        "decision_id": str(decision.id),
        "status": explanation.status,
        "model": decision.family.slug,
        "model_version": explanation.version.version,
        "artifact_sha256": decision.artifact_sha256,
        "method": explanation.method,
        "target": explanation.target,
        "output_kind": explanation.output_kind,
        "baseline": explanation.baseline,
        "output": explanation.output,
        "baseline_output": explanation.baseline_output,
        "convergence_delta": explanation.convergence_delta,
        "attributions": dict(ranked),
        "reasons": explain.reasons(explanation.attributions, explanation.target),
        "error": explanation.error,
        "computed_at": explanation.computed_at,
    }


def review_queue(*, user: Any, status: str = ReviewStatus.OPEN) -> list[Review]:
    reviews = (
        Review.objects.filter(status=status)
        .select_related("decision", "family", "decision__version")
        .order_by("requested_at")
    )
    return [r for r in reviews[:500] if can_review(user, r.family)]


def review_get(*, user: Any, review_id: int) -> Review:
    review = (
        Review.objects.select_related("decision", "family", "decision__version", "reviewer")
        .filter(pk=review_id)
        .first()
    )
    if review is None or not can_review(user, review.family):
        raise NotFound("No such review.")
    return review


def subject_export(*, user: Any, reference: str, receipts: bool = True) -> dict[str, Any]:
    """Everything held about a subject (GDPR 15): consents, decisions with their explanation,
    review, effective outcome and log receipt, refusals, open erasure requests.
    ``receipts=False`` leaves the receipts out (a few queries each) where only a summary is
    shown."""
    require_officer(user)
    subject = subject_find(reference)
    return _export(subject, reference, receipts=receipts)


def _receipt(decision: Decision) -> dict[str, Any] | None:
    """The decision's log receipt (``None`` for a record the log does not hold or that no longer
    matches its logged leaf, which verification reports; the export is still given)."""
    try:
        return inference_selectors.decision_receipt(decision=decision)
    except (NotFound, Conflict):
        return None


def _export(subject: DataSubject, reference: str, *, receipts: bool = True) -> dict[str, Any]:
    consents = list(Consent.objects.filter(subject=subject))
    decisions = (
        Decision.objects.filter(subject_pseudonym=subject.pseudonym)
        .exclude(route=Route.SHADOW)
        .select_related("family", "explanation", "explanation__version", "review", "outcome")
        .order_by("created_at")
    )
    out_decisions = []
    for d in decisions:
        explanation = getattr(d, "explanation", None)
        review = getattr(d, "review", None)
        outcome = getattr(d, "outcome", None)
        out_decisions.append(
            {
                "decision_id": str(d.id),
                "made_at": d.created_at,
                "model": d.family.slug,
                "model_version": d.version_label,
                "purpose": d.purpose,
                "inputs": d.inputs,
                "label": d.label,
                "scores": d.scores,
                "effective_outcome": effective_label(d),
                "explanation": explanation_view(explanation) if explanation else None,
                "review": (
                    {
                        "status": review.status,
                        "requested_at": review.requested_at,
                        "request_reason": review.request_reason,
                        "final_label": review.final_label,
                        "reason": review.review_reason,
                        "reviewed_at": review.reviewed_at,
                    }
                    if review
                    else None
                ),
                "ground_truth_recorded": outcome is not None,
                **({"receipt": _receipt(d)} if receipts else {}),
            }
        )
    return {
        "subject": {"reference": reference, "pseudonym": subject.pseudonym},
        "generated_at": timezone.now(),
        "consents": [
            {
                "purpose": c.purpose,
                "granted": c.granted,
                "notice_version": c.notice_version,
                "source": c.source,
                "recorded_at": c.recorded_at,
            }
            for c in consents
        ],
        "current_consent": consent_state(consents),
        "decisions": out_decisions,
        "erasure_requests": [
            {
                "id": str(e.pk),
                "status": e.status,
                "received_at": e.received_at,
                "deadline": e.deadline,
            }
            for e in ErasureRequest.objects.filter(subject=subject)
        ],
    }


def erasure_list(*, user: Any) -> QuerySet[ErasureRequest]:
    require_officer(user)
    return ErasureRequest.objects.select_related("created_by", "decided_by").order_by(
        "status", "deadline"
    )


def erasure_get(*, user: Any, key: ApiKey | None, request_id: Any) -> ErasureRequest:
    request = (
        ErasureRequest.objects.select_related("created_by", "decided_by")
        .filter(pk=request_id)
        .first()
    )
    if request is None:
        raise NotFound("No such erasure request.")
    if key is not None:
        if key.allows("subjects") and request.created_by_id == key.user_id:
            return request
        raise NotFound("No such erasure request.")
    if not has_role(user, Role.COMPLIANCE_OFFICER, Role.ADMIN):
        raise NotFound("No such erasure request.")
    return request


def version_for_report(*, user: Any, family: str, version: str) -> ModelVersion:
    """Any version, for compliance officers (they oversee every family); 404 if none."""
    require_officer(user)
    found = (
        ModelVersion.objects.select_related("family")
        .filter(family__slug=family, version=version)
        .first()
    )
    if found is None:
        raise NotFound(f"'{family}' has no version {version}.")
    return found


def bias_reports(*, user: Any, key: ApiKey | None = None) -> QuerySet[BiasReport]:
    require_officer(user, key)
    return BiasReport.objects.select_related("version", "version__family")


def bias_report_get(*, user: Any, report_id: Any, key: ApiKey | None = None) -> BiasReport:
    require_officer(user, key)
    report = (
        BiasReport.objects.select_related("version", "version__family").filter(pk=report_id).first()
    )
    if report is None:
        raise NotFound("No such bias report.")
    return report
