"""Fault tests with real processes: Redis stopped during traffic, PostgreSQL restarted under
load (docs/performance.md, "Faults and soak"; ../shared/notes "Faults: nothing lost" 3 and 4).

Each test starts private servers (tests/services.py) on free ports, never the shared ones on
5432/6379, and prints what it measured. Without the PostgreSQL or Redis binaries they skip,
except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from django.conf import settings

from apps.inference.models import BatchJob, BatchStatus, Decision
from apps.registry import encoding
from apps.registry import services as registry_services
from apps.registry.architectures import MLP
from apps.registry.permissions import FamilyAction
from gatehouse.roles import Role
from tests.processes import ROOT, asgi_server
from tests.registry_models import COEF, INTERCEPT, SIGNATURE, Registration, register, serve
from tests.services import private_postgres, private_redis, require_binaries

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAMILY = "credit-risk"
PREDICT = f"/api/v1/models/{FAMILY}/predict"
BATCH = f"/api/v1/models/{FAMILY}/batch"
ROW = {"income": 40.0, "age": 35, "housing": "rent", "sex": "female"}
# Limits far above the load: the limiter still runs (and costs) but never refuses these tests.
UNLIMITED = {"RATE_LIMIT_API": "1000000000/60", "RATE_LIMIT_PREDICT": "1000000000/60"}
SUBJECTS = [f"applicant-{i}" for i in range(1, 41)]
PYTHON = sys.executable
JSON = "application/json"


@pytest.fixture(autouse=True)
def _isolated(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from apps.inference.backends import reset_backends

    settings.ARTIFACT_STORE_DIR = tmp_path / "artifacts"
    monkeypatch.setattr("apps.registry.services._enqueue_packaging", lambda _id: None)
    reset_backends()
    yield
    reset_backends()


def _predict(client: httpx.Client, key: str, subject: str) -> httpx.Response:
    return client.post(
        PREDICT,
        json={"rows": [ROW], "subject": subject},
        headers={"Authorization": f"Bearer {key}"},
    )


def _batch_csv(n: int) -> bytes:
    lines = ["applicant,income,age,housing,sex"]
    lines += [f"{SUBJECTS[i % len(SUBJECTS)]},{20 + i}.5,{30 + i},own,male" for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


def _mlp_like_the_logistic_model() -> bytes:
    """An MLP (explained by integrated gradients, in a Celery task) computing exactly the test
    logistic model: h = relu(z), relu(-z); logit(bad) = h1 - h2 = z. It passes the same gates."""
    columns = encoding.input_columns(SIGNATURE)
    model = MLP(n_inputs=len(columns), hidden=[2], n_classes=2)
    with torch.no_grad():
        first, last = model.net[0], model.net[-1]
        first.weight.zero_()
        for name, value in COEF.items():
            first.weight[0, columns.index(name)] = value
            first.weight[1, columns.index(name)] = -value
        first.bias.copy_(torch.tensor([INTERCEPT, -INTERCEPT]))
        last.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, -1.0]]))
        last.bias.zero_()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


# --- Redis stopped during traffic ---------------------------------------------------------------


def test_redis_stopped_during_traffic_predictions_served_batch_refused(
    tmp_path: Path,
    family: Any,
    make_user: Any,
    api_key: Any,
    grant_consent: Any,
    verified_client: Any,
) -> None:
    """The production configuration (REDIS_URL: broker, cache, channel layer) with Redis
    stopped mid-traffic: predictions still answer 200 (linear and non-linear models), the
    dashboard still renders (page and the partial its polling fallback asks for), a batch
    submission answers 503 queue_unavailable and leaves no job queued; with Redis back,
    everything works again."""
    require_binaries("redis")
    approver = make_user(Role.APPROVER, username="approver")
    registry_services.family_grant(family=family, to=approver, actions=[FamilyAction.APPROVE])
    serve(family, family.owner, approver, "1.0.0")
    grant_consent(*SUBJECTS)
    _user, key = api_key()
    cookie = verified_client(family.owner).cookies[settings.SESSION_COOKIE_NAME].value

    with private_redis(tmp_path) as redis:
        env = {
            "ARTIFACT_STORE_DIR": str(settings.ARTIFACT_STORE_DIR),
            "REDIS_URL": redis.url,
            **UNLIMITED,
        }
        with asgi_server(tmp_path, env=env) as host:
            client = httpx.Client(base_url=f"http://{host}", timeout=30)
            browser = httpx.Client(
                base_url=f"http://{host}",
                timeout=30,
                cookies={settings.SESSION_COOKIE_NAME: cookie},
            )

            def predictions(n: int, offset: int = 0) -> tuple[Counter[int], list[float], list[str]]:
                statuses: Counter[int] = Counter()
                took, ids = [], []
                for i in range(n):
                    t0 = time.monotonic()
                    r = _predict(client, key, SUBJECTS[(offset + i) % len(SUBJECTS)])
                    took.append(time.monotonic() - t0)
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        ids.extend(p["decision_id"] for p in r.json()["predictions"])
                return statuses, took, ids

            # Redis up: the baseline.
            before, _, _ = predictions(10)
            assert before == {200: 10}, before
            assert browser.get("/monitoring/").status_code == 200

            # Redis stopped in the middle of a stream of predictions.
            stopped = threading.Event()
            during: Counter[int] = Counter()
            sent_during = 0

            def stop_soon() -> None:
                time.sleep(0.5)
                redis.stop()
                stopped.set()

            stopper = threading.Thread(target=stop_soon)
            stopper.start()
            while not stopped.is_set():
                _predict(client, key, SUBJECTS[0])
            stopper.join()
            outage, outage_took, _ = predictions(30, offset=3)
            sent_during += sum(outage.values())
            during.update(outage)

            # The dashboard: the full page and the partial the polling fallback fetches.
            page = browser.get("/monitoring/")
            partial = browser.get("/monitoring/", headers={"HX-Request": "true"})
            health = client.get("/health")

            # A batch submission must be refused (503), not accepted and lost.
            jobs_before = set(BatchJob.objects.values_list("pk", flat=True))
            t0 = time.monotonic()
            batch = client.post(
                BATCH,
                files={"file": ("cases.csv", _batch_csv(5), "text/csv")},
                data={"purpose": "credit_scoring", "subject_column": "applicant"},
                headers={"Authorization": f"Bearer {key}"},
            )
            batch_took = time.monotonic() - t0
            new_jobs = BatchJob.objects.exclude(pk__in=jobs_before)
            job_states = sorted(new_jobs.values_list("status", flat=True))

            # A wrong key: the failure counter lives in the (Redis) cache.
            bad_key = client.post(
                PREDICT,
                json={"rows": [ROW], "subject": SUBJECTS[1]},
                headers={"Authorization": "Bearer gh_wrong_key_for_the_fault_test"},
            )

            # A non-linear model: its explanation is queued in Celery after commit.
            mlp = register(
                family,
                family.owner,
                Registration(
                    version="2.0.0",
                    extra={
                        "architecture": "mlp",
                        "architecture_kwargs": {"n_inputs": 7, "hidden": [2], "n_classes": 2},
                    },
                ),
                artifact=_mlp_like_the_logistic_model(),
            )
            registry_services.version_validate(version=mlp, user=family.owner)
            registry_services.version_approve(version=mlp, user=approver, reason="ok")
            registry_services.version_deploy(version=mlp, user=family.owner, target="production")
            nonlinear, nonlinear_took, nonlinear_ids = predictions(5, offset=7)
            sent_during += sum(nonlinear.values())
            during.update(nonlinear)
            mlp_recorded_not_200 = Decision.objects.filter(version=mlp).count() - len(nonlinear_ids)

            # Redis back (empty, as after a restart without persistence).
            redis.start()
            recovered_at = time.monotonic()
            after: Counter[int] = Counter()
            while time.monotonic() - recovered_at < 15:
                after, _, _ = predictions(5, offset=11)
                if after == {200: 5}:
                    break
                time.sleep(0.5)
            recovery_s = time.monotonic() - recovered_at
            batch_after = client.post(
                BATCH,
                files={"file": ("cases.csv", _batch_csv(5), "text/csv")},
                data={"purpose": "credit_scoring", "subject_column": "applicant"},
                headers={"Authorization": f"Bearer {key}"},
            )
            page_after = browser.get("/monitoring/")
            health_after = client.get("/health")
            client.close()
            browser.close()

    served = during.get(200, 0)
    print(
        f"\nRedis stopped during traffic: {sent_during} predictions sent during the outage, "
        f"{served} served (200), {sent_during - served} failed {dict(during)}; linear "
        f"{dict(outage)} in {1000 * max(outage_took):.0f} ms at most; non-linear (explanation "
        f"queued in Celery) {dict(nonlinear)} in {1000 * max(nonlinear_took):.0f} ms at most, "
        f"{mlp_recorded_not_200} decision(s) recorded for non-200 answers"
    )
    print(
        f"dashboard during the outage: page {page.status_code}, polled partial "
        f"{partial.status_code}; /health {health.status_code}; wrong key {bad_key.status_code}"
    )
    batch_code = (
        batch.json().get("code") if batch.headers.get("content-type", "").startswith(JSON) else ""
    )
    print(
        f"batch during the outage: {batch.status_code} {batch_code or batch.text[:80]}"
        f" in {batch_took:.2f} s (Retry-After {batch.headers.get('Retry-After')}), jobs left "
        f"{job_states}"
    )
    print(
        f"Redis back: predictions {dict(after)} within {recovery_s:.1f} s, batch "
        f"{batch_after.status_code}, dashboard {page_after.status_code}, /health "
        f"{health_after.status_code}"
    )
    assert outage == {200: 30}, f"linear predictions with Redis down: {dict(outage)}"
    assert page.status_code == 200, page.text[:500]
    assert partial.status_code == 200, partial.text[:500]
    assert batch.status_code == 503, batch.text[:500]
    assert batch.json()["code"] == "queue_unavailable"
    assert batch.headers.get("Retry-After")
    assert batch_took < 10, f"the 503 took {batch_took:.1f} s"
    assert BatchStatus.QUEUED not in job_states, job_states
    # The failure counter (cache) is down too: the key is still refused with 401, not a 500.
    assert bad_key.status_code == 401, bad_key.text[:300]
    assert nonlinear == {200: 5}, f"non-linear predictions with Redis down: {dict(nonlinear)}"
    assert after == {200: 5}, after
    assert batch_after.status_code == 202, batch_after.text[:500]
    assert page_after.status_code == 200
    assert health_after.status_code == 200, health_after.text


# --- PostgreSQL restarted under load ------------------------------------------------------------

SEED = """
import json, os, sys, time
from django.core.management import call_command
t0 = time.monotonic()
call_command("migrate", interactive=False, verbosity=0)
call_command("createcachetable")
print(f"MIGRATE_S={time.monotonic() - t0:.1f}")
from django.conf import settings
from apps.registry import services as rs
from apps.registry.permissions import FamilyAction
from apps.registry.schemas import FamilyIn
from gatehouse import services
from gatehouse.roles import Role
from tests.factories import UserFactory
from tests.registry_models import serve
from apps.compliance.models import Consent, DataSubject, SubjectReference
from gatehouse.pseudonyms import pseudonymise
rs._enqueue_packaging = lambda _id: None
owner = UserFactory(roles=[Role.MODEL_OWNER], username="owner")
family = rs.family_create(data=FamilyIn(slug="credit-risk", name="Credit risk",
    purposes=["credit scoring"], legal_basis="consent", consent_purpose="credit_scoring",
    risk_class="high", retention_days=365), owner=owner)
