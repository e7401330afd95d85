"""`make soak`: a long load run against the production configuration, checking that no decision
record is lost or duplicated.

Configuration: PostgreSQL (a fresh database ``gatehouse_soak`` on the server of
SOAK_DATABASE_URL, default postgres://postgres@127.0.0.1:5432) and Redis (broker, cache and
channel layer: SOAK_REDIS_URL, default redis://127.0.0.1:6379/7, a database index of its own),
migrated and seeded with the demo models (``seed_demo``); Gatehouse served by uvicorn (the
Procfile's server) or granian workers with DEBUG off and the local backend.

Load: wrk with bench/predict.lua (each request its own X-Request-ID, stored in its decision
record) in chunks of --chunk seconds until --requests 2xx answers are in. Then: every 2xx request
id must have exactly one decision record (no more, no fewer), and ``verify_decisions`` must
verify the decision log. Prints req/s, p50 and p99 per chunk and overall, and writes
var/soak/results.json. Reuses bench/run.py's process handling, server command lines and wrk
driver. The digits model's explanations are queued in Redis (no worker runs): the soak's Redis
database is emptied at the end unless --keep-queue.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (
    PYTHON,
    ROOT,
    Processes,
    code_version,
    free_port,
    importable,
    loadavg,
    machine,
    prime,
    run_wrk,
    server_argv,
    wait_http,
)


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=int(os.environ.get("SOAK_REQUESTS", 100_000)))
    p.add_argument("--chunk", type=float, default=60.0, help="seconds per wrk run")
    p.add_argument("--max-minutes", type=float, default=30.0, help="stop loading after this")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--server-threads", type=int, default=2, help="threads per WSGI worker")
    p.add_argument(
        "--server",
        default=os.environ.get("SOAK_SERVER", "uvicorn"),
        choices=["uvicorn", "granian", "gunicorn"],
    )
    p.add_argument("--family", default="digits")
    p.add_argument(
        "--database-url",
        default=os.environ.get(
            "SOAK_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gatehouse_soak"
        ),
        help="its database is dropped and created again",
    )
    p.add_argument(
        "--redis-url", default=os.environ.get("SOAK_REDIS_URL", "redis://127.0.0.1:6379/7")
    )
    p.add_argument("--keep-queue", action="store_true", help="leave the soak's Redis db as is")
    p.add_argument("--var-dir", default=str(ROOT / "var" / "soak"))
    p.add_argument(
        "--tools", default=os.environ.get("BENCH_TOOLS", str(ROOT / "var" / "bench-tools"))
    )
    return p.parse_args()


def recreate_database(url: str) -> None:
    """DROP and CREATE the URL's database, connected to the server's ``postgres`` database."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.replace("_", "").isalnum():
        raise SystemExit(f"unexpected database name {name!r}")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def flush_redis(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    keys = int(client.dbsize())
    client.flushdb()
    return keys


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    var_dir = Path(args.var_dir).resolve()
    out_dir = var_dir / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = secrets.token_hex(3)
    tools = Path(args.tools).resolve()
    python_path = [str(ROOT)] + ([str(tools)] if tools.is_dir() else [])
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TS_", "TORCHSERVE_", "LOCAL_", "INFERENCE_BACKEND"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="gatehouse.settings",
        GATEHOUSE_VAR_DIR=str(var_dir),
        GATEHOUSE_ENV="development",  # production would redirect plain HTTP to HTTPS
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        INFERENCE_BACKEND="local",
        # The rate limiter stays in the path (its Redis counters included) but far above this
        # load: one API key sends everything, and the soak measures capacity, not the limit.
        RATE_LIMIT_API="1000000000/60",
        RATE_LIMIT_PREDICT="1000000000/60",
        PYTHONPATH=os.pathsep.join(python_path),
        PYTHONUNBUFFERED="1",
    )
    env.pop("GATEHOUSE_TESTING", None)
    manage = [PYTHON, str(ROOT / "manage.py")]

    def django(*argv: str, timeout: float = 600) -> str:
        r = subprocess.run(  # noqa: S603
            list(argv),
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[1:3])} failed:\n{(r.stdout + r.stderr)[-3000:]}")
        return r.stdout

    if not importable(args.server, env):
        raise SystemExit(f"{args.server} is not installed (granian: `make bench` installs it)")
    info = machine()
    log(
        f"machine: {info['nproc']} x {info['cpu_model']}, {info['ram_gib']} GiB RAM; load "
        f"{loadavg()}; target {args.requests} 2xx; server {args.server}"
    )
    procs = Processes()

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    exit_code = 0
    try:
        log(f"fresh database {urlsplit(args.database_url).path}; Redis {args.redis_url}")
        recreate_database(args.database_url)
        flush_redis(args.redis_url)
        django(*manage, "migrate", "--noinput")
        django(*manage, "createcachetable")
        log("seeding the demo (trains the demo models)")
        django(*manage, "seed_demo")
        prep = json.loads(
            django(
                PYTHON,
                str(ROOT / "bench" / "djtool.py"),
                "prepare",
                "--family",
                args.family,
                "--no-register",
            )
        )
        body_file = out_dir / "body.json"
        body_file.write_text(json.dumps({"rows": [prep["row"]]}))

        port = free_port()
        argv, label = server_argv(args.server, port, args)
        server_log = out_dir / "server.log"
        with server_log.open("wb") as f:
            server = procs.popen(
                "server",
                argv,
                env=env,
                cwd=ROOT,
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_http(f"http://127.0.0.1:{port}/health", server, 60, server_log)
        url = f"http://127.0.0.1:{port}/api/v1/models/{prep['family']}/predict"
        auth = f"Bearer {prep['api_key']}"
        log(f"{label} on :{port}; priming")
        prime(url, auth, body_file.read_bytes(), f"s{run_id}w.", args.connections)

        chunks: list[dict[str, Any]] = []
        prefixes: list[str] = [f"s{run_id}w."]
        ok_ids: list[str] = []
        total_requests = 0
        deadline = time.monotonic() + 60 * args.max_minutes
        load_started = time.monotonic()
        while len(ok_ids) < args.requests and time.monotonic() < deadline:
            n = len(chunks)
            prefix = f"s{run_id}c{n:03d}."
            prefixes.append(prefix)
            remaining = args.requests - len(ok_ids)
            rate = (len(ok_ids) / (time.monotonic() - load_started)) if ok_ids else 0
            seconds = args.chunk if not rate else min(args.chunk, max(3.0, remaining / rate + 2))
            result = run_wrk(
                url,
                auth=auth,
                body_file=body_file,
                prefix=prefix,
                seconds=seconds,
                args=args,
                out_dir=out_dir,
                procs=procs,
            )
            ok_ids.extend(result.ok_ids)
            total_requests += result.requests
            chunk = {
                "chunk": n,
                "requests": result.requests,
                "ok_2xx": result.ok,
                "rps": round(result.rps, 1),
                "p50_ms": round(result.p50_ms, 1),
                "p99_ms": round(result.p99_ms, 1),
                "statuses": result.statuses,
                "socket_errors": result.errors,
                "loadavg": loadavg(),
            }
            chunks.append(chunk)
            log(
                f"chunk {n}: {result.rps:.1f} req/s, p50 {result.p50_ms:.1f} ms, p99 "
                f"{result.p99_ms:.1f} ms, {result.ok}/{result.requests} 2xx; "
                f"{len(ok_ids)} 2xx in all"
            )
            if result.ok != len(result.ok_ids):
                log(f"chunk {n}: {result.ok} 2xx but {len(result.ok_ids)} ids seen")
                exit_code = 1
        load_s = time.monotonic() - load_started
        procs.stop(server)  # nothing in flight any more: every record is committed

        log("matching decision records to 2xx answers by request id")
        found = json.loads(
            django(
                PYTHON,
                str(ROOT / "bench" / "djtool.py"),
                "ids",
                *[x for p in prefixes[1:] for x in ("--prefix", p)],
            )
        )
        recorded: list[str] = [i for p in prefixes[1:] for i in found[p]["ids"]]
        recorded_set, answered = set(recorded), set(ok_ids)
        completeness = {
            "ok_2xx": len(ok_ids),
            "distinct_ok_ids": len(answered),
            "records": len(recorded),
            "records_for_2xx": len(answered & recorded_set),
            "missing_records": len(answered - recorded_set),
            "duplicate_records": len(recorded) - len(recorded_set),
            # Served and recorded but the answer was not read: wrk closed its connections at
            # the end of a chunk with these in flight (counted, not an error).
            "records_in_flight_at_chunk_end": len(recorded_set - answered),
        }
        exact = (
            completeness["missing_records"] == 0
            and completeness["duplicate_records"] == 0
            and completeness["distinct_ok_ids"] == completeness["ok_2xx"]
        )
        reasons = []
        if not exact:
            reasons.append("decision records != 2xx answers")
        if len(ok_ids) < args.requests:
            reasons.append(
                f"only {len(ok_ids)} of {args.requests} 2xx within --max-minutes "
                f"{args.max_minutes:g}"
            )
        verify = subprocess.run(  # noqa: S603
            [*manage, "verify_decisions", "--integrate"],  # servers stopped: integrate the rest
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        verify_line = ((verify.stdout + verify.stderr).strip().splitlines() or ["(no output)"])[-1]
        if verify.returncode != 0:
            reasons.append("the decision log does not verify")
        if reasons:
            exit_code = 1
        weights = [c["requests"] for c in chunks]
        results = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": info,
            "code": code_version(),
            "command": "make soak  (bench/soak.py " + " ".join(sys.argv[1:]) + ")",
            "settings": {
                "family": prep["family"],
                "version": prep["version"],
                "server": label,
                "database": "PostgreSQL " + urlsplit(args.database_url).netloc.split("@")[-1],
                "redis": args.redis_url,
                "load": f"wrk -t{args.threads} -c{args.connections}, {args.chunk:.0f} s chunks",
            },
            "requests": total_requests,
            "ok_2xx": len(ok_ids),
            "load_s": round(load_s, 1),
            "rps": round(total_requests / load_s, 1) if load_s else 0.0,
            "p50_ms_weighted_mean_of_chunks": round(
                sum(c["p50_ms"] * w for c, w in zip(chunks, weights, strict=True))
                / max(1, sum(weights)),
                1,
            ),
            "p99_ms_max_of_chunks": max((c["p99_ms"] for c in chunks), default=0.0),
            "p99_ms_median_of_chunks": sorted(c["p99_ms"] for c in chunks)[len(chunks) // 2]
            if chunks
            else 0.0,
            "chunks": chunks,
            "completeness": completeness,
            "verify_decisions": {"ok": verify.returncode == 0, "output": verify_line},
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        if not args.keep_queue:
            results["redis_keys_flushed"] = flush_redis(args.redis_url)
        (var_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        statuses: dict[str, int] = {}
        for c in chunks:
            for k, v in c["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        print()
        print(
            f"Gatehouse soak, {results['date']}: {prep['family']} v{prep['version']}, {label}, "
            f"{results['settings']['database']}, Redis, {results['settings']['load']}"
        )
        print(f"Machine: {info['nproc']} x {info['cpu_model']}, {info['ram_gib']} GiB RAM")
        print(
            f"{total_requests} requests in {load_s:.0f} s = {results['rps']} req/s; "
            f"statuses {statuses}; p50 {results['p50_ms_weighted_mean_of_chunks']} ms "
            f"(mean of chunks), p99 {results['p99_ms_median_of_chunks']} ms (median of chunks), "
            f"{results['p99_ms_max_of_chunks']} ms (worst chunk)"
        )
        print(
            f"decision records: {completeness['records_for_2xx']} for {completeness['ok_2xx']} "
            f"2xx answers, {completeness['missing_records']} missing, "
            f"{completeness['duplicate_records']} duplicates, "
            f"{completeness['records_in_flight_at_chunk_end']} more for requests in flight "
            "when wrk stopped a chunk (served and recorded, answer not read)"
        )
        print(f"verify_decisions: {verify_line}")
        print(f"results: {var_dir / 'results.json'}  ({results['elapsed_s']:.0f} s)")
        if exit_code:
            log("FAILED: " + "; ".join(reasons or ["see above"]))
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc}); stopping everything")
        exit_code = 130
    except Exception as exc:
        log(f"FAILED: {exc}")
        exit_code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
