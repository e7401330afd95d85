"""`make bench-log`: the decision log's own figures (gatehouse/tlog).

  (1) Integration rate. In a scratch database per engine (a fresh SQLite file under
      var/bench-log/; PostgreSQL too when BENCH_LOG_DATABASE_URL is set or the local server
      answers, in a database of its own, gatehouse_bench_log, created and dropped here), queue
      --leaves leaves with the recorders' bulk insert (``tree.enqueue``), then time
      ``Sequencer().drain()``: leaves/s, passes, batch size, time per pass. The tree it built is
      checked against ``root_of`` over the stored leaves.
  (2) Receipt fetch from that stored tree at its full size: ``tree.inclusion_proof`` (queries
      and ms), a whole ``receipts.receipt``, a consistency proof; every proof is verified.
  (3) Proof size and verify time at --sim-leaves (10^6) leaves, simulated in memory with
      ``gatehouse.tlog.verify``: the tree's perfect subtrees as lists, proofs planned with
      ``tree.inclusion_plan`` / ``tree.consistency_plan`` and assembled as ``tree`` does.

Each measurement runs in its own subprocess with Django configured from the environment only
(DJANGO_SETTINGS_MODULE, GATEHOUSE_VAR_DIR, DATABASE_URL) and migrated there. Prints a table and
writes var/bench/tlog.json (and a copy in var/bench-log/).

    python bench/tlog.py [--leaves 200000] [--batch-size N ...] [--sim-leaves 1000000]
    python bench/tlog.py merge-delay --window KEY SINCE UNTIL ... [--wait 30]
        (bench/run.py, in its Django environment: merge delay of the decision leaves created
        in each window, once the queue is empty)

BENCH_LOG_DATABASE_URL: a PostgreSQL server URL (its database is only used to create and drop
the scratch one; BENCH_LOG_DATABASE_NAME names that, default gatehouse_bench_log); "none"
skips PostgreSQL. Unset: postgresql://postgres@127.0.0.1:5432/postgres when it answers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import code_version, loadavg, machine  # noqa: E402  (bench/run.py, as soak.py does)

PYTHON = sys.executable
GOAL_LEAVES_PER_S = 20_000
HZ = os.sysconf("SC_CLK_TCK")
KIND = "bench"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
SIGNING_KEY: list[str] = []  # set once by the parent


def log(message: str) -> None:
    print(f"[bench-log {time.strftime('%H:%M:%S')}] {message}", flush=True)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def leaf_data(ref: str) -> bytes:
    """A bench leaf: canonical JSON naming its record, as a decision's leaf does."""
    return json.dumps({"id": ref, "kind": KIND}, sort_keys=True, separators=(",", ":")).encode()


def proc_cpu_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / HZ


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatehouse.settings")
    import django

    django.setup()


# --- child: integration rate and receipt fetch in one scratch database -----------------------