approver = UserFactory(roles=[Role.APPROVER], username="approver")
rs.family_grant(family=family, to=approver, actions=[FamilyAction.APPROVE])
serve(family, owner, approver, "1.0.0")
consumer = UserFactory(roles=[Role.API_CONSUMER], username="consumer")
rs.family_grant(family=family, to=consumer, actions=[FamilyAction.VIEW, FamilyAction.PREDICT])
raw = services.apikey_create(user=consumer, name="fault", actions=("view", "predict")).raw
refs = json.loads(os.environ["FAULT_SUBJECTS"])
for ref in refs:
    s = DataSubject.objects.create(pseudonym=pseudonymise(ref))
    SubjectReference.objects.create(subject=s, reference=ref)
    Consent.objects.create(subject=s, purpose="credit_scoring", granted=True,
        notice_version="t", source="api")
print("KEY=" + raw)
"""


def _manage(env: dict[str, str], *argv: str, timeout: float = 120) -> str:
    r = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert r.returncode == 0, f"manage.py {argv[0]} failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}"
    return r.stdout


def test_postgres_restarted_under_load_loses_no_acknowledged_decision(tmp_path: Path) -> None:
    """A private PostgreSQL, migrated and seeded; uvicorn on it; four client threads predict
    while ``pg_ctl restart -m fast`` runs. Requests during the restart may fail; every decision
    id answered with a 200 must be in the database afterwards, and the decision log must verify."""
    require_binaries("postgres")
    import os

    with private_postgres() as pg:
        pg.psql("CREATE DATABASE gatehouse_faults")
        url = pg.url("gatehouse_faults")
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "GATEHOUSE_TESTING": "1",
            "PYTHONUNBUFFERED": "1",
            "ARTIFACT_STORE_DIR": str(tmp_path / "artifacts"),
            "FAULT_SUBJECTS": json.dumps(SUBJECTS),
        }
        env.pop("REDIS_URL", None)  # the database is the fault here; broker on the file system
        env.setdefault("GATEHOUSE_VAR_DIR", str(tmp_path / "var"))
        t0 = time.monotonic()
        # One process migrates and seeds (one Django and torch start-up instead of three).
        seeded = _manage(env, "shell", "-c", SEED, timeout=300)
        migrate_s = float(next(x[10:] for x in seeded.splitlines() if x.startswith("MIGRATE_S=")))
        key = next(line[4:] for line in seeded.splitlines() if line.startswith("KEY="))
        setup_s = time.monotonic() - t0

        server_env = {
            k: env[k] for k in ("DATABASE_URL", "ARTIFACT_STORE_DIR", "GATEHOUSE_VAR_DIR")
        }
        # The server with the production database settings (CONN_MAX_AGE, health checks), not
        # the test ones: gatehouse/asgi.py's HTTP threads keep their connections, so every
        # thread's connection breaks at the restart and must be replaced, not reused.
        server_env["GATEHOUSE_TESTING"] = "0"
        # The load comes from one key; the rate limiter stays in the path but must not refuse
        # it (this test is about the restart, tests/test_ratelimit.py about the limits).
        server_env.update(UNLIMITED)
        with asgi_server(tmp_path, env=server_env) as host:
            ok_ids: list[str] = []
            failures: list[tuple[float, str]] = []
            statuses: Counter[str] = Counter()
            lock = threading.Lock()
            stop = threading.Event()

            def fire(n: int) -> None:
                client = httpx.Client(base_url=f"http://{host}", timeout=30)
                i = 0
                while not stop.is_set():
                    i += 1
                    request_id = f"pgfault-{n}-{i}-{uuid.uuid4().hex[:6]}"
                    try:
                        r = client.post(
                            PREDICT,
                            json={"rows": [ROW], "subject": SUBJECTS[(n * 7 + i) % len(SUBJECTS)]},
                            headers={"Authorization": f"Bearer {key}", "X-Request-ID": request_id},
                        )
                        status = str(r.status_code)
                    except httpx.HTTPError as exc:
                        r, status = None, type(exc).__name__
                    with lock:
                        statuses[status] += 1
                        if r is not None and r.status_code == 200:
                            ok_ids.extend(p["decision_id"] for p in r.json()["predictions"])
                        else:
                            failures.append((time.monotonic(), status))
                client.close()

            threads = [threading.Thread(target=fire, args=(n,)) for n in range(4)]
            for t in threads:
                t.start()
            time.sleep(4)
            with lock:
                ok_before = len(ok_ids)
            restart_started = time.monotonic()
            pg.restart()
            restart_s = time.monotonic() - restart_started
            time.sleep(6)
            stop.set()
            for t in threads:
                t.join(60)
            with lock:
                ok_total = len(ok_ids)

        # After the restart, failures should stop at once: stale connections must not keep
        # failing (CONN_MAX_AGE / CONN_HEALTH_CHECKS).
        late = [s for at, s in failures if at > restart_started + restart_s + 2]
        window = [s for at, s in failures if at >= restart_started - 1]
        ids_present = 0
        for start in range(0, len(ok_ids), 500):
            chunk = ok_ids[start : start + 500]
            joined = ",".join(f"'{i}'" for i in chunk)
            found = pg.psql(
                f"SELECT count(*) FROM inference_decision WHERE id IN ({joined})",  # noqa: S608 - uuids from our own answers
                database="gatehouse_faults",
            )
            ids_present += int(found)
        verified = subprocess.run(
            [PYTHON, str(ROOT / "manage.py"), "verify_decisions"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        verify_line = (verified.stdout + verified.stderr).strip().splitlines()[-1:] or [""]

    print(
        f"\nPostgreSQL restarted under load (4 client threads; set-up {setup_s:.1f} s, of which "
        f"migrate {migrate_s:.1f} s): "
        f"restart took {restart_s:.2f} s; {ok_total} 2xx ({ok_before} before the restart), "
        f"{ids_present} of their decision ids present afterwards; statuses {dict(statuses)}; "
        f"{len(window)} failure(s) from 1 s before the restart on {Counter(window)}, "
        f"{len(late)} more than 2 s after it came back {Counter(late)}"
    )
    print(f"verify_decisions: {verify_line[0]}")
    assert ok_before > 0, "no traffic before the restart"
    assert ok_total > ok_before, "no traffic after the restart"
    assert ids_present == len(ok_ids), f"{len(ok_ids) - ids_present} acknowledged decisions lost"
    assert len(set(ok_ids)) == len(ok_ids)
    assert not [s for s in statuses if s.startswith("2") and s != "200"]
    assert verified.returncode == 0, verify_line[0]
    assert not late, f"requests still failing > 2 s after the restart: {Counter(late)}"
