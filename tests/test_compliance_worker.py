"""An erasure executed by a real Celery worker that is SIGKILLed at random points: it resumes
and finishes, and at no point is a step half done."""

from __future__ import annotations

import random
import signal
import time
import uuid

import pytest
from django.db import transaction

from apps.compliance import erasure, services
from apps.compliance.models import ErasureRequest, ErasureStatus, Explanation
from apps.compliance.tasks import execute_erasure
from apps.inference import policy, records
from apps.inference import services as inference_services
from apps.inference.models import Decision, Route
from apps.registry import services as registry_services
from apps.registry.permissions import FamilyAction
from gatehouse.pseudonyms import pseudonymise
from gatehouse.roles import Role
from tests.decision_log import integrated_and_verified
from tests.registry_models import serve

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROW = {"income": 40.0, "age": 35, "housing": "rent", "sex": "female"}
N_DECISIONS = 3000


def _record(family, version, user, reference: str, n: int) -> None:
    rows = [{**ROW, "income": float(i % 150)} for i in range(n)]
    request = inference_services.PredictRequest(rows=rows, subject=reference, request_id="seed")
    with transaction.atomic():
        decisions = records.record(
            inference_services.build_decisions(
                family=family,
                version=version,
                route=Route.PRODUCTION,
                user=user,
                key=None,
                request=request,
                probabilities=[[0.4, 0.6]] * n,
                latency_ms=1.0,
                pseudonym=pseudonymise(reference),
            )
        )
        policy.run_recorded_hooks(decisions, rows)


def _consistent(pseudonym: str, request: ErasureRequest) -> None:
    """Each step is all or nothing: what the request says is done is done, nothing else is."""
    steps = set((request.counts or {}).get("steps", []))
    erased = Decision.objects.filter(erased_at__isnull=False).count()
    assert erased in (0, N_DECISIONS), f"half-erased: {erased} of {N_DECISIONS} records"
    assert (erased == N_DECISIONS) == ("records" in steps)
    explanations = Explanation.objects.count()
    assert explanations in (0, N_DECISIONS)
    assert (explanations == 0) == ("compliance" in steps)
    assert Decision.objects.filter(subject_pseudonym=pseudonym).count() in (0, N_DECISIONS)


def test_a_worker_killed_during_an_erasure_resumes_and_leaves_nothing_half_erased(
    tmp_path, settings, family, make_user
):
    from tests.processes import killable_celery_worker

    owner = family.owner
    approver = make_user(Role.APPROVER, username="approver")
    registry_services.family_grant(family=family, to=approver, actions=[FamilyAction.APPROVE])
    version = serve(family, owner, approver, "1.0.0")
    reference, pseudonym = "subject-1", pseudonymise("subject-1")
    services.consent_record(
        reference=reference,
        purpose="credit_scoring",
        granted=True,
        notice_version="1",
        source="web",
        user=owner,
    )
    _record(family, version, owner, reference, N_DECISIONS)
    first = make_user(Role.COMPLIANCE_OFFICER, username="carla")
    second = make_user(Role.COMPLIANCE_OFFICER, username="dora")
    request = erasure.erasure_create(reference=reference, user=first)
    ErasureRequest.objects.filter(pk=request.pk).update(
        status=ErasureStatus.APPROVED, decided_by=second
    )
    queue = f"test-erasure-{uuid.uuid4().hex[:8]}"
    env = {"ARTIFACT_STORE_DIR": str(settings.ARTIFACT_STORE_DIR)}
    rng = random.Random(7)  # noqa: S311 - kill timing, not cryptography
    kills = 0
    started = time.monotonic()
    for cycle in range(6):
        with killable_celery_worker(tmp_path, queue=queue, name=f"w{cycle}", env=env) as worker:
            execute_erasure.apply_async(args=[str(request.pk)], queue=queue)
            deadline = time.monotonic() + 60
            while ErasureRequest.objects.get(pk=request.pk).attempts <= cycle:
                assert time.monotonic() < deadline, "the worker never started the erasure"
                time.sleep(0.01)
            if cycle < 3:  # the first three runs are killed at a random point
                time.sleep(rng.uniform(0.0, 0.15))
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=10)
                if ErasureRequest.objects.get(pk=request.pk).status != ErasureStatus.DONE:
                    kills += 1  # killed mid-erasure
            else:
                while ErasureRequest.objects.get(pk=request.pk).status != ErasureStatus.DONE:
                    assert time.monotonic() < deadline, "the erasure did not finish"
                    time.sleep(0.05)
        current = ErasureRequest.objects.get(pk=request.pk)
        _consistent(pseudonym, current)
        print(f"cycle {cycle}: steps done {current.counts.get('steps', [])}")
        if current.status == ErasureStatus.DONE:
            break
    done = ErasureRequest.objects.get(pk=request.pk)
    assert done.status == ErasureStatus.DONE
    assert kills >= 1, "no run was killed mid-erasure"
    assert done.counts["decision_payloads"] == N_DECISIONS
    assert done.counts["explanations"] == N_DECISIONS
    assert Decision.objects.filter(subject_pseudonym=pseudonym).count() == 0
    assert integrated_and_verified().ok
    print(
        f"erasure of {N_DECISIONS} records: {kills} workers killed, finished after "
        f"{done.attempts} attempts in {time.monotonic() - started:.1f} s; 0 half-erased states"
    )
