"""Batch scoring: CSV in, one decision per scored row, bad rows reported per row, resumable
after crashes with no row lost or recorded twice, visible to its creator only."""

from __future__ import annotations

import csv
import io
import signal
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.test import Client
from django.utils import timezone

from apps.inference import batch
from apps.inference.backends import get_backend
from apps.inference.models import BatchJob, BatchRow, BatchStatus, Decision, RoutingConfig
from apps.registry import services as registry_services
from apps.registry.permissions import FamilyAction
from gatehouse.pseudonyms import pseudonymise
from gatehouse.roles import Role
from gatehouse.tlog.models import LogLeaf
from tests.decision_log import integrated_and_verified
from tests.registry_models import serve

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("without_consent_check")]

HEADER = ["applicant", "income", "age", "housing", "sex"]
BAD_KINDS = (
    ("income", "lots", "income: must be a number"),
    ("age", "", "age: is required"),
    ("housing", "castle", "housing: must be one of"),
)


def make_csv(n: int, bad: tuple[int, ...] = ()) -> bytes:
    """``n`` rows (applicant-1..n); the rows numbered in ``bad`` carry one invalid field."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for i in range(1, n + 1):
        row = {
            "applicant": f"applicant-{i}",
            "income": f"{5 + (i * 7) % 110}.5",
            "age": str(18 + i % 60),
            "housing": ("own", "rent", "free")[i % 3],
            "sex": ("female", "male")[i % 2],
        }
        if i in bad:
            column, value, _ = BAD_KINDS[bad.index(i) % len(BAD_KINDS)]
            row[column] = value
        writer.writerow([row[c] for c in HEADER])
    return out.getvalue().encode()


def read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def job_decisions(job: BatchJob):
    return Decision.objects.filter(request_id__startswith=f"batch-{job.pk.hex}-")


def duplicates(job: BatchJob) -> int:
    return (
        BatchRow.objects.filter(job=job)
        .values("row_number")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path, monkeypatch):
    from apps.inference.backends import reset_backends

    settings.ARTIFACT_STORE_DIR = tmp_path / "artifacts"
    settings.BATCH_CHUNK_ROWS = 10
    monkeypatch.setattr("apps.registry.services._enqueue_packaging", lambda _id: None)
    reset_backends()
    yield
    reset_backends()


@pytest.fixture
def eager():
    """Tasks run inline when sent (the job is sent after commit: capture on-commit too)."""
    from gatehouse.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture
def approver(make_user, family):
    user = make_user(Role.APPROVER, username="approver")
    registry_services.family_grant(family=family, to=user, actions=[FamilyAction.APPROVE])
    return user


@pytest.fixture
def v1(family, approver):
    return serve(family, family.owner, approver, "1.0.0")


@pytest.fixture
def caller(api_key, v1):
    user, raw = api_key()
    return user, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.fixture
def clerk(make_user, family, v1):
    user = make_user(Role.BUSINESS_USER, username="clerk")
    registry_services.family_grant(
        family=family, to=user, actions=[FamilyAction.VIEW, FamilyAction.PREDICT]
    )
    return user


def submit(client, headers, data: bytes, **fields):
    form = {"subject_column": "applicant", "purpose": "credit_scoring", **fields}
    upload = io.BytesIO(data)
    upload.name = "cases.csv"
    return client.post("/api/v1/models/credit-risk/batch", {"file": upload, **form}, **headers)


def submit_service(family, user, data: bytes, **kwargs) -> BatchJob:
    return batch.batch_submit(
        family=family,
        user=user,
        key=kwargs.pop("key", None),
        file=io.BytesIO(data),
        filename="cases.csv",
        purpose="credit_scoring",
        subject_column="applicant",
        **kwargs,
    )


# --- The happy path -----------------------------------------------------------------------------


def test_a_batch_is_scored_row_for_row_and_bad_rows_are_reported(
    client, caller, eager, django_capture_on_commit_callbacks
):
    bad = (4, 17, 29)
    with django_capture_on_commit_callbacks(execute=True):
        response = submit(client, caller[1], make_csv(30, bad))
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["status"], body["total_rows"]) == ("queued", 30)
    job_url = f"/api/v1/batch/{body['id']}"

    status = client.get(job_url, **caller[1]).json()
    assert status["status"] == "done", status
    assert (status["rows_done"], status["rows_scored"], status["rows_failed"]) == (30, 27, 3)
    assert status["progress"] == 1.0
    assert [e["row"] for e in status["row_errors"]] == list(bad)
    assert status["result_url"] == f"{job_url}/result"

    result = client.get(status["result_url"], **caller[1])
    assert result.status_code == 200
    assert result["Content-Type"].startswith("text/csv")
    rows = read_csv(result.content)
    inputs = read_csv(make_csv(30, bad))
    assert len(rows) == len(inputs) == 30
    assert list(rows[0]) == [*HEADER, "decision_id", "label", "score_good", "score_bad", "error"]
    for number, (row, given) in enumerate(zip(rows, inputs, strict=True), start=1):
        assert {c: row[c] for c in HEADER} == given  # the input, in input order
        if number in bad:
            assert (row["decision_id"], row["label"]) == ("", "")
            assert row["error"]
        else:
            assert row["error"] == ""
            assert row["label"] in {"good", "bad"}
            assert abs(float(row["score_good"]) + float(row["score_bad"]) - 1) < 1e-4
    for number, (_, _, message) in zip(bad, BAD_KINDS, strict=True):
        assert message in rows[number - 1]["error"]

    job = BatchJob.objects.get(pk=body["id"])
    decisions = job_decisions(job)
    assert decisions.count() == 27 == Decision.objects.count()
    scored = {r["decision_id"] for r in rows if r["decision_id"]}
    assert scored == {str(pk) for pk in decisions.values_list("id", flat=True)}
    first = Decision.objects.get(pk=rows[0]["decision_id"])
    assert first.subject_pseudonym == pseudonymise("applicant-1")
    assert "applicant-1" not in str(first.inputs)
    assert (first.api_key_id, first.actor_user_id) == (job.api_key_id, caller[0].pk)
    assert (first.purpose, first.route, first.version_label) == (
        "credit_scoring",
        "production",
        "1.0.0",
    )
    verification = integrated_and_verified()
    assert verification.ok, verification
    decision_leaves = LogLeaf.objects.filter(kind="decision").exclude(idx=None)
    assert decision_leaves.count() == Decision.objects.count() == 27


def test_each_chunk_pushes_progress_to_its_creator_only(
    family, clerk, eager, monkeypatch, settings, django_capture_on_commit_callbacks
):
    settings.BATCH_PUSH_INTERVAL_S = 0
    pushed = []
    monkeypatch.setattr(batch.live, "push_html", lambda uid, html, **kw: pushed.append((uid, html)))
    with django_capture_on_commit_callbacks(execute=True):
        job = submit_service(family, clerk, make_csv(25))
    assert {uid for uid, _ in pushed} == {clerk.pk}
    assert len(pushed) == 4  # three chunks of 10, 10, 5, then done
    last = pushed[-1][1]
    assert f'id="batch-job-{job.pk}"' in last
    assert 'hx-swap-oob="true"' in last
    assert '<progress max="25" value="25"' in last
    assert "Download the results" in last
    assert '<progress max="25" value="10"' in pushed[0][1]


def test_canary_routing_applies_row_by_row_and_sticks_to_the_subject(family, approver, clerk):
    from apps.inference.routing import bucket

    v2 = serve(family, family.owner, approver, "2.0.0", target="")
    RoutingConfig.objects.update_or_create(
        family=family, defaults={"canary_version": v2, "canary_percent": 40}
    )
    job = submit_service(family, clerk, make_csv(40))
    assert batch.batch_run(job.pk).status == BatchStatus.DONE
    routes = Counter()
    for decision in job_decisions(job):
        canary = bucket(family, decision.subject_pseudonym) < 40
        assert (decision.route, decision.version_label) == (
            ("canary", "2.0.0") if canary else ("production", "1.0.0")
        )
        routes[decision.route] += 1
    assert routes["canary"]
    assert routes["production"]
    assert sum(routes.values()) == 40


# --- Crashes and resumption ---------------------------------------------------------------------


def test_a_run_that_crashed_after_one_chunk_resumes_with_no_loss_and_no_duplicate(
    family, clerk, monkeypatch
):
    job = submit_service(family, clerk, make_csv(45, bad=(12,)))
    real = get_backend()
    calls = []

    class Crashing:
        def predict(self, version, rows):
            calls.append(len(rows))
            if len(calls) == 2:
                raise RuntimeError("worker died")
            return real.predict(version, rows)

    monkeypatch.setattr(batch, "get_backend", lambda: Crashing())
    with pytest.raises(RuntimeError, match="worker died"):
        batch.batch_run(job.pk)
    job.refresh_from_db()
    assert job.status == BatchStatus.RUNNING
    assert job.lease_owner == ""  # released: the next run may claim it at once
    assert "Interrupted" in job.error
    assert BatchRow.objects.filter(job=job).count() == 10  # the first chunk, whole
    assert job_decisions(job).count() == 10
    assert job.rows_done == 10

    monkeypatch.setattr(batch, "get_backend", get_backend)
    done = batch.batch_run(job.pk)
    assert done is not None
    assert (done.status, done.attempts, done.error) == (BatchStatus.DONE, 2, "")
    assert BatchRow.objects.filter(job=job).count() == 45
    assert duplicates(job) == 0
    assert sorted(BatchRow.objects.filter(job=job).values_list("row_number", flat=True)) == list(
        range(1, 46)
    )
    assert job_decisions(job).count() == 44 == BatchRow.objects.filter(job=job, status="ok").count()
    assert integrated_and_verified().ok
    assert len(read_csv(batch.batch_result(job=done))) == 45
    assert batch.batch_run(job.pk) is None  # a finished job is never run again


def test_a_killed_run_is_resumed_by_the_sweeper_once_its_heartbeat_is_stale(
    family, clerk, monkeypatch
):
    job = submit_service(family, clerk, make_csv(25))
    # A run took the lease and died without a word (SIGKILL): lease held, heartbeat fresh.
    assert batch._claim(job.pk, "dead-run", 60)
    sent = []
    monkeypatch.setattr(batch, "_send", lambda job_id, stall_s=None: sent.append((job_id, stall_s)))
    assert batch.batch_resume_stalled() == 0  # fresh heartbeat: left alone
    assert batch.batch_run(job.pk) is None  # nor may another run take it over
    old = timezone.now() - timedelta(seconds=120)
    BatchJob.objects.filter(pk=job.pk).update(heartbeat_at=old, enqueued_at=old)

    assert batch.batch_resume_stalled() == 1
    assert batch.batch_resume_stalled() == 0  # sent once per stall period, not every sweep
    (job_id, stall_s), *_ = sent
    finished = batch.batch_run(job_id, stall_s=stall_s)
    assert finished is not None
    assert (finished.status, finished.rows_done, finished.attempts) == (BatchStatus.DONE, 25, 2)
    assert job_decisions(job).count() == 25


def test_a_message_redelivered_after_its_worker_was_lost_takes_the_job_back_at_once(family, clerk):
    job = submit_service(family, clerk, make_csv(15))
    delivery = batch.run_id_of("celery-task-id-1")
    assert batch._claim(job.pk, delivery, 60)  # the first delivery's worker died here
    assert batch.batch_run(job.pk) is None  # another message may not take it over
    again = batch.batch_run(job.pk, run_id=delivery)  # reject_on_worker_lost redelivered it
    assert again is not None
    assert (again.status, again.rows_done) == (BatchStatus.DONE, 15)


def test_a_run_that_lost_its_lease_writes_nothing(family, clerk):
    job = submit_service(family, clerk, make_csv(12))
    assert batch._claim(job.pk, "slow-run", 60)
    slow = batch._Runner(BatchJob.objects.get(pk=job.pk), "slow-run")
    BatchJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(days=1))
    assert batch.batch_run(job.pk, stall_s=30).status == BatchStatus.DONE  # took it over
    parsed = batch._parse_csv(make_csv(12))
    with pytest.raises(batch._LeaseLost):
        slow._chunk(parsed.header, parsed.rows[:10])
    assert BatchRow.objects.filter(job=job).count() == 12
    assert job_decisions(job).count() == 12


def test_the_database_refuses_a_row_twice(family, clerk):
    job = submit_service(family, clerk, make_csv(3))
    BatchRow.objects.create(job=job, row_number=1, status="error", error="x")
    with pytest.raises(IntegrityError), transaction.atomic():
        BatchRow.objects.create(job=job, row_number=1, status="error", error="again")


def test_a_job_interrupted_too_often_is_failed_by_the_sweeper(family, clerk, settings):
    job = submit_service(family, clerk, make_csv(3))
    old = timezone.now() - timedelta(seconds=120)
    BatchJob.objects.filter(pk=job.pk).update(
        status="running", attempts=10, heartbeat_at=old, enqueued_at=old, lease_owner="x"
    )
    assert batch.batch_resume_stalled() == 0
    job.refresh_from_db()
    assert job.status == BatchStatus.FAILED
    assert "after 10 interrupted attempts" in job.error


def test_a_family_suspended_mid_job_fails_it_and_keeps_the_rows_done(family, clerk, monkeypatch):
    job = submit_service(family, clerk, make_csv(30))
    real = get_backend()

    class SuspendAfterFirstChunk:
        def predict(self, version, rows):
            RoutingConfig.objects.update_or_create(
                family=family, defaults={"suspended": True, "suspended_reason": "incident 7"}
            )
            return real.predict(version, rows)

    monkeypatch.setattr(batch, "get_backend", lambda: SuspendAfterFirstChunk())
    failed = batch.batch_run(job.pk)
    assert failed is not None
    assert failed.status == BatchStatus.FAILED
    assert "suspended: incident 7" in failed.error
    assert "10 of 30 rows were processed" in failed.error
    assert BatchRow.objects.filter(job=job).count() == 10
    assert job_decisions(job).count() == 10
    assert integrated_and_verified().ok


# --- Access -------------------------------------------------------------------------------------


def test_a_job_is_visible_to_its_creator_and_key_only(
    client, caller, api_key, make_user, family, eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job_id = submit(client, caller[1], make_csv(5)).json()["id"]
    urls = [f"/api/v1/batch/{job_id}", f"/api/v1/batch/{job_id}/result"]
    owner_session = Client()
    owner_session.force_login(caller[0])
    _, other_raw_same_user = api_key(user=caller[0])
    _, stranger_raw = api_key()
    stranger_session = Client()
    stranger_session.force_login(make_user(Role.BUSINESS_USER))
    for url in urls:
        assert client.get(url, **caller[1]).status_code == 200
        assert owner_session.get(url).status_code == 200
        assert (
            client.get(url, HTTP_AUTHORIZATION=f"Bearer {other_raw_same_user}").status_code == 404
        )
        assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {stranger_raw}").status_code == 404
        assert stranger_session.get(url).status_code == 404
        assert Client().get(url).status_code == 401
    missing = f"/api/v1/batch/{uuid.uuid4()}"
    assert client.get(missing, **caller[1]).status_code == 404


def test_a_key_without_predict_may_not_submit(client, api_key, v1):
    _, raw = api_key(actions=("view",))
    response = submit(client, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}, make_csv(3))
    assert response.status_code == 403
    assert BatchJob.objects.count() == 0


# --- Refusals at submission ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fields", "message"),
    [
        (b"applicant,income,housing,sex\na,1,own,male\n", {}, "column 'age' is missing"),
        (
            b"applicant,income,age,housing,sex,colour\na,1,30,own,male,red\n",
            {},
            "column 'colour' is not a feature",
        ),
        (
            b"income,age,housing,sex,income\n1,30,own,male,2\n",
            {"subject_column": "ref"},
            "column 'income' appears twice",
        ),
        (make_csv(2), {"subject_column": "reference"}, "column 'reference' is not in the file"),
        (b"\xff\xfe not utf-8", {}, "must be a UTF-8"),
        (b"", {}, "has no header row"),
        (b"applicant,income,age,housing,sex\n", {}, "has no data rows"),
        (make_csv(2), {"subject_column": ""}, "subject_column: is required"),
    ],
)
def test_a_file_that_does_not_fit_the_model_is_422_and_nothing_is_stored(
    client, caller, settings, data, fields, message
):
    before = sorted(p.name for p in settings.ARTIFACT_STORE_DIR.rglob("*") if p.is_file())
    response = submit(client, caller[1], data, **fields)
    assert response.status_code == 422, response.content
    body = response.json()
    assert message in body["detail"] + " ".join(e["message"] for e in body["errors"])
    assert BatchJob.objects.count() == 0
    after = sorted(p.name for p in settings.ARTIFACT_STORE_DIR.rglob("*") if p.is_file())
    assert after == before


def test_limits_on_size_rows_and_active_jobs(client, caller, settings):
    settings.BATCH_MAX_ROWS = 5
    assert submit(client, caller[1], make_csv(6)).status_code == 413
    settings.BATCH_MAX_BYTES = 100
    assert submit(client, caller[1], make_csv(5)).status_code == 413
    settings.BATCH_MAX_BYTES = 10_000
    settings.BATCH_MAX_ACTIVE_JOBS = 1
    assert submit(client, caller[1], make_csv(2)).status_code == 202  # queued, not yet run
    busy = submit(client, caller[1], make_csv(2))
    assert busy.status_code == 429
    assert int(busy["Retry-After"]) > 0


def test_a_suspended_family_refuses_submissions(client, caller, family):
    RoutingConfig.objects.update_or_create(family=family, defaults={"suspended": True})
    response = submit(client, caller[1], make_csv(2))
    assert response.status_code == 503
    assert response.json()["code"] == "suspended"
    assert BatchJob.objects.count() == 0


def test_the_result_before_the_job_is_done_is_409(client, caller):
    job_id = submit(client, caller[1], make_csv(2)).json()["id"]  # queued: the task never ran
    response = client.get(f"/api/v1/batch/{job_id}/result", **caller[1])
    assert response.status_code == 409
    assert response.json()["code"] == "not_done"


@pytest.mark.django_db(transaction=True)
def test_a_broker_failure_at_submission_is_503_and_the_job_is_not_left_queued(
    client, caller, monkeypatch
):
    from kombu.exceptions import OperationalError

    from apps.inference import tasks

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to redis:6379. Connection refused.")

    monkeypatch.setattr(tasks.batch_run, "apply_async", broker_down)
    response = submit(client, caller[1], make_csv(3))
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "queue_unavailable"
    assert int(response["Retry-After"]) > 0
    job = BatchJob.objects.get()
    assert job.status == BatchStatus.FAILED
    assert "queue was unavailable" in job.error
    assert batch.batch_resume_stalled(stall_s=0) == 0  # failed: never picked up later


def test_the_sweeper_runs_periodically():
    from django.conf import settings

    from gatehouse.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["batch-resume-stalled"]
    assert entry["task"] == "inference.batch_resume_stalled"
    assert entry["schedule"].total_seconds() <= 60
    assert "inference.batch_resume_stalled" in app.tasks
    assert app.tasks["inference.batch_run"].acks_late is True
    assert app.tasks["inference.batch_run"].reject_on_worker_lost is True


# --- The page -----------------------------------------------------------------------------------


def test_the_batch_page_accepts_a_file_and_lists_the_jobs_with_progress(
    clerk, eager, django_capture_on_commit_callbacks
):
    browser = Client()
    browser.force_login(clerk)
    page = browser.get("/predict/credit-risk/batch/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'enctype="multipart/form-data"' in html
    assert "<code>income</code>" in html
    upload = io.BytesIO(make_csv(12, bad=(3,)))
    upload.name = "march.csv"
    form = {"file": upload, "subject_column": "applicant", "purpose": "credit_scoring"}
    with django_capture_on_commit_callbacks(execute=True):
        posted = browser.post("/predict/credit-risk/batch/", form)
    assert posted.status_code == 302
    html = browser.get(posted["Location"]).content.decode()
    job = BatchJob.objects.get()
    assert f'id="batch-job-{job.pk}"' in html
    assert '<progress max="12" value="12"' in html
    assert "11 scored · 1 with errors" in html
    assert f"/api/v1/batch/{job.pk}/result" in html
    assert browser.get(f"/api/v1/batch/{job.pk}/result").status_code == 200


def test_the_batch_page_shows_header_errors_next_to_the_file(clerk):
    browser = Client()
    browser.force_login(clerk)
    upload = io.BytesIO(b"applicant,income\nx,1\n")
    upload.name = "bad.csv"
    response = browser.post(
        "/predict/credit-risk/batch/", {"file": upload, "subject_column": "applicant"}
    )
    assert response.status_code == 422
    assert "Column &#x27;age&#x27; is missing" in response.content.decode()
    assert BatchJob.objects.count() == 0


def test_the_batch_page_is_404_without_predict_access(make_user, v1):
    browser = Client()
    browser.force_login(make_user(Role.BUSINESS_USER))
    assert browser.get("/predict/credit-risk/batch/").status_code == 404


# --- A real worker, killed ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(
    tmp_path, settings, family, clerk, grant_consent
):
    from apps.inference.tasks import batch_resume_stalled
    from tests.processes import killable_celery_worker

    n_rows, chunk = 3000, 20
    # The worker is a separate process with the consent check on: every applicant consents.
    grant_consent(*(f"applicant-{i}" for i in range(1, n_rows + 1)))
    bad = tuple(range(97, n_rows + 1, 97))  # ~1 % invalid rows
    settings.BATCH_CHUNK_ROWS = chunk
    settings.BATCH_QUEUE = queue = f"test-batch-{uuid.uuid4().hex[:8]}"
    env = {"ARTIFACT_STORE_DIR": str(settings.ARTIFACT_STORE_DIR)}
    started = time.monotonic()
    job = submit_service(family, clerk, make_csv(n_rows, bad))  # committed and sent to `queue`

    def rows() -> int:
        return BatchRow.objects.filter(job=job).count()

    def wait(condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    with killable_celery_worker(tmp_path, queue=queue, name="worker-1", env=env) as first:
        wait(lambda: rows() >= 10 * chunk, 120, "ten chunks")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    killed = time.monotonic()
    at_kill = rows()
    job.refresh_from_db()
    assert job.status == BatchStatus.RUNNING
    assert 0 < at_kill < n_rows, "the worker must die mid-job"
    assert at_kill % chunk == 0, "a crash leaves whole chunks only"
    assert job.rows_done == at_kill

    with killable_celery_worker(tmp_path, queue=queue, name="worker-2", env=env):
        time.sleep(1.5)
        without_sweeper = rows()  # the killed run's message is gone with it
        resent = batch_resume_stalled(stall_s=1)
        assert resent == 1
        wait(
            lambda: BatchJob.objects.filter(pk=job.pk, status__in=["done", "failed"]).exists(),
            180,
            "the resumed job",
        )
    finished = time.monotonic()
    job.refresh_from_db()
    assert job.status == BatchStatus.DONE, job.error
    assert BatchRow.objects.filter(job=job).count() == n_rows
    assert duplicates(job) == 0
    numbers = list(BatchRow.objects.filter(job=job).values_list("row_number", flat=True))
    assert sorted(numbers) == list(range(1, n_rows + 1))
    ok = BatchRow.objects.filter(job=job, status="ok").count()
    assert ok == n_rows - len(bad)
    assert job_decisions(job).count() == ok == Decision.objects.count()
    per_row = Counter(job_decisions(job).values_list("request_id", flat=True))
    assert max(per_row.values()) == 1
    assert integrated_and_verified().ok
    result = read_csv(batch.batch_result(job=job))
    assert len(result) == n_rows
    assert [r["applicant"] for r in result] == [f"applicant-{i}" for i in range(1, n_rows + 1)]
    assert sum(1 for r in result if r["error"]) == len(bad)
    print(
        f"\nbatch kill test: {n_rows} rows in chunks of {chunk}; "
        f"{at_kill // chunk} chunks ({at_kill} rows) committed before SIGKILL at "
        f"{killed - started:.1f} s; {without_sweeper} rows 1.5 s after a new worker started "
        f"(no redelivery); resumed by the sweeper and done {finished - killed:.1f} s after the "
        f"kill ({finished - started:.1f} s in all); attempts {job.attempts}; "
        f"rows {n_rows}/{n_rows}, lost 0, duplicated {duplicates(job)}, "
        f"decisions {job_decisions(job).count()} = scored rows {ok}"
    )
