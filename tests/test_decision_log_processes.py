"""The decision log's sequencer as real processes against the test database (gatehouse/tlog):
a stand-by takes over from a SIGKILLed active sequencer, a sequencer killed in the middle of a
pass loses and duplicates nothing, and (PostgreSQL) an open predict transaction in one process
does not block a prediction in another.

Each test prints what it measured.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import StringIO
from itertools import groupby
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client

from apps.inference import records
from apps.inference import services as inference_services
from apps.inference.models import Decision, Route
from gatehouse.pseudonyms import pseudonymise
from gatehouse.tlog import signing
from gatehouse.tlog.models import LogCheckpoint, LogLeaf, LogLease, LogNode
from gatehouse.tlog.sequencer import LEASE_NAME, Sequencer
from gatehouse.tlog.verification import verify_log
from gatehouse.tlog.verify import open_checkpoint
from tests.conftest import bearer
from tests.processes import ROOT, _env, _stop, _wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PYTHON = sys.executable
ROW = {"income": 40.0, "age": 35, "housing": "rent", "sex": "female"}
PREDICT = "/api/v1/models/credit-risk/predict"
LEASE_S = 1.0
# A short lease and merge delay: a stand-by takes over within about a second.
FAST = {"LOG_LEASE_S": str(LEASE_S), "LOG_MAX_MERGE_DELAY_S": "0.2"}


# --- helpers ----------------------------------------------------------------------------------


def _queue(version: Any, n: int, *, chunk: int = 5000) -> list[str]:
    """Record ``n`` decisions of ``version`` as the predict path does (decisions and their
    leaves, one transaction per ``chunk``); returns their ids."""
    subject = "applicant-1"
    ids: list[str] = []
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        request = inference_services.PredictRequest(
            rows=[{**ROW, "income": float(i % 150)} for i in range(size)],
            subject=subject,
            request_id=f"queued-{start}",
        )
        with transaction.atomic():
            decisions = records.record(
                inference_services.build_decisions(
                    family=version.family,
                    version=version,
                    route=Route.PRODUCTION,
                    user=version.family.owner,
                    key=None,
                    request=request,
                    probabilities=[[0.4, 0.6]] * size,
                    latency_ms=1.0,
                    pseudonym=pseudonymise(subject),
                )
            )
        ids.extend(str(d.id) for d in decisions)
    return ids


def _until(ready: Callable[[], Any], timeout: float, what: str, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := ready():
            return found
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def _pending() -> int:
    return LogLeaf.objects.filter(idx=None).count()


def _integrated() -> int:
    return LogLeaf.objects.exclude(idx=None).count()


def _lease() -> LogLease | None:
    return LogLease.objects.filter(name=LEASE_NAME).first()


class Sequencers:
    """``manage.py run_sequencer`` processes, by owner (the name each prints when it starts)."""

    def __init__(self) -> None:
        self.started: list[tuple[subprocess.Popen[Any], Path]] = []
        self.by_owner: dict[str, subprocess.Popen[Any]] = {}
        self.logs: dict[str, Path] = {}

    def ready(self) -> Sequencers:
        """Wait until every process runs its loop (Django and the project loaded)."""
        for process, log in self.started:
            _wait_for(lambda log=log: b" started" in log.read_bytes(), process, log, "sequencer")
            first = log.read_text(errors="replace").split(" started", 1)[0]
            owner = first.rsplit("sequencer ", 1)[1].strip()
            self.by_owner[owner] = process
            self.logs[owner] = log
        return self

    def alive(self, owner: str) -> bool:
        process = self.by_owner.get(owner)
        return process is not None and process.poll() is None

    def active(self) -> str | None:
        """The owner of the lease when it is one of these processes and alive."""
        lease = _lease()
        if lease is not None and self.alive(lease.owner) and lease.expires > time.time():
            return lease.owner
        return None

    def kill(self, owner: str) -> None:
        process = self.by_owner[owner]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def log(self, owner: str) -> str:
        return self.logs[owner].read_text(errors="replace")


@contextmanager
def sequencers(tmp_path: Path, n: int, env: dict[str, str]) -> Iterator[Sequencers]:
    """``n`` sequencer processes started together on the test database (``ready()`` waits for
    them); each stops (SIGTERM: it releases the lease) at the end unless the test killed it."""
    group = Sequencers()
    env = {"LOG_WITNESS_DIR": str(tmp_path / "witness"), **env}
    try:
        for i in range(n):
            log = tmp_path / f"sequencer-{i}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [PYTHON, str(ROOT / "manage.py"), "run_sequencer"],
                    cwd=ROOT,
                    env=_env(**env),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            group.started.append((process, log))
        yield group
    finally:
        for process, log in group.started:
            if process.poll() is None:
                _stop(process, log)


def _assert_log_whole(expected_refs: list[str]) -> dict[str, Any]:
    """Every leaf integrated exactly once at contiguous indexes, in passes one after another
    (one checkpoint each, signed), and the whole log verifies; returns figures to print."""
    total = LogLeaf.objects.count()
    assert _pending() == 0
    indexes = list(LogLeaf.objects.exclude(idx=None).order_by("idx").values_list("idx", flat=True))
    assert indexes == list(range(total)), "indexes are not 0..n-1"
    refs = set(LogLeaf.objects.filter(kind=records.KIND).values_list("ref", flat=True))
    assert set(expected_refs) <= refs, f"{len(set(expected_refs) - refs)} decisions not in the log"
    # One pass = one integrated_at; passes must follow each other, not interleave.
    stamps = list(LogLeaf.objects.order_by("idx").values_list("idx", "integrated_at"))
    passes = [(at, [i for i, _ in run]) for at, run in groupby(stamps, key=lambda r: r[1])]
    times = [at for at, _ in passes]
    assert times == sorted(times), "a later pass numbered leaves before an earlier one"
    assert len(set(times)) == len(times), "two passes interleaved"
    ends = [run[-1] + 1 for _, run in passes]
    checkpoints = list(LogCheckpoint.objects.order_by("size"))
    assert [c.size for c in checkpoints] == ends, "not one checkpoint per pass"
    created = [c.created_at for c in checkpoints]
    assert created == sorted(created), "checkpoints were not signed in size order"
    keys = signing.verifier_keys()
    for c in checkpoints:
        signed = open_checkpoint(c.note, keys, origin=signing.origin())
        assert (signed.size, signed.root) == (c.size, bytes(c.root))
    result = verify_log()
    assert result.ok, result.problem
    assert (result.leaves, result.pending, result.size) == (total, 0, total)
    return {"leaves": total, "passes": len(passes), "checkpoints": len(checkpoints)}


# --- 1. fail-over -----------------------------------------------------------------------------


def test_a_standby_sequencer_takes_over_from_a_killed_one(tmp_path: Path, v1: Any) -> None:
    """Two ``run_sequencer`` processes; the one holding the lease is SIGKILLed; the other
    takes the lease over and integrates what was queued since, continuing the same tree."""
    t0 = time.monotonic()
    with sequencers(tmp_path, 2, FAST) as starting:
        group = starting.ready()
        startup_s = time.monotonic() - t0
        first = _queue(v1, 50)
        queued = time.monotonic()
        _until(lambda: _pending() == 0, 15, "the first leaves integrated")
        first_s = time.monotonic() - queued
        before = _until(group.active, 5, "an active sequencer")
        (standby,) = set(group.by_owner) - {before}
        size_before = _integrated()

        group.kill(before)
        killed = time.monotonic()
        taken_before = group.log(standby).count("took the lease")
        more = _queue(v1, 50)
        _until(lambda: _pending() == 0, 15, "the leaves queued after the kill integrated")
        takeover_s = time.monotonic() - killed
        after = _lease()
        assert after is not None
        assert after.owner == standby, "the lease did not pass to the stand-by"
        assert group.alive(standby)
        checkpoint = LogCheckpoint.objects.order_by("-size").first()
        assert checkpoint is not None
        # The witness file is written just after the pass commits: wait for it, not for the queue.
        witness_file = tmp_path / "witness" / f"{checkpoint.size:012d}.checkpoint"
        _until(witness_file.exists, 10, "the stand-by's checkpoint exported for witnesses")
        witnessed = witness_file.read_text()
        out = StringIO()
        call_command("verify_decisions", "--json", stdout=out)
        standby_log, killed_log = group.log(standby), group.log(before)

    figures = _assert_log_whole(first + more)
    assert size_before >= len(first)
    assert _integrated() == size_before + len(more)
    assert witnessed == checkpoint.note, "the new active sequencer did not export its checkpoint"
    verified = json.loads(out.getvalue())
    assert verified["ok"]
    assert verified["size"] == figures["leaves"]
    for text in (standby_log, killed_log):
        for bad in ("Traceback", "IntegrityError", "pass failed"):
            assert bad not in text, text[-3000:]
    # The stand-by took the lease once, after the kill: never while the other one held it.
    assert standby_log.count("took the lease") == taken_before + 1
    assert taken_before == 0, "the stand-by took the lease while the other one was renewing it"
    print(
        f"\nfail-over: 2 sequencers up in {startup_s:.1f} s; 50 leaves integrated in "
        f"{first_s:.2f} s; active one SIGKILLed, the stand-by integrated the next 50 within "
        f"{takeover_s:.2f} s (lease {LEASE_S:.0f} s); {figures}"
    )
    assert takeover_s < LEASE_S + 5


# --- 2. killed in the middle of a pass --------------------------------------------------------

N_LEAVES = 30_000
KILLS = 3


class _RolledBack(Exception):
    pass


def _dry_run_pass() -> float:
    """The CPU time (of the sequencer's own process) of the pass the sequencers are about to
    run: the same pass over the same leaves, in this process, rolled back. The test then keeps
    the lease while the sequencers start."""
    rehearsal = Sequencer(owner="the test")
    assert rehearsal.acquire()
    started = time.thread_time()
    try:
        with transaction.atomic():
            step = rehearsal.integrate(limit=N_LEAVES + 1000)
            took = time.thread_time() - started
            raise _RolledBack
    except _RolledBack:
        pass
    assert step.integrated == LogLeaf.objects.count()
    assert _integrated() == 0
    LogLease.objects.filter(name=LEASE_NAME).update(expires=time.time() + 3600)
    return took


def _cpu_s(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): how far it got in its pass,
    whatever else the machine is doing."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_sequencer_killed_mid_pass_loses_and_duplicates_nothing(
    tmp_path: Path, settings: Any, v1: Any
) -> None:
    """30k leaves integrated in one pass (LOG_BATCH_SIZE above that); the active sequencer is
    SIGKILLed at a random moment of its pass (timed against a rehearsal of the same pass here,
    rolled back), three times, a stand-by taking over each time; after each kill nothing of the
    pass is left; the last stand-by integrates every leaf exactly once, and the log verifies."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("kills are timed by the process's CPU time in /proc")
    settings.LOG_WITNESS_DIR = ""  # the rehearsal's checkpoint is rolled back: export none
    # This test holds the lease until the stand-bys are up (they start while it queues).
    LogLease.objects.update_or_create(
        name=LEASE_NAME, defaults={"owner": "the test", "expires": time.time() + 3600}
    )
    env = {**FAST, "LOG_BATCH_SIZE": str(N_LEAVES + 1000)}
    rng = random.Random(11)  # noqa: S311 - kill timing, not cryptography
    mid_pass = 0
    delays: list[float] = []
    t0 = time.monotonic()
    with sequencers(tmp_path, KILLS + 1, env) as starting:
        ids = _queue(v1, N_LEAVES)
        queue_s = time.monotonic() - t0
        total = LogLeaf.objects.count()
        # The least of three: a rehearsal slowed by whatever else runs here would time the kills
        # too late.
        rehearsal_s = min(_dry_run_pass() for _ in range(3))
        group = starting.ready()
        startup_s = time.monotonic() - t0
        assert _integrated() == 0
        LogLease.objects.filter(name=LEASE_NAME).update(expires=0)  # the stand-bys may start
        for _ in range(KILLS):
            owner = _until(group.active, 20, "a stand-by taking the lease", every=0.002)
            took_over, pid = time.monotonic(), group.by_owner[owner].pid
            # A random point of the pass, by the CPU time the process has spent in it.
            until = _cpu_s(pid) + rng.uniform(0.05, 0.6) * rehearsal_s
            _until(lambda p=pid, u=until: _cpu_s(p) >= u, 30, "the pass progressing", every=0.001)
            delay = time.monotonic() - took_over
            group.kill(owner)
            delays.append(delay)
            done = _integrated()
            assert done in (0, total), f"a killed pass left {done} of {total} leaves integrated"
            if done:
                break  # it had committed: the kill came after the pass
            assert not LogNode.objects.exists(), "a killed pass left interior nodes"
            assert not LogCheckpoint.objects.exists(), "a killed pass left a checkpoint"
            mid_pass += 1
        finished = time.monotonic()
        survivor = _until(group.active, 20, "a stand-by taking the lease", every=0.002)
        base = _cpu_s(group.by_owner[survivor].pid)
        _until(lambda: _pending() == 0, 45, "every leaf integrated after the kills", every=0.01)
        survivor_cpu = _cpu_s(group.by_owner[survivor].pid) - base
        last_s = time.monotonic() - finished
        lease, checkpoint = _lease(), LogCheckpoint.objects.get()
        assert lease is not None
        pass_s = (checkpoint.created_at - lease.acquired_at).total_seconds()
    t0 = time.monotonic()
    figures = _assert_log_whole(ids)
    verify_s = time.monotonic() - t0
    assert figures["passes"] == 1
    # The last one released the lease when it stopped: a drain here finds nothing left.
    assert Sequencer().drain() == 0
    print(
        f"\nkilled mid-pass: {total} leaves queued in {queue_s:.1f} s; the pass rehearsed here "
        f"in {rehearsal_s:.2f} s of CPU; {KILLS + 1} sequencers up (meanwhile) in "
        f"{startup_s:.1f} s; SIGKILLed {mid_pass} times mid-pass, after "
        f"{', '.join(f'{1000 * d:.0f}' for d in delays)} ms; the last stand-by was done "
        f"{last_s:.1f} s after the last kill (its pass {pass_s:.2f} s, {survivor_cpu:.2f} s of "
        f"CPU); verified in {verify_s:.1f} s; {figures}"
    )
    assert mid_pass >= KILLS - 1, f"only {mid_pass} of {KILLS} kills landed before the commit"


# --- 3. an open predict transaction blocks no other process (PostgreSQL) --------------------

HOLD_S = 10
HOLDER = """
import os, time
from django.db import transaction
from apps.inference import services
from apps.registry.models import ModelFamily
family = ModelFamily.objects.get(slug="credit-risk")
request = services.PredictRequest(
    rows=[{"income": 40.0, "age": 35, "housing": "rent", "sex": "female"}],
    subject="applicant-held", request_id="held-open",
)
with transaction.atomic():
    status, body = services.predict(family=family, user=family.owner, key=None, request=request)
    print("HOLDING " + body["predictions"][0]["decision_id"], flush=True)
    time.sleep(float(os.environ["HOLD_S"]))
print("COMMITTED", flush=True)
"""


@pytest.mark.usefixtures("isolated_serving")
def test_an_open_predict_transaction_does_not_block_another_process(
    tmp_path: Path, settings: Any, v1: Any, api_key: Any, grant_consent: Any
) -> None:
    """A ``manage.py shell`` process predicts inside a transaction it keeps open for 10 s
    (decision and leaf inserted, not committed); meanwhile this process predicts through the
    API and integrates the log, both at once; then the holder commits and its decision is
    integrated after the other's, though its leaf was inserted first."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time (BEGIN IMMEDIATE): holding one blocks all")
    settings.LOG_WITNESS_DIR = str(tmp_path / "witness")
    grant_consent("applicant-held", "applicant-free")
    _, raw = api_key()
    client = Client()

    def predict() -> tuple[float, str]:
        started = time.monotonic()
        response = client.post(
            PREDICT,
            json.dumps({"rows": [ROW], "subject": "applicant-free"}),
            content_type="application/json",
            **bearer(raw),
        )
        took = time.monotonic() - started
        assert response.status_code == 200, response.content
        return took, response.json()["predictions"][0]["decision_id"]

    warm_s, _ = predict()  # loads the model: the timed prediction measures waiting only
    sequencer = Sequencer()  # this process integrates: one owner, so it keeps the lease
    sequencer.drain()
    log = tmp_path / "holder.log"
    env = _env(ARTIFACT_STORE_DIR=str(settings.ARTIFACT_STORE_DIR), HOLD_S=str(HOLD_S))
    with log.open("wb") as out:
        holder = subprocess.Popen(
            [PYTHON, str(ROOT / "manage.py"), "shell", "-c", HOLDER],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(lambda: b"HOLDING " in log.read_bytes(), holder, log, "holder", timeout=60)
        held_at = time.monotonic()
        held = log.read_text().split("HOLDING ", 1)[1].split()[0]
        predict_s, free = predict()
        started = time.monotonic()
        integrated = sequencer.drain()
        drain_s = time.monotonic() - started
        still_holding = holder.poll() is None and b"COMMITTED" not in log.read_bytes()
        held_visible = Decision.objects.filter(pk=held).exists()
        free_leaf = LogLeaf.objects.get(kind=records.KIND, ref=free)
        holder.wait(timeout=HOLD_S + 30)
        hold_s = time.monotonic() - held_at
    finally:
        if holder.poll() is None:
            _stop(holder, log)
    assert holder.returncode == 0, log.read_text()[-3000:]
    assert still_holding, "the holder committed before the other process was done"
    assert not held_visible, "the held decision was visible before its commit"
    assert free_leaf.idx is not None, "the committed decision was not integrated meanwhile"
    assert integrated >= 1
    assert sequencer.drain() == 1
    held_leaf = LogLeaf.objects.get(kind=records.KIND, ref=held)
    assert held_leaf.id < free_leaf.id, "the held leaf was inserted first"
    assert held_leaf.idx > free_leaf.idx, "yet integrated after the one committed first"
    figures = _assert_log_whole([held, free])
    print(
        f"\nopen predict transaction held {hold_s:.1f} s in another process: a prediction "
        f"here took {1000 * predict_s:.0f} ms (first, cold: {1000 * warm_s:.0f} ms), "
        f"integrating the log {1000 * drain_s:.0f} ms; {figures}"
    )
    assert predict_s < 3, f"the prediction waited {predict_s:.1f} s for the open transaction"
    assert drain_s < 3, f"the sequencer waited {drain_s:.1f} s for the open transaction"
