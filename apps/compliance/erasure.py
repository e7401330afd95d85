"""Erasure requests (GDPR 17): created, decided by a second compliance officer, executed.

Execution is a sequence of steps, each committed on its own together with its counts and its
name in ``counts["steps"]``: a worker killed halfway is re-run from the first step not done,
and every step finds nothing left to do when it was done already. The subject's reference
(the only way to find the subject's rows in uploaded files) is deleted by the last step.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

from auditlog.context import disable_auditlog
from auditlog.models import LogEntry
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.utils import timezone

from apps.compliance.models import (
    Consent,
    ConsentRefusal,
    DataSubject,
    ErasureRequest,
    ErasureStatus,
    Explanation,
    Review,
    SubjectReference,
)
from apps.compliance.selectors import may_act_for_subjects
from apps.compliance.services import subject_ensure, subject_find
from apps.inference import services as inference_services
from apps.inference.models import BatchJob, BatchStatus, Decision, Outcome
from apps.registry import services as registry_services
from apps.registry.artifacts import ArtifactStore
from gatehouse.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from gatehouse.models import ApiKey
from gatehouse.otp import is_verified
from gatehouse.pseudonyms import pseudonymise
from gatehouse.roles import Role, has_role
from gatehouse.services import alert_raise
from gatehouse.tlog import audit
from gatehouse.tlog import tree as tlog_tree

logger = logging.getLogger(__name__)

DEADLINE_DAYS = 30


def _officer(user: Any) -> None:
    if not has_role(user, Role.COMPLIANCE_OFFICER):
        raise PermissionDenied("Only compliance officers handle erasure requests.")


@transaction.atomic
def erasure_create(
    *, reference: str, user: Any, key: ApiKey | None = None, channel: str = "", note: str = ""
) -> ErasureRequest:
    """Register a subject's erasure request (a compliance officer, or a partner system with a
    key allowed to act for data subjects); the 30-day deadline runs from now."""
    if key is None:
        _officer(user)
    elif not may_act_for_subjects(user, key):
        raise PermissionDenied("This API key does not allow 'subjects'.", code="key_scope")
    subject = _subject_to_erase(reference)
    if ErasureRequest.objects.filter(
        subject=subject, status__in=[ErasureStatus.PENDING, ErasureStatus.APPROVED]
    ).exists():
        raise Conflict("An erasure request for this subject is open already.", code="duplicate")
    now = timezone.now()
    request = ErasureRequest.objects.create(
        subject=subject,
        received_at=now,
        deadline=now + timedelta(days=DEADLINE_DAYS),
        channel=channel[:40],
        note=note[:2000],
        created_by=user,
    )
    logger.info("erasure request %s created by user %s", request.pk, user.pk)
    return request


@transaction.atomic
def _subject_to_erase(reference: str) -> DataSubject:
    """The subject, also one the platform knows only from decisions, refusals or a training
    lineage (no consent recorded); 404 when the reference appears nowhere."""
    pseudonym = pseudonymise(reference.strip())
    known = (
        DataSubject.objects.filter(pseudonym=pseudonym).exists()
        or Decision.objects.filter(subject_pseudonym=pseudonym).exists()
        or ConsentRefusal.objects.filter(subject_pseudonym=pseudonym).exists()
        or registry_services.versions_with_subject(pseudonym=pseudonym)
    )
    if not known:
        return subject_find(reference)  # 404
    return subject_ensure(reference)


def erasure_decide(*, request_id: Any, user: Any, approve: bool, reason: str) -> ErasureRequest:
    """Approve (and start) or reject a request: a second compliance officer, 2FA verified."""
    _officer(user)
    if not is_verified(user):
        raise PermissionDenied("Deciding an erasure needs a session verified with 2FA.")
    request = ErasureRequest.objects.select_for_update().filter(pk=request_id).first()
    if request is None:
        raise NotFound("No such erasure request.")
    if request.created_by_id == user.pk:
        raise PermissionDenied(
            "Four eyes: the officer who registered a request cannot decide it.", code="four_eyes"
        )
    if request.status != ErasureStatus.PENDING:
        raise Conflict(f"This request is {request.status} already.", code="already_decided")
    if not reason.strip():
        raise ValidationFailed.for_field("reason", "A written reason is required.")
    request.status = ErasureStatus.APPROVED if approve else ErasureStatus.REJECTED
    request.decided_by = user
    request.decided_at = timezone.now()
    request.decision_reason = reason.strip()[:2000]
    request.save()
    if approve:
        from apps.compliance.tasks import execute_erasure

        pk = str(request.pk)
        transaction.on_commit(lambda: execute_erasure.delay(pk))
    return request


# --- Execution -------------------------------------------------------------------------------


class ErasureDeferred(Exception):
    """A step cannot run yet (e.g. a batch job of the subject is still running)."""


def _decision_ids(pseudonym: str) -> list[Any]:
    return list(Decision.objects.filter(subject_pseudonym=pseudonym).values_list("id", flat=True))


def _log_entries_delete(model: type, pks: list[Any]) -> int:
    if not pks:
        return 0
    entries = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(model),
        object_pk__in=[str(pk) for pk in pks],
    )
    # Their leaves stay in the log without their salts: the tree still verifies, and the
    # digests they hold can no longer be linked to the entries' content.
    tlog_tree.mark_removed(
        audit.KIND, [str(pk) for pk in entries.values_list("pk", flat=True)], reason="erased"
    )
    deleted, _ = entries.delete()
    return deleted


def _step_files(request: ErasureRequest, subject: DataSubject) -> dict[str, int]:
    """Blank the subject's lines in uploaded batch files and their results (same line count,
    so row numbers keep their meaning); replaced files no other job uses are deleted."""
    reference = SubjectReference.objects.filter(subject=subject).values_list("reference", flat=True)
    ref = reference.first()
    if ref is None:
        return {"batch_files": 0}
    # Every file with a subject column is read: the subject's lines may have no decision
    # (an invalid or refused row), so the decisions cannot say which files hold them.
    jobs = BatchJob.objects.exclude(subject_column="")
    if jobs.filter(status__in=[BatchStatus.QUEUED, BatchStatus.RUNNING]).exists():
        raise ErasureDeferred("a batch job with the subject's rows is still running")
    store = ArtifactStore()
    rewritten = 0
    for job in jobs:
        for field in ("input_sha256", "result_sha256"):
            old = getattr(job, field)
            if not old:
                continue
            new = _blank_lines(store.read_verified(old), job.subject_column, ref)
            if new is None:
                continue
            stored = store.put_bytes(new, max_bytes=len(new) + 1, field=field)
            BatchJob.objects.filter(pk=job.pk).update(**{field: stored.sha256})
            in_use = BatchJob.objects.filter(input_sha256=old).exists() or (
                BatchJob.objects.filter(result_sha256=old).exists()
            )
            if not in_use:
                transaction.on_commit(partial(store.delete, old))
            rewritten += 1
    return {"batch_files": rewritten}


def _blank_lines(data: bytes, column: str, reference: str) -> bytes | None:
    text = data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or column not in [c.strip() for c in rows[0]]:
        return None
    index = [c.strip() for c in rows[0]].index(column)
    changed = False
    for i, row in enumerate(rows[1:], start=1):
        if len(row) > index and row[index].strip() == reference:
            rows[i] = [""] * len(row)
            changed = True
    if not changed:
        return None
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def _step_compliance(request: ErasureRequest, subject: DataSubject) -> dict[str, int]:
    ids = _decision_ids(subject.pseudonym)
    explanations, _ = Explanation.objects.filter(decision_id__in=ids).delete()
    review_pks = list(
        Review.objects.filter(subject_pseudonym=subject.pseudonym).values_list("pk", flat=True)
    ) + list(Review.objects.filter(decision_id__in=ids).values_list("pk", flat=True))
    reviews, _ = Review.objects.filter(pk__in=review_pks).delete()
    refusals, _ = ConsentRefusal.objects.filter(subject_pseudonym=subject.pseudonym).delete()
    consent_pks = list(Consent.objects.filter(subject=subject).values_list("pk", flat=True))
    consents, _ = Consent.objects.filter(pk__in=consent_pks).delete()
    outcome_pks = list(Outcome.objects.filter(decision_id__in=ids).values_list("pk", flat=True))
    audit = (
        _log_entries_delete(Consent, consent_pks)
        + _log_entries_delete(Review, review_pks)
        + _log_entries_delete(Outcome, outcome_pks)
    )
    return {
        "explanations": explanations,
        "reviews": reviews,
        "consent_refusals": refusals,
        "consents": consents,
        "audit_entries": audit,
    }


def _step_records(request: ErasureRequest, subject: DataSubject) -> dict[str, int]:
    return inference_services.subject_records_erase(pseudonym=subject.pseudonym)


def _step_lineage(request: ErasureRequest, subject: DataSubject) -> dict[str, int]:
    touched = registry_services.versions_erase_subject(pseudonym=subject.pseudonym)
    return {"model_versions_flagged": len(touched)}


def _step_identity(request: ErasureRequest, subject: DataSubject) -> dict[str, int]:
    references, _ = SubjectReference.objects.filter(subject=subject).delete()
    ErasureRequest.objects.filter(subject=subject).update(subject=None)
    request.subject = None
    subject.delete()
    return {"subject_references": references, "subjects": 1}


STEPS: list[tuple[str, Callable[[ErasureRequest, DataSubject], dict[str, int]]]] = [
    ("files", _step_files),
    ("compliance", _step_compliance),
    ("records", _step_records),
    ("lineage", _step_lineage),
    ("identity", _step_identity),
]


def erasure_execute(*, request_id: Any) -> ErasureRequest:
    """Run the remaining steps of an approved request; safe to call again at any point."""
    with transaction.atomic():
        request = ErasureRequest.objects.select_for_update().get(pk=request_id)
        if request.status == ErasureStatus.DONE:
            return request
        if request.status != ErasureStatus.APPROVED:
            raise Conflict(f"The request is {request.status}, not approved.", code="not_approved")
        request.attempts += 1
        request.started_at = request.started_at or timezone.now()
        request.save(update_fields=["attempts", "started_at"])
    for name, step in STEPS:
        with transaction.atomic(), disable_auditlog():
            request = ErasureRequest.objects.select_for_update().get(pk=request_id)
            counts: dict[str, Any] = dict(request.counts or {})
            done: list[str] = list(counts.get("steps", []))
            if name in done:
                continue
            subject = request.subject
            found = {} if subject is None else step(request, subject)
            for store, n in found.items():
                counts[store] = int(counts.get(store, 0)) + int(n)
            counts["steps"] = [*done, name]
            request.counts = counts
            if name == STEPS[-1][0]:
                request.status = ErasureStatus.DONE
                request.completed_at = timezone.now()
            request.save()
        logger.info("erasure %s: step %s done", request_id, name)
    return request


def certificate(request: ErasureRequest) -> dict[str, Any]:
    """What was erased, when and on whose approval; no personal data."""
    counts = {k: v for k, v in (request.counts or {}).items() if k != "steps"}
    return {
        "erasure_request": str(request.pk),
        "status": request.status,
        "received_at": request.received_at.isoformat(),
        "deadline": request.deadline.isoformat(),
        "registered_by": request.created_by.get_username(),
        "approved_by": request.decided_by.get_username() if request.decided_by else None,
        "approved_at": request.decided_at.isoformat() if request.decided_at else None,
        "completed_at": request.completed_at.isoformat() if request.completed_at else None,
        "within_deadline": bool(request.completed_at and request.completed_at <= request.deadline),
        "erased": counts,
        "steps": list((request.counts or {}).get("steps", [])),
        "note": "Decision records keep their place in the transparency log without their "
        "personal payload; `manage.py verify_decisions` still verifies the log.",
    }


def deadlines_check(*, warn_days: int | None = None) -> int:
    """Alert once for each open request whose deadline is within ``warn_days``."""
    days = settings.ERASURE_WARN_DAYS if warn_days is None else warn_days
    soon = timezone.now() + timedelta(days=days)
    due = ErasureRequest.objects.filter(
        status__in=[ErasureStatus.PENDING, ErasureStatus.APPROVED],
        deadline__lte=soon,
        deadline_alerted=False,
    )
    n = 0
    for request in due:
        alert_raise(
            kind="erasure_deadline",
            severity="warning",
            title=f"Erasure request {str(request.pk)[:8]} is due {request.deadline:%Y-%m-%d}",
            detail=f"Status: {request.get_status_display()}.",
            subject=f"erasure:{request.pk}",
        )
        ErasureRequest.objects.filter(pk=request.pk).update(deadline_alerted=True)
        n += 1
    return n


def erasures_resume(*, stalled_s: int = 60) -> int:
    """Re-send approved requests not finished ``stalled_s`` after approval or their last
    attempt (the beat schedule calls this; erasure_execute is idempotent)."""
    from apps.compliance.tasks import execute_erasure

    cutoff = timezone.now() - timedelta(seconds=stalled_s)
    stalled = ErasureRequest.objects.filter(
        status=ErasureStatus.APPROVED, decided_at__lte=cutoff
    ).values_list("pk", flat=True)
    n = 0
    for pk in stalled:
        execute_erasure.delay(str(pk))
        n += 1
    return n