def child_integrate(args: argparse.Namespace) -> dict[str, Any]:
    setup_django()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from gatehouse.tlog import receipts, signing, tree
    from gatehouse.tlog.models import LogCheckpoint, LogLeaf, LogNode
    from gatehouse.tlog.sequencer import Sequencer
    from gatehouse.tlog.verify import (
        root_of,
        verify_consistency,
        verify_inclusion,
        verify_receipt,
    )

    t = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    migrate_s = time.perf_counter() - t
    vendor = connection.vendor
    with connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute(
                "SELECT pg_backend_pid(), version(), current_setting('synchronous_commit')"
            )
            backend_pid, db_version, sync = cursor.fetchone()
            db_version = f"{db_version.split(' on ')[0]}, synchronous_commit={sync}"
        else:
            cursor.execute("SELECT sqlite_version()")
            backend_pid, db_version = (
                None,
                f"SQLite {cursor.fetchone()[0]} (WAL, synchronous=NORMAL)",
            )
    if not Path(f"/proc/{backend_pid}").exists():
        backend_pid = None  # a remote server: its CPU is not measured

    n = args.leaves
    chunk = 5000
    log(f"{args.label}: queueing {n} leaves (tree.enqueue, {chunk} per transaction)")
    t = time.perf_counter()
    for start in range(0, n, chunk):
        entries = [
            tree.Entry(str(i), leaf_data(str(i))) for i in range(start, min(n, start + chunk))
        ]
        with transaction.atomic():
            tree.enqueue(KIND, entries)
    enqueue_s = time.perf_counter() - t

    batch = settings.LOG_BATCH_SIZE
    seq = Sequencer(owner="bench-log")
    passes: list[tuple[int, float]] = []
    integrate = seq.integrate

    def timed(limit: int | None = None) -> Any:
        t0 = time.perf_counter()
        step = integrate(limit)
        passes.append((step.integrated, time.perf_counter() - t0))
        return step

    seq.integrate = timed  # type: ignore[method-assign]
    log(f"{args.label}: draining with Sequencer().drain(), LOG_BATCH_SIZE={batch}")
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    cpu0, db0 = time.process_time(), proc_cpu_s(backend_pid)
    t = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    integrated = seq.drain()
    if profiler is not None:
        profiler.disable()
    drain_s = time.perf_counter() - t
    cpu1, db1 = time.process_time(), proc_cpu_s(backend_pid)
    profile_top: list[str] = []
    if profiler is not None:
        import io
        import pstats

        profiler.dump_stats(args.profile)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
        profile_top = text.getvalue().splitlines()

    # The tree it built: every leaf numbered in id order, the latest checkpoint's root is
    # root_of over the stored leaves, one interior node per completed perfect subtree.
    size = tree.integrated_size()
    hashes = [bytes(h) for h in LogLeaf.objects.order_by("idx").values_list("leaf_hash", flat=True)]
    latest = LogCheckpoint.objects.order_by("-size").first()
    nodes = LogNode.objects.count()
    expected_nodes = sum(size >> level for level in range(1, size.bit_length()))
    checked = (
        integrated == n == size == len(hashes)
        and LogLeaf.objects.filter(idx=None).count() == 0
        and latest is not None
        and latest.size == size
        and bytes(latest.root) == root_of(hashes)
        and nodes == expected_nodes
    )
    if not checked:
        raise SystemExit(f"{args.label}: the integrated tree does not check out")

    # Receipt fetch at the full size.
    rng = random.Random(1)  # noqa: S311 - sampling, not secrets
    indices = [0, size - 1, *rng.sample(range(size), min(size, args.receipt_samples) - 2)]
    root = bytes(latest.root)
    refs = dict(LogLeaf.objects.filter(idx__in=indices).values_list("idx", "ref"))
    for i in indices[:20]:
        tree.inclusion_proof(i, size)  # warm the statement and page caches
    with CaptureQueriesContext(connection) as ctx:
        for i in indices[:50]:
            tree.inclusion_proof(i, size)
    proof_queries = len(ctx.captured_queries) / min(50, len(indices))
    proof_ms, hashes_per_proof = [], []
    for i in indices:
        t0 = time.perf_counter()
        path = tree.inclusion_proof(i, size)
        proof_ms.append(1000 * (time.perf_counter() - t0))
        verify_inclusion(i, size, hashes[i], path, root)
        hashes_per_proof.append(len(path))

    keys = signing.verifier_keys()
    receipt_ms, receipt_bytes = [], []
    sample = indices[: min(len(indices), 200)]
    moment = timezone.now()
    # A receipt signs its promise over the logged leaf hash when it is fetched (counted here).
    with CaptureQueriesContext(connection) as ctx:
        receipts.receipt(
            kind=KIND, ref=refs[sample[0]], current=leaf_data(refs[sample[0]]), moment=moment
        )
    receipt_queries = len(ctx.captured_queries)
    for i in sample:
        t0 = time.perf_counter()
        body = receipts.receipt(kind=KIND, ref=refs[i], current=leaf_data(refs[i]), moment=moment)
        receipt_ms.append(1000 * (time.perf_counter() - t0))
        receipt_bytes.append(len(json.dumps(body)))
        if not verify_receipt(body, keys).integrated:
            raise SystemExit(f"{args.label}: receipt of leaf {i} is not integrated")

    checkpoints = dict(LogCheckpoint.objects.values_list("size", "root"))
    olds = rng.sample(sorted(s for s in checkpoints if s < size), min(100, len(checkpoints) - 1))
    olds = olds or [max(1, size // 2)]  # one pass, one checkpoint: against a mid-size tree
    consistency_ms, consistency_hashes = [], []
    with CaptureQueriesContext(connection) as ctx:
        tree.consistency_proof(olds[0], size)
    consistency_queries = len(ctx.captured_queries)
    for old in olds:
        t0 = time.perf_counter()
        proof = tree.consistency_proof(old, size)
        consistency_ms.append(1000 * (time.perf_counter() - t0))
        old_root = bytes(checkpoints[old]) if old in checkpoints else tree.root(old)
        verify_consistency(old, size, proof, old_root, root)
        consistency_hashes.append(len(proof))

    pass_s = [s for _, s in passes]
    full = [s for k, s in passes if k == batch] or pass_s
    return {
        "label": args.label,
        "database": db_version,
        "leaves": n,
        "migrate_s": round(migrate_s, 2),
        "enqueue": {
            "seconds": round(enqueue_s, 2),
            "leaves_per_s": round(n / enqueue_s),
            "per_transaction": chunk,
        },
        "integration": {
            "batch_size": batch,
            "passes": len(passes),
            "seconds": round(drain_s, 3),
            "leaves_per_s": round(integrated / drain_s),
            "meets_goal": integrated / drain_s >= GOAL_LEAVES_PER_S,
            "pass_ms_p50": round(1000 * statistics.median(full), 1),
            "pass_ms_max": round(1000 * max(pass_s), 1),
            "us_per_leaf": round(1e6 * drain_s / integrated, 1),
            "python_cpu_s": round(cpu1 - cpu0, 2),
            "db_server_cpu_s": round(db1 - db0, 2) if db0 is not None and db1 is not None else None,
            "interior_nodes": nodes,
            "checkpoints": len(checkpoints),
            "tree_checked": checked,
            "profile": args.profile or None,
            "profile_top": profile_top,
        },
        "receipt_fetch": {
            "tree_size": size,
            "samples": len(indices),
            "inclusion_proof_queries": proof_queries,
            "inclusion_proof_ms_p50": round(statistics.median(proof_ms), 3),
            "inclusion_proof_ms_p99": round(pct(proof_ms, 99), 3),
            "proof_hashes_max": max(hashes_per_proof),
            "receipt_queries": receipt_queries,
            "receipt_ms_p50": round(statistics.median(receipt_ms), 3),
            "receipt_ms_p99": round(pct(receipt_ms, 99), 3),
            "receipt_json_bytes": round(statistics.mean(receipt_bytes)),
            "consistency_proof_queries": consistency_queries,
            "consistency_proof_ms_p50": round(statistics.median(consistency_ms), 3),
            "consistency_proof_hashes_max": max(consistency_hashes),
            "all_verified": True,
        },
    }


# --- child: proofs at 10^6 leaves, in memory --------------------------------------------------


def child_simulate(args: argparse.Namespace) -> dict[str, Any]:
    setup_django()  # tree.py (the proof planner) imports the models
    from gatehouse.tlog import tree
    from gatehouse.tlog.verify import (
        Checkpoint,
        InclusionProof,
        SignerKey,
        fold,
        leaf_hash,
        node_hash,
        open_checkpoint,
        root_of,
        verify_consistency,
        verify_inclusion,
    )

    n = args.sim_leaves
    log(f"simulated tree: hashing {n} leaves and their perfect subtrees in memory")
    t = time.perf_counter()
    hashes = [leaf_hash(leaf_data(str(i))) for i in range(n)]
    leaves_s = time.perf_counter() - t
    t = time.perf_counter()
    levels = [hashes]  # levels[l][i]: the node LogNode (level l, idx i) would store
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    nodes_s = time.perf_counter() - t

    def assemble(plan: list[list[tuple[int, int]]]) -> list[bytes]:
        return [fold(levels[level][i] for level, i in part) for part in plan]

    def root_at(size: int) -> bytes:
        return fold(levels[level][i] for level, i in tree.frontier_coords(size))

    root = root_at(n)
    if root != root_of(hashes):
        raise SystemExit("simulated tree: the stored-node root is not root_of(leaves)")
    key = SignerKey.generate("bench.local/decisions")
    note = key.sign_note(Checkpoint(key.name, n, root).body())

    rng = random.Random(2)  # noqa: S311 - sampling, not secrets
    k = args.sim_samples
    indices = [0, n - 1, *rng.sample(range(n), k - 2)]
    t = time.perf_counter()
    proofs = [assemble(tree.inclusion_plan(i, n)) for i in indices]
    build_us = 1e6 * (time.perf_counter() - t) / k
    t = time.perf_counter()
    for i, proof in zip(indices, proofs, strict=True):
        verify_inclusion(i, n, hashes[i], proof, root)
    verify_us = 1e6 * (time.perf_counter() - t) / k
    sizes = [len(p) for p in proofs]
    texts = [
        len(InclusionProof(i, p, note).text().encode())
        for i, p in zip(indices, proofs, strict=True)
    ]
    m = min(k, 1000)
    t = time.perf_counter()
    for i, proof in zip(indices[:m], proofs[:m], strict=True):
        checkpoint = open_checkpoint(note, [key.verifier])
        verify_inclusion(i, checkpoint.size, hashes[i], proof, checkpoint.root)
    offline_us = 1e6 * (time.perf_counter() - t) / m

    olds = [1, n - 1, 1 << (n.bit_length() - 1), *rng.sample(range(1, n), k - 3)]
    old_roots = [root_at(old) for old in olds]
    cproofs = [assemble(tree.consistency_plan(old, n)) for old in olds]
    t = time.perf_counter()
    for old, old_root, proof in zip(olds, old_roots, cproofs, strict=True):
        verify_consistency(old, n, proof, old_root, root)
    cverify_us = 1e6 * (time.perf_counter() - t) / k
    csizes = [len(p) for p in cproofs]
    return {
        "leaves": n,
        "build_s": {"leaf_hashes": round(leaves_s, 2), "interior_nodes": round(nodes_s, 2)},
        "hashes_per_s": round((2 * n - 1) / (leaves_s + nodes_s)),
        "samples": k,
        "inclusion": {
            "hashes_min": min(sizes),
            "hashes_mean": round(statistics.mean(sizes), 2),
            "hashes_max": max(sizes),
            "bytes_max": 32 * max(sizes),
            "tlog_proof_text_bytes_max": max(texts),
            "checkpoint_note_bytes": len(note.encode()),
            "assemble_us": round(build_us, 1),
            "verify_us": round(verify_us, 1),
            "verify_with_checkpoint_signature_us": round(offline_us, 1),
        },
        "consistency": {
            "hashes_min": min(csizes),
            "hashes_mean": round(statistics.mean(csizes), 2),
            "hashes_max": max(csizes),
            "bytes_max": 32 * max(csizes),
            "verify_us": round(cverify_us, 1),
        },
    }


# --- child of bench/run.py: merge delay under load --------------------------------------------


def child_merge_delay(args: argparse.Namespace) -> dict[str, Any]:
    setup_django()
    from gatehouse.tlog.models import LogLeaf

    t = time.monotonic()
    pending = LogLeaf.objects.filter(idx=None)
    while pending.exists() and time.monotonic() - t < args.wait:
        time.sleep(0.2)
    out: dict[str, Any] = {
        "waited_s": round(time.monotonic() - t, 1),
        "pending_after_wait": pending.count(),
        "windows": {},
    }
    for key, since, until in args.window:
        rows = LogLeaf.objects.filter(
            kind="decision",
            created_at__gte=dt.datetime.fromisoformat(since),
            created_at__lt=dt.datetime.fromisoformat(until),
        ).values_list("created_at", "integrated_at")
        delays = [1000 * (b - a).total_seconds() for a, b in rows if b is not None]
        queued = sum(1 for _, b in rows if b is None)
        out["windows"][key] = {
            "leaves": len(delays) + queued,
            "still_queued": queued,
            "p50_ms": round(pct(delays, 50), 1) if delays else None,
            "p99_ms": round(pct(delays, 99), 1) if delays else None,
            "max_ms": round(max(delays), 1) if delays else None,
        }
    return out


# --- parent ------------------------------------------------------------------------------------


def pg_urls() -> tuple[str, str, str, bool] | None:
    """(admin URL, scratch URL, scratch name, explicit) of the PostgreSQL to measure, or None."""
    given = os.environ.get("BENCH_LOG_DATABASE_URL", "").strip()
    if given.lower() in ("none", "off", "no", "0"):
        return None
    url = given or DEFAULT_PG
    name = os.environ.get("BENCH_LOG_DATABASE_NAME", "gatehouse_bench_log")
    parts = urlsplit(url)
    admin = urlunsplit(
        parts._replace(path=parts.path if parts.path not in ("", "/") else "/postgres")
    )
    return admin, urlunsplit(parts._replace(path=f"/{name}")), name, bool(given)


def pg_database(admin: str, name: str, *, create: bool) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if create:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def run_child(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        out = Path(stack.enter_context(_tempdir())) / "out.json"
        r = subprocess.run(  # noqa: S603
            [PYTHON, str(Path(__file__).resolve()), *argv, "--out", str(out)],
            env=env,
            cwd=ROOT,
            timeout=timeout,
            check=False,
        )
        if r.returncode != 0 or not out.exists():
            raise RuntimeError(f"{' '.join(argv[:1])} failed ({r.returncode})")
        data: dict[str, Any] = json.loads(out.read_text())
        return data


@contextlib.contextmanager
def _tempdir() -> Any:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-log-") as d:
        yield d


def signing_key() -> str:
    """LOG_SIGNING_KEY for the scratch databases: the environment's, else a new one checked to
    survive ``SignerKey.parse`` and ``VerifierKey.parse`` (at 1dab4c4 about half of the
    generated keys did not: their base64 held a '+' and both parsers split on every '+')."""
    from gatehouse.tlog.verify import SignerKey, VerificationError, VerifierKey

    if os.environ.get("LOG_SIGNING_KEY"):
        return os.environ["LOG_SIGNING_KEY"]
    for _ in range(100):
        key = SignerKey.generate(os.environ.get("LOG_ORIGIN", "gatehouse.local/decisions"))
        with contextlib.suppress(VerificationError):
            SignerKey.parse(key.text())
            VerifierKey.parse(key.verifier.text())
            return key.text()
    raise RuntimeError("no signing key that parses in 100 tries")


def django_env(var_dir: Path, database_url: str, batch: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOG_", "DATABASE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="gatehouse.settings",
        GATEHOUSE_VAR_DIR=str(var_dir),
        GATEHOUSE_ENV="development",
        DATABASE_URL=database_url,
        LOG_SEQUENCER_EMBEDDED="false",
        LOG_SIGNING_KEY=SIGNING_KEY[0],
        LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        PYTHONUNBUFFERED="1",
    )
    if batch:
        env["LOG_BATCH_SIZE"] = str(batch)
    return env


def parent(args: argparse.Namespace) -> int:
    started = time.monotonic()
    scratch = Path(args.var_dir).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    SIGNING_KEY.append(signing_key())
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "loadavg_before": loadavg()},
        "code": code_version(),
        "command": "make bench-log  (bench/tlog.py " + " ".join(sys.argv[1:]) + ")",
        "goal_leaves_per_s": GOAL_LEAVES_PER_S,
        "databases": [],
        "simulated": None,
        "notes": [],
    }
    m = results["machine"]
    log(f"machine: {m['nproc']} x {m['cpu_model']}, load {m['loadavg_before']}")
    batches = args.batch_size or [None]
    exit_code = 0
    for batch in batches:
        suffix = f"-b{batch}" if batch else ""
        var_dir = scratch / f"sqlite{suffix}"
        shutil.rmtree(var_dir, ignore_errors=True)
        var_dir.mkdir(parents=True)
        child = ["_integrate", "--label", f"SQLite{suffix}", "--leaves", str(args.leaves)]
        child += ["--receipt-samples", str(args.receipt_samples)]
        if args.profile:
            child += ["--profile", str(var_dir / "drain.pstats")]
        env = django_env(var_dir, f"sqlite:///{var_dir / 'log.sqlite3'}", batch)
        results["databases"].append(run_child(child, env, args.timeout))

    pg = pg_urls()
    if pg is not None:
        admin, url, name, explicit = pg
        try:
            pg_database(admin, name, create=True)
        except Exception as exc:
            message = f"PostgreSQL at {urlsplit(admin).netloc}: {exc}".strip()
            if explicit:
                log(f"FAILED: {message}")
                exit_code = 1
            else:
                log(f"no PostgreSQL measured ({message.splitlines()[0]})")
            results["notes"].append(f"PostgreSQL not measured: {message.splitlines()[0]}")
            pg = None
    if pg is not None:
        admin, url, name, _ = pg
        try:
            for batch in batches:
                suffix = f"-b{batch}" if batch else ""
                if suffix:
                    pg_database(admin, name, create=True)
                var_dir = scratch / f"postgresql{suffix}"
                shutil.rmtree(var_dir, ignore_errors=True)
                var_dir.mkdir(parents=True)
                child = [
                    "_integrate",
                    "--label",
                    f"PostgreSQL{suffix}",
                    "--leaves",
                    str(args.leaves),
                ]
                child += ["--receipt-samples", str(args.receipt_samples)]
                if args.profile:
                    child += ["--profile", str(var_dir / "drain.pstats")]
                env = django_env(var_dir, url, batch)
                results["databases"].append(run_child(child, env, args.timeout))
        finally:
            if not args.keep_db:
                with contextlib.suppress(Exception):
                    pg_database(admin, name, create=False)

    if args.sim_leaves:
        var_dir = scratch / "simulated"
        var_dir.mkdir(exist_ok=True)
        env = django_env(var_dir, f"sqlite:///{var_dir / 'unused.sqlite3'}", None)
        child = ["_simulate", "--sim-leaves", str(args.sim_leaves)]
        child += ["--sim-samples", str(args.sim_samples)]
        results["simulated"] = run_child(child, env, args.timeout)

    results["elapsed_s"] = round(time.monotonic() - started, 1)
    text = json.dumps(results, indent=2) + "\n"
    paths = [Path(args.out).resolve(), scratch / "tlog.json"]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print_report(results, paths[0])
    if any(not d["integration"]["meets_goal"] for d in results["databases"]):
        log(f"integration rate below the goal of {GOAL_LEAVES_PER_S:,} leaves/s (see the table)")
    return exit_code


def print_report(results: dict[str, Any], path: Path) -> None:
    m = results["machine"]
    print()
    print(f"Decision log benchmark, {results['date']}, commit {results['code']['commit']}")
    print(f"Machine: {m['nproc']} x {m['cpu_model']}, Python {m['python']}")
    print(f"Load average before: {m['loadavg_before']}")
    header = (
        f"{'database':<14} {'leaves':>8} {'batch':>6} {'passes':>6} {'drain s':>8} "
        f"{'leaves/s':>9} {'goal':>5} {'ms/pass':>8} {'CPU s py+db':>12} {'enqueue/s':>10}"
    )
    print()
    print("Integration (Sequencer().drain() over queued leaves):")
    print(header)
    print("-" * len(header))
    for d in results["databases"]:
        i = d["integration"]
        db_cpu = f"+{i['db_server_cpu_s']:.1f}" if i["db_server_cpu_s"] is not None else ""
        cpu = f"{i['python_cpu_s']:.1f}{db_cpu}"
        print(
            f"{d['label']:<14} {d['leaves']:>8} {i['batch_size']:>6} {i['passes']:>6} "
            f"{i['seconds']:>8.2f} {i['leaves_per_s']:>9,} {'yes' if i['meets_goal'] else 'NO':>5} "
            f"{i['pass_ms_p50']:>8.1f} {cpu:>12} "
            f"{d['enqueue']['leaves_per_s']:>10,}"
        )
    print(f"(goal: {results['goal_leaves_per_s']:,} leaves/s; ms/pass: median of full passes)")
    print()
    print("Receipt fetch from the stored tree, at the full size (p50 / p99 ms, queries):")
    for d in results["databases"]:
        r = d["receipt_fetch"]
        print(
            f"  {d['label']:<14} size {r['tree_size']}: tree.inclusion_proof "
            f"{r['inclusion_proof_ms_p50']:.2f} / {r['inclusion_proof_ms_p99']:.2f} ms, "
            f"{r['inclusion_proof_queries']:g} queries, {r['proof_hashes_max']} hashes; "
            f"receipts.receipt {r['receipt_ms_p50']:.2f} / {r['receipt_ms_p99']:.2f} ms, "
            f"{r['receipt_queries']} queries, {r['receipt_json_bytes']} B JSON; consistency "
            f"proof {r['consistency_proof_ms_p50']:.2f} ms, {r['consistency_proof_queries']} "
            "queries (all verified)"
        )
    s = results.get("simulated")
    if s:
        inc, con = s["inclusion"], s["consistency"]
        print()
        print(
            f"Simulated tree of {s['leaves']:,} leaves (in memory, {s['samples']:,} proofs each):"
        )
        print(
            f"  inclusion: {inc['hashes_min']}-{inc['hashes_max']} hashes ({inc['bytes_max']} B; "
            f"C2SP tlog-proof text with checkpoint {inc['tlog_proof_text_bytes_max']} B), "
            f"verify_inclusion {inc['verify_us']:.1f} us, with the checkpoint's Ed25519 "
            f"signature {inc['verify_with_checkpoint_signature_us']:.1f} us"
        )
        print(
            f"  consistency: {con['hashes_min']}-{con['hashes_max']} hashes "
            f"({con['bytes_max']} B), verify_consistency {con['verify_us']:.1f} us"
        )
        print(
            f"  building it: {s['build_s']['leaf_hashes']:.1f} s leaf hashes + "
            f"{s['build_s']['interior_nodes']:.1f} s interior nodes "
            f"({s['hashes_per_s']:,} SHA-256/s in Python)"
        )
    for note in results["notes"]:
        print(f"NOTE: {note}")
    for d in results["databases"]:
        top = d["integration"].get("profile_top")
        if top:
            print()
            print(f"cProfile of the drain, {d['label']} (top by own time):")
            for line in top:
                if line.strip():
                    print(f"  {line}")
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"results: {shown}  ({results['elapsed_s']:.0f} s)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command")
    p.add_argument("--leaves", type=int, default=int(os.environ.get("BENCH_LOG_LEAVES", 200_000)))
    p.add_argument(
        "--batch-size",
        type=int,
        action="append",
        help="LOG_BATCH_SIZE of a run (repeatable; default: the setting's, 5000)",
    )
    p.add_argument("--sim-leaves", type=int, default=1_000_000, help="0: no simulated tree")
    p.add_argument("--sim-samples", type=int, default=10_000)
    p.add_argument("--receipt-samples", type=int, default=500)
    p.add_argument("--profile", action="store_true", help="cProfile the drain (slows it)")
    p.add_argument("--keep-db", action="store_true", help="keep the PostgreSQL scratch database")
    p.add_argument("--var-dir", default=str(ROOT / "var" / "bench-log"))
    p.add_argument("--out", default=str(ROOT / "var" / "bench" / "tlog.json"))
    p.add_argument("--timeout", type=float, default=900)

    c = sub.add_parser("_integrate")
    c.add_argument("--label", required=True)
    c.add_argument("--leaves", type=int, required=True)
    c.add_argument("--receipt-samples", type=int, default=500)
    c.add_argument("--profile", default="")
    c.add_argument("--out", required=True)
    s = sub.add_parser("_simulate")
    s.add_argument("--sim-leaves", type=int, required=True)
    s.add_argument("--sim-samples", type=int, default=10_000)
    s.add_argument("--out", required=True)
    md = sub.add_parser("merge-delay", help="merge delay of decision leaves per time window")
    md.add_argument(
        "--window",
        nargs=3,
        action="append",
        default=[],
        metavar=("KEY", "SINCE", "UNTIL"),
        help="ISO 8601 times with a time zone",
    )
    md.add_argument("--wait", type=float, default=30, help="seconds to wait for an empty queue")
    md.add_argument("--out", default="", help="write the JSON here (else: stdout)")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    children = {
        "_integrate": child_integrate,
        "_simulate": child_simulate,
        "merge-delay": child_merge_delay,
    }
    if args.command in children:
        data = children[args.command](args)
        if args.out:
            Path(args.out).write_text(json.dumps(data, indent=2) + "\n")
        else:
            print(json.dumps(data))
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
