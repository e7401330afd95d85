"""Rate limits per API key and per user: 429 with Retry-After, separate budgets, windows that
free, limits that are off at 0, and an atomic count under concurrent threads and processes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import resolve, reverse

from gatehouse import ratelimit
from gatehouse.models import ApiKey, RateLimitCounter
from gatehouse.ratelimit import Rate, parse_rate
from gatehouse.roles import Role
from tests.conftest import bearer
from tests.processes import ROOT
from tests.processes import test_database_url as shared_database_url

ME = "/api/v1/me"
PREDICT = "/api/v1/models/credit-risk/predict"
BODY = json.dumps({"rows": [{"x": 1}], "subject": "applicant-1"})
REDIS_URL = os.environ.get("REDIS_URL", "")

STORAGES = [
    "database",
    pytest.param("redis", marks=pytest.mark.skipif(not REDIS_URL, reason="REDIS_URL is not set")),
]


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The limiter's clock only, at 1000 s: inside the 60 s window that starts at 960."""
    fake = FakeClock(1000.0)
    monkeypatch.setattr(ratelimit, "time", fake)
    return fake


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> None:
    settings.RATE_LIMIT_API = "0"
    settings.RATE_LIMIT_PREDICT = "0"
    settings.RATE_LIMIT_STORAGE = "database"


def predict(client: Client, raw: str) -> Any:
    return client.post(PREDICT, BODY, content_type="application/json", **bearer(raw))


@pytest.mark.django_db
def test_the_request_over_the_limit_gets_429_with_retry_after_and_is_logged_once(
    client, api_key, settings, clock, caplog
):
    settings.RATE_LIMIT_PREDICT = "3/60"
    _, raw = api_key()
    # Counted whatever the prediction's own outcome (no model is served here: 503).
    statuses = [predict(client, raw).status_code for _ in range(3)]
    assert 429 not in statuses
    with caplog.at_level(logging.WARNING, logger="gatehouse.security"):
        refused = [predict(client, raw) for _ in range(2)]
    for response in refused:
        assert response.status_code == 429
        assert response["Retry-After"] == "20"  # the window ends at 1020
        body = response.json()
        assert body["code"] == "rate_limited"
        assert body["errors"] == []
        assert "3 predict requests per 60 s" in body["detail"]
    logged = [r.getMessage() for r in caplog.records if "rate limited" in r.getMessage()]
    assert len(logged) == 1  # once per window, not once per refusal
    assert "scope=predict limit=3/60s" in logged[0]
    # Other endpoints are not predictions: only RATE_LIMIT_API applies to them (off here).
    assert client.get(ME, **bearer(raw)).status_code == 200


@pytest.mark.django_db
def test_every_api_request_counts_against_the_api_limit(client, api_key, settings, clock):
    settings.RATE_LIMIT_API = "2/10"
    _, raw = api_key()
    assert client.get(ME, **bearer(raw)).status_code == 200
    assert predict(client, raw).status_code != 429
    response = client.get(ME, **bearer(raw))
    assert response.status_code == 429
    assert response["Retry-After"] == "10"  # windows of 10 s: 1000 is a boundary


@pytest.mark.django_db
def test_separate_keys_and_users_have_separate_budgets(client, api_key, make_user, settings, clock):
    settings.RATE_LIMIT_API = "2/60"
    user, first = api_key()
    _, second = api_key(user=user)  # the same owner's other key
    _, foreign = api_key()
    for raw in (first, second, foreign):
        assert [client.get(ME, **bearer(raw)).status_code for _ in range(2)] == [200, 200]
    assert client.get(ME, **bearer(first)).status_code == 429
    # A browser session counts per user, apart from that user's keys.
    session = Client()
    session.force_login(user)
    assert [session.get(ME).status_code for _ in range(3)] == [200, 200, 429]
    other = Client()
    other.force_login(make_user(Role.BUSINESS_USER))
    assert other.get(ME).status_code == 200


@pytest.mark.django_db
def test_the_window_frees_after_retry_after(client, api_key, settings, clock):
    settings.RATE_LIMIT_PREDICT = "2/60"
    _, raw = api_key()
    assert [predict(client, raw).status_code == 429 for _ in range(3)] == [False, False, True]
    clock.now = 1019.5
    response = predict(client, raw)
    assert response.status_code == 429
    assert response["Retry-After"] == "1"
    clock.now = 1020.0  # the next window
    assert [predict(client, raw).status_code == 429 for _ in range(3)] == [False, False, True]
    assert RateLimitCounter.objects.count() == 1  # one row per caller and scope, reused


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["0", "", " 0 "])
def test_a_limit_of_zero_or_empty_is_off_and_costs_no_query(client, api_key, settings, value):
    settings.RATE_LIMIT_API = value
    settings.RATE_LIMIT_PREDICT = value
    _, raw = api_key()
    assert all(predict(client, raw).status_code != 429 for _ in range(5))
    assert not RateLimitCounter.objects.exists()


@pytest.mark.django_db
def test_one_statement_counts_every_scope_of_a_prediction(rf, settings):
    settings.RATE_LIMIT_API = "1200/60"
    settings.RATE_LIMIT_PREDICT = "600/60"
    request = rf.post(PREDICT)
    request.resolver_match = resolve(PREDICT)
    with CaptureQueriesContext(connection) as ctx:
        ratelimit.enforce(request, subject="key:1")
    assert len(ctx.captured_queries) == 1
    assert dict(RateLimitCounter.objects.values_list("bucket", "hits")) == {
        "api:key:1": 1,
        "predict:key:1": 1,
    }


def test_the_predict_routes_still_resolve():
    for name in ratelimit.PREDICT_ROUTES:
        path = reverse(name, kwargs={"family": "f"})
        assert resolve(path).view_name == name


def test_rates_are_parsed_and_bad_ones_refused():
    assert parse_rate("600/60") == Rate(600, 60)
    assert parse_rate(" 5 / 1 ") == Rate(5, 1)
    assert parse_rate("0") is None
    assert parse_rate("0/60") is None
    assert parse_rate("") is None
    for bad in ("600", "600/0", "ten/60", "-1/60"):
        with pytest.raises(ImproperlyConfigured):
            parse_rate(bad)


@pytest.mark.django_db
def test_an_unreachable_redis_lets_requests_through(client, api_key, settings, caplog):
    settings.RATE_LIMIT_API = "1/60"
    settings.RATE_LIMIT_STORAGE = "redis"
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
    _, raw = api_key()
    try:
        with caplog.at_level(logging.WARNING, logger="gatehouse.security"):
            assert [client.get(ME, **bearer(raw)).status_code for _ in range(3)] == [200] * 3
    finally:
        ratelimit._redis_down_until = 0.0
        ratelimit._redis.pop(settings.REDIS_URL, None)
    assert "Redis unreachable" in caplog.text


# --- Atomicity under concurrent clients -----------------------------------------------------


@pytest.fixture
def storage(request: pytest.FixtureRequest, settings: Any) -> str:
    settings.RATE_LIMIT_STORAGE = request.param
    if request.param == "redis":
        settings.REDIS_URL = REDIS_URL
    return str(request.param)


_WORKER = """
import json, os, sys, threading, time
import django
django.setup()
from django.db import connection
from gatehouse import ratelimit
subject, limit, now, threads, calls, go_at = sys.argv[1:7]
out, lock = [], threading.Lock()
rate = ratelimit.Rate(int(limit), 60)
def work():
    got = [c.hits for _ in range(int(calls))
           for c in ratelimit.hit(subject, [("api", rate)], now=float(now))]
    connection.close()
    with lock:
        out.extend(got)
time.sleep(max(0.0, float(go_at) - time.time()))
pool = [threading.Thread(target=work) for _ in range(int(threads))]
for t in pool: t.start()
for t in pool: t.join()
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("storage", STORAGES, indirect=True)
def test_concurrent_threads_and_processes_are_never_over_admitted(storage):
    """2 processes x 4 threads and 4 threads here, 25 calls each, on one counter: every count
    1..300 is handed out exactly once, so exactly `limit` calls are admitted."""
    subject = f"key:atomic-{os.getpid()}-{time.time_ns()}"
    limit, threads, calls, now = 100, 4, 25, time.time()
    go_at = time.time() + 4.0  # the processes' start-up (django.setup) is over by then
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="gatehouse.settings",
        DATABASE_URL=shared_database_url(),
        GATEHOUSE_TESTING="1",
        RATE_LIMIT_STORAGE=storage,
    )
    args = [subject, limit, now, threads, calls, go_at]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, *map(str, args)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    counts: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        from django.db import connection as thread_connection

        got = [
            c.hits
            for _ in range(calls)
            for c in ratelimit.hit(subject, [("api", Rate(limit, 60))], now=now)
        ]
        thread_connection.close()
        with lock:
            counts.extend(got)

    time.sleep(max(0.0, go_at - time.time()))
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()
    sources = {"test": sorted(counts)}
    for i, process in enumerate(processes):
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-2000:]
        sources[f"process {i}"] = sorted(json.loads(out.strip().splitlines()[-1]))
    counts = [c for got in sources.values() for c in got]
    total = (len(processes) + 1) * threads * calls
    assert sorted(counts) == list(range(1, total + 1)), (
        "a count was handed out twice: "
        + "; ".join(
            f"{name}: {len(got)} calls, {got[:3]}..{got[-3:]}" for name, got in sources.items()
        )
    )
    admitted = sum(1 for c in counts if c <= limit)
    print(f"{storage}: {total} concurrent calls, {admitted} admitted (limit {limit})")
    assert admitted == limit


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("storage", STORAGES, indirect=True)
def test_concurrent_http_clients_get_exactly_the_limit_and_then_429(storage, api_key, settings):
    settings.RATE_LIMIT_API = "25/3600"
    _, raw = api_key()
    subject_rows = RateLimitCounter.objects.count()
    if storage == "redis":  # a key id may recur in another run within the window
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        key_id = ApiKey.objects.get().pk
        for name in client.scan_iter(f"{ratelimit.REDIS_PREFIX}{{key:{key_id}}}:*"):
            client.delete(name)

    def burst() -> list[tuple[int, str | None]]:
        from django.db import connection as thread_connection

        client = Client()
        got = [
            (r.status_code, r.headers.get("Retry-After"))
            for r in (client.get(ME, **bearer(raw)) for _ in range(10))
        ]
        thread_connection.close()
        return got

    with ThreadPoolExecutor(8) as pool:
        results = [
            item for future in [pool.submit(burst) for _ in range(8)] for item in future.result()
        ]
    statuses = [status for status, _ in results]
    assert statuses.count(200) == 25
    assert statuses.count(429) == 55
    assert all(retry and 1 <= int(retry) <= 3600 for status, retry in results if status == 429)
    if storage == "database":
        assert RateLimitCounter.objects.count() == subject_rows + 1
