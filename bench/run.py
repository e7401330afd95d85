"""`make bench`: the same load against TorchServe directly and against Gatehouse's predict API.

Targets, all with governance on (TorchServe token auth; Gatehouse API-key auth, guardian
permissions, routing, signature validation, decision records in the transparency log):

  (a) TorchServe called directly: POST /predictions/<model>/<version>
  (b) Gatehouse predict, TorchServe backend: POST /api/v1/models/<family>/predict
  (c) Gatehouse predict, local (in-process, micro-batched) backend
  (c') optional: (c) under another server model (default: uvicorn ASGI, as in the Procfile)

Everything runs on its own state: GATEHOUSE_VAR_DIR=var/bench with a fresh SQLite database
(PostgreSQL / Redis when DATABASE_URL / REDIS_URL are set), migrated and seeded with the demo
models; an API key of the demo API consumer; a TorchServe with 2 workers, batches of 8 and a
5 ms batch delay; Gatehouse web servers on free loopback ports with DEBUG off.

Load: wrk (-t2 -c16 by default, 3 s warm-up, 15 s counted) with bench/predict.lua, which gives
each request its own X-Request-ID; Gatehouse stores that id in the decision record, so every 2xx
answer is matched to its record. Without wrk: a multi-process Python client (bench/pyload.py).

Prints a table (req/s, p50, p99, ratio to (a), server CPU per request, decision-record
completeness), writes var/bench/results.json, runs `manage.py verify_decisions`, and profiles
target (c) with py-spy when it is available. Every process it starts is stopped at the end,
also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TARGET_RATIO = 0.5
HZ = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- processes ---------------------------------------------------------------------------------


class Processes:
    """Every process the benchmark starts, stopped (by process group) in reverse order."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.cleanups: list[tuple[str, Any]] = []

    def popen(self, name: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(argv, start_new_session=True, **kwargs)  # noqa: S603
        self.started.append((name, process))
        return process

    def forget(self, process: subprocess.Popen[bytes]) -> None:
        """A short-lived process (load tool, profiler) that has exited and been reaped."""
        self.started = [(n, p) for n, p in self.started if p is not process]

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        # Workers that outlive their server stay in its process group (its own session).
        for pid in group_members(process.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        for name, process in reversed(self.started):
            try:
                self.stop(process)
            except Exception as exc:
                log(f"could not stop {name} (pid {process.pid}): {exc}")
        self.started.clear()
        for name, cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as exc:
                log(f"cleanup '{name}' failed: {exc}")
        self.cleanups.clear()


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (read from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    members.append(int(entry.name))
    return members


def torchserve_port_block() -> int:
    """A port P with P, P+1, P+2, P+10 and P+11 free (inference, management, metrics, gRPC)."""
    for _ in range(200):
        base = secrets.randbelow(30000) + 20000
        free = True
        for port in (base, base + 1, base + 2, base + 10, base + 11):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free:
            return base
    raise RuntimeError("no free block of ports for TorchServe")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited ({process.returncode}):\n{tail(log_path)}")
        if http_get(url) == 200:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s:\n{tail(log_path)}")


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


# --- CPU accounting ----------------------------------------------------------------------------


def tree_pids(pid: int) -> list[int]:
    """pid and its descendants (from /proc; empty if gone)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children[ppid].append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if Path(f"/proc/{p}").exists():
            out.append(p)
            todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / HZ


def machine_busy_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / HZ


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- load generators ---------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int  # answers received
    ok: int  # 2xx answers
    sent: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    statuses: dict[str, int]
    errors: dict[str, int]
    ok_ids: list[str]
    tool: str
    tool_cpu_s: float = 0.0
    raw: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def run_wrk(
    url: str,
    *,
    auth: str,
    body_file: Path,
    prefix: str,
    seconds: float,
    args: argparse.Namespace,
    out_dir: Path,
    procs: Processes,
) -> LoadResult:
    out = out_dir / f"wrk-{prefix.strip('.')}.json"
    env = dict(
        os.environ,
        BENCH_BODY_FILE=str(body_file),
        BENCH_AUTH=auth,
        BENCH_ID_PREFIX=prefix,
        BENCH_WRK_OUT=str(out),
    )
    argv = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(ROOT / "bench" / "predict.lua"),
        url,
    ]
    process = procs.popen("wrk", argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stdout = process.stdout.read().decode(errors="replace") if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    procs.forget(process)
    if process.returncode != 0 or not out.exists():
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{stdout}")
    data = json.loads(out.read_text())
    lat = data["latency_us"]
    return LoadResult(
        requests=int(data["requests"]),
        ok=int(data["ok"]),
        sent=int(data["sent"]),
        duration_s=data["duration_us"] / 1e6,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        statuses={str(k): int(v) for k, v in data["statuses"].items()},
        errors={k: int(v) for k, v in data["errors"].items()},
        ok_ids=list(data["ids"]),
        tool=f"wrk -t{args.threads} -c{args.connections}",
        tool_cpu_s=usage.ru_utime + usage.ru_stime,
        raw=stdout,
    )


def run_pyload(
    url: str,
    *,
    auth: str,
    body_file: Path,
    prefix: str,
    seconds: float,
    args: argparse.Namespace,
    out_dir: Path,
    procs: Processes,
) -> LoadResult:
    out = out_dir / f"pyload-{prefix.strip('.')}.json"
    argv = [
        PYTHON,
        str(ROOT / "bench" / "pyload.py"),
        url,
        "--auth",
        auth,
        "--body",
        str(body_file),
        "--prefix",
        prefix,
        "--seconds",
        str(seconds),
        "--connections",
        str(args.connections),
        "--out",
        str(out),
    ]
    process = procs.popen("pyload", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stdout = process.stdout.read().decode(errors="replace") if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    procs.forget(process)
    if process.returncode != 0 or not out.exists():
        raise RuntimeError(f"the Python load client failed ({process.returncode}):\n{stdout}")
    data = json.loads(out.read_text())
    return LoadResult(
        requests=data["requests"],
        ok=data["ok"],
        sent=data["sent"],
        duration_s=data["duration_s"],
        p50_ms=data["p50_ms"],
        p90_ms=data["p90_ms"],
        p99_ms=data["p99_ms"],
        statuses=data["statuses"],
        errors=data["errors"],
        ok_ids=data["ids"],
        tool=f"python multi-process client, {args.connections} processes (keep-alive)",
        tool_cpu_s=usage.ru_utime + usage.ru_stime,
        raw=stdout,
    )


def prime(url: str, auth: str, body: bytes, prefix: str, n: int, timeout: float = 120) -> None:
    """``n`` concurrent requests (so that every worker gets some); raise unless all are 2xx."""
    failures: list[str] = []

    def one(i: int) -> None:
        request = urllib.request.Request(  # noqa: S310 - loopback URL built here
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": auth,
                "X-Request-ID": f"{prefix}{i:08d}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            failures.append(f"{exc.code} {exc.read()[:300]!r}")
        except OSError as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    if failures:
        raise RuntimeError(f"{url}: {len(failures)} of {n} first requests failed: {failures[0]}")


# --- servers -----------------------------------------------------------------------------------


@dataclass
class Server:
    key: str
    label: str  # e.g. "granian WSGI, 2 workers x 2 threads"
    backend: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path


def uvicorn_http() -> str:
    """How gatehouse/asgi.py serves HTTP in this run (GATEHOUSE_HTTP_INTERFACE)."""
    asgi = os.environ.get("GATEHOUSE_HTTP_INTERFACE", "wsgi") == "asgi"
    return "Django ASGI" if asgi else "a2wsgi"


def server_argv(model: str, port: int, args: argparse.Namespace) -> tuple[list[str], str]:
    host = "127.0.0.1"
    if model == "granian":
        return [
            PYTHON,
            "-m",
            "granian",
            "--interface",
            "wsgi",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--blocking-threads",
            str(args.server_threads),
            "--no-ws",
            "--log-level",
            "warning",
            "gatehouse.wsgi:application",
        ], f"granian WSGI, {args.workers} workers x {args.server_threads} threads"
    if model == "gunicorn":
        return [
            PYTHON,
            "-m",
            "gunicorn",
            "gatehouse.wsgi:application",
            "--bind",
            f"{host}:{port}",
            "--workers",
            str(args.workers),
            "--worker-class",
            "gthread",
            "--threads",
            str(args.server_threads),
            "--log-level",
            "warning",
        ], f"gunicorn gthread, {args.workers} workers x {args.server_threads} threads"
    if model == "uvicorn":
        return [
            PYTHON,
            "-m",
            "uvicorn",
            "gatehouse.asgi:application",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--lifespan",
            "off",
            "--no-server-header",
            "--no-access-log",
            "--log-level",
            "warning",
        ], f"uvicorn {uvicorn_http()}, {args.workers} workers"
    raise ValueError(model)


def importable(module: str, env: dict[str, str]) -> bool:
    return (
        subprocess.run(  # noqa: S603
            [PYTHON, "-c", f"import {module}"], env=env, capture_output=True, check=False
        ).returncode
        == 0
    )


# --- profile -----------------------------------------------------------------------------------

# (category, substrings of frames): a sample counts for the first category with a frame in its
# stack that contains one of the substrings. Order: most specific first.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    (
        "DB connection open/close",
        (
            "get_new_connection",
            "BaseDatabaseWrapper._close",
            "close_old_connections",
            "BaseDatabaseWrapper.connect ",
        ),
    ),
    (
        "DB write lock (BEGIN IMMEDIATE) and COMMIT",
        (
            "_start_transaction_under_autocommit",
            "BaseDatabaseWrapper._commit",
            "BaseDatabaseWrapper.commit ",
        ),
    ),
    (
        "decision records: leaves and promises (hash, insert, sign)",
        ("apps/inference/records.py", "gatehouse/tlog/", "record (apps/inference/services.py"),
    ),
    ("backend predict (TorchServe HTTP / local model)", ("apps/inference/backends/",)),
    ("permissions: family_for_serving / family_get", ("apps/registry/selectors.py",)),
    ("API-key authentication", ("gatehouse/auth.py",)),
    ("routing (serving, choose_among)", ("apps/inference/routing.py",)),
    ("row validation against the signature", ("_validate_rows",)),
    ("request parsing (ninja/pydantic)", ("Operation._get_values", "pydantic/")),
    ("response rendering (ninja/JSON)", ("Operation._result_to_response", "json/encoder")),
    ("other predict service code", ("apps/inference/services.py",)),
    ("middleware, Django and server", ("",)),
]


WAITS = ("Condition.wait", "Event.wait", "Queue.get", "Lock.acquire", "Thread.join")


def summarise_profile(raw_path: Path, mode: str = "cpu") -> dict[str, Any]:
    """Categories, top own frames and top inclusive project frames of a py-spy raw profile.

    In cpu mode, samples of a thread blocked in a Python-level wait (a request thread waiting
    for the local batcher's result, say) are dropped: py-spy's --nonblocking sampling does not
    always see that such a thread is idle."""
    categories: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        # Only request threads (anything under the WSGI/ASGI handler, waits included in wall
        # mode) and the local backend's batcher thread while it works; idle threads waiting
        # for a request or for a batch are not request work.
        in_request = any("WSGIHandler.__call__" in f or "ASGIHandler" in f for f in frames)
        waiting = any(marker in frames[-1] for marker in WAITS)
        batcher_busy = any("_Batcher._run" in f for f in frames) and not waiting
        if not (in_request or batcher_busy) or (mode == "cpu" and waiting):
            continue
        n = int(count)
        total += n
        functions = [re.sub(r":\d+\)$", ")", f) for f in frames]  # per function, not per line
        own[functions[-1]] += n
        for f in set(functions):
            inclusive[f] += n
        for name, needles in CATEGORIES:
            if any(needle in f for f in frames for needle in needles):
                categories[name] += n
                break

    def pct(n: int) -> float:
        return round(100.0 * n / total, 1) if total else 0.0

    project = [
        (f, n)
        for f, n in inclusive.most_common()
        if ("(apps/" in f or "(gatehouse/" in f or "(guardian/" in f) and "middleware" not in f
    ]
    return {
        "samples": total,
        "categories": [(name, n, pct(n)) for name, n in categories.most_common()],
        "top_own": [(f, n, pct(n)) for f, n in own.most_common(15)],
        "top_project_inclusive": [(f, n, pct(n)) for f, n in project[:20]],
    }


# --- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 15)))
    p.add_argument("--warmup", type=float, default=float(os.environ.get("BENCH_WARMUP", 3)))
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--family", default="digits")
    p.add_argument(
        "--server",
        default=os.environ.get("BENCH_SERVER", "auto"),
        choices=["auto", "granian", "gunicorn", "uvicorn"],
        help="server model of (b) and (c); auto: the fastest installed (granian > gunicorn > "
        "uvicorn)",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--server-threads", type=int, default=2, help="threads per WSGI worker")
    p.add_argument(
        "--compare",
        default=os.environ.get("BENCH_COMPARE", "uvicorn"),
        help="server model for an extra (c') row, or 'none'",
    )
    p.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--profile-seconds", type=float, default=8.0, help="0: no profile")
    p.add_argument("--profile-target", choices=["b", "c"], default="c")
    p.add_argument(
        "--profile-mode",
        choices=["cpu", "wall"],
        default="cpu",
        help="cpu: on-CPU samples only; wall: waits included (py-spy --idle)",
    )
    p.add_argument("--keep-db", action="store_true", help="reuse var/bench's SQLite database")
    p.add_argument(
        "--var-dir", default=os.environ.get("BENCH_VAR_DIR", str(ROOT / "var" / "bench"))
    )
    p.add_argument(
        "--tools",
        default=os.environ.get("BENCH_TOOLS", str(ROOT / "var" / "bench-tools")),
        help="pip --target folder with granian/py-spy (installed by `make bench`)",
    )
    return p.parse_args()


def code_version() -> dict[str, Any]:
    """The commit measured, and the files that differed from it (others may be editing)."""

    def git(*argv: str) -> str:
        r = subprocess.run(  # noqa: S603
            ["git", *argv],  # noqa: S607 - git from PATH, fixed arguments
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return r.stdout

    dirty = [line[3:] for line in git("status", "--porcelain").splitlines() if line.strip()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted": dirty}


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions(env: dict[str, str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        "for n in ['Django', 'django-ninja', 'django-guardian', 'pydantic', 'torch', 'torchserve',"
        " 'httpx', 'uvicorn', 'granian', 'gunicorn']:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run(  # noqa: S603
        [PYTHON, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    found: dict[str, str] = json.loads(out.stdout or "{}")
    for tool, argv in {"java": ["java", "-version"], "wrk": ["wrk", "-v"]}.items():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
            first = (r.stdout + r.stderr).strip().splitlines()
            if first:
                found[tool] = first[0]
    with contextlib.suppress(Exception):
        import sqlite3

        found["sqlite"] = sqlite3.sqlite_version
    return found


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    var_dir = Path(args.var_dir).resolve()
    tools = Path(args.tools).resolve()
    run_id = secrets.token_hex(3)
    sqlite = not os.environ.get("DATABASE_URL")

    # --- environment of every Django process --------------------------------------------------
    # The platform's own settings module, configured through the environment only. Inherited
    # serving options are dropped so that every run measures the same configuration.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TS_", "TORCHSERVE_", "LOCAL_", "INFERENCE_BACKEND"))
    }
    python_path = [str(ROOT)]
    if tools.is_dir():
        python_path.insert(0, str(tools))
    ts_port = torchserve_port_block()
    env.update(
        DJANGO_SETTINGS_MODULE="gatehouse.settings",
        GATEHOUSE_VAR_DIR=str(var_dir),
        GATEHOUSE_ENV="development",  # production would redirect plain HTTP to HTTPS
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        PYTHONPATH=os.pathsep.join([*python_path, env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        PYTHONUNBUFFERED="1",
        # The rate limiter stays on (its statement is part of the measured cost) but never
        # refuses the benchmark's single key.
        RATE_LIMIT_API="1000000000/60",
        RATE_LIMIT_PREDICT="1000000000/60",
        # The development TorchServe of `manage.py torchserve` takes the metrics port from
        # management + 1 and the gRPC ports from inference / management + 10.
        TORCHSERVE_INFERENCE_URL=f"http://127.0.0.1:{ts_port}",
        TORCHSERVE_MANAGEMENT_URL=f"http://127.0.0.1:{ts_port + 1}",
        TORCHSERVE_WORKERS="2",
        TORCHSERVE_BATCH_SIZE="8",
        TORCHSERVE_MAX_BATCH_DELAY_MS="5",
        # Token authorization stays on (DEBUG is off): Gatehouse reads the server's key file.
        TORCHSERVE_KEY_FILE=str(var_dir / "torchserve" / "key_file.json"),
    )
    manage = [PYTHON, str(ROOT / "manage.py")]

    def django(*argv: str, quiet: bool = True, timeout: float = 300) -> str:
        r = subprocess.run(  # noqa: S603
            [*argv],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[1:3])} failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}"
            )
        if not quiet:
            print(r.stdout.strip(), flush=True)
        return r.stdout

    # --- tools ----------------------------------------------------------------------------------
    load_tool = args.load
    if load_tool == "auto":
        load_tool = "wrk" if shutil.which("wrk") else "python"
    if load_tool == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk, or --load python)")
    run_load = run_wrk if load_tool == "wrk" else run_pyload
    server_model = args.server
    if server_model == "auto":
        server_model = next((m for m in ("granian", "gunicorn") if importable(m, env)), "uvicorn")
    elif not importable(server_model, env):
        raise SystemExit(f"{server_model} is not installed (see `make bench`)")
    compare = None if args.compare in ("", "none") or args.compare == server_model else args.compare
    if compare and not importable(compare, env):
        log(f"{compare} is not installed: no (c') row")
        compare = None
    py_spy = shutil.which("py-spy") or (
        str(tools / "bin" / "py-spy") if (tools / "bin" / "py-spy").exists() else None
    )

    info = machine()
    log(
        f"machine: {info['nproc']} x {info['cpu_model']}, {info['ram_gib']} GiB RAM; load "
        f"{loadavg()}; load tool: {load_tool}; server model: {server_model}"
        + (f" (and {compare} for (c'))" if compare else "")
    )

    procs = Processes()

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    results: dict[str, Any] = {}
    exit_code = 0
    try:
        # --- fresh state ------------------------------------------------------------------------
        if (var_dir / "torchserve").exists():  # a TorchServe left by an interrupted run
            with contextlib.suppress(Exception):
                django(*manage, "torchserve", "stop", timeout=60)
        if sqlite and not args.keep_db and var_dir.exists():
            shutil.rmtree(var_dir)
        var_dir.mkdir(parents=True, exist_ok=True)
        out_dir = var_dir / "out"
        out_dir.mkdir(exist_ok=True)
        log(
            f"state in {var_dir} ({'SQLite' if sqlite else 'DATABASE_URL'}"
            f"{', Redis' if os.environ.get('REDIS_URL') else ''}); migrating"
        )
        django(*manage, "migrate", "--noinput")
        django(*manage, "createcachetable")

        # TorchServe starts while the demo models are trained.
        ts_error: list[BaseException] = []

        def start_torchserve() -> None:
            try:
                django(*manage, "torchserve", "start", timeout=180)
            except BaseException as exc:
                ts_error.append(exc)

        ts_thread = threading.Thread(target=start_torchserve, daemon=True)

        def stop_torchserve() -> None:
            ts_thread.join(120)  # a start still in progress writes its pid files first
            django(*manage, "torchserve", "stop", timeout=90)

        procs.cleanups.append(("torchserve stop", stop_torchserve))
        ts_thread.start()
        log("seeding the demo (trains the demo models) while TorchServe starts")
        django(*manage, "seed_demo")
        ts_thread.join(180)
        if ts_error or ts_thread.is_alive():
            raise RuntimeError(
                f"TorchServe did not start: {ts_error[0] if ts_error else 'timeout'}"
            )
        ts_status = json.loads(django(*manage, "torchserve", "status", "--json"))
        java_pid = int(ts_status["java_pid"])
        ts_keys = json.loads(Path(ts_status["key_file"]).read_text())
        log(f"TorchServe healthy (Java pid {java_pid}, token auth on); registering the model")
        prep = json.loads(
            django(PYTHON, str(ROOT / "bench" / "djtool.py"), "prepare", "--family", args.family)
        )
        body_file = out_dir / "body.json"
        body_file.write_text(json.dumps({"rows": [prep["row"]]}))
        ts_name, ts_version = prep["torchserve"]["name"], prep["torchserve"]["version"]

        # --- Gatehouse servers ------------------------------------------------------------------
        servers: list[Server] = []

        def start_server(key: str, model: str, backend: str) -> Server:
            port = free_port()
            argv, label = server_argv(model, port, args)
            log_path = out_dir / f"server-{key}.log"
            server_env = dict(env, INFERENCE_BACKEND=backend)
            with log_path.open("wb") as f:
                process = procs.popen(
                    f"server {key}",
                    argv,
                    env=server_env,
                    cwd=ROOT,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            server = Server(key, label, backend, port, process, log_path)
            servers.append(server)
            return server

        server_b = start_server("b", server_model, "torchserve")
        server_c = start_server("c", server_model, "local")
        server_c2 = start_server("c2", compare, "local") if compare else None
        for s in servers:
            wait_http(f"http://127.0.0.1:{s.port}/health", s.process, 60, s.log_path)
        log(f"Gatehouse up: {', '.join(f'{s.key}={s.label} :{s.port}' for s in servers)}")

        # --- targets ----------------------------------------------------------------------------
        predict_path = f"/api/v1/models/{prep['family']}/predict"
        targets: list[dict[str, Any]] = [
            {
                "key": "a",
                "name": "(a) TorchServe direct",
                "server": "TorchServe 0.12.0, 2 workers, batch 8/5 ms",
                "url": f"{env['TORCHSERVE_INFERENCE_URL']}/predictions/{ts_name}/{ts_version}",
                "auth": f"Bearer {ts_keys['inference']['key']}",
                "pids": lambda: tree_pids(java_pid),
                "ts_pids": None,
            },
            {
                "key": "b",
                "name": "(b) Gatehouse -> TorchServe",
                "server": server_b.label,
                "url": f"http://127.0.0.1:{server_b.port}{predict_path}",
                "auth": f"Bearer {prep['api_key']}",
                "pids": lambda: tree_pids(server_b.process.pid),
                "ts_pids": lambda: tree_pids(java_pid),
            },
            {
                "key": "c",
                "name": "(c) Gatehouse, local backend",
                "server": server_c.label,
                "url": f"http://127.0.0.1:{server_c.port}{predict_path}",
                "auth": f"Bearer {prep['api_key']}",
                "pids": lambda: tree_pids(server_c.process.pid),
                "ts_pids": None,
            },
        ]
        if server_c2:
            targets.append(
                {
                    "key": "c2",
                    "name": "(c') Gatehouse, local backend",
                    "server": server_c2.label,
                    "url": f"http://127.0.0.1:{server_c2.port}{predict_path}",
                    "auth": f"Bearer {prep['api_key']}",
                    "pids": lambda: tree_pids(server_c2.process.pid),
                    "ts_pids": None,
                }
            )

        rows: list[dict[str, Any]] = []
        windows: list[tuple[str, str, str]] = []  # (target, since, until) of each counted run
        for t in targets:
            warm_prefix = f"w{run_id}{t['key']}."
            run_prefix = f"r{run_id}{t['key']}."
            t["run_prefix"] = run_prefix
            common = {
                "auth": t["auth"],
                "body_file": body_file,
                "args": args,
                "out_dir": out_dir,
                "procs": procs,
            }
            # First requests load the model in each worker (torch import, TorchServe
            # registration): answered before the timed warm-up starts.
            prime(t["url"], t["auth"], body_file.read_bytes(), f"{warm_prefix}0.", args.connections)
            warm = run_load(t["url"], prefix=warm_prefix, seconds=args.warmup, **common)
            if warm.ok == 0:
                raise RuntimeError(
                    f"{t['name']}: no 2xx answer in the warm-up: {warm.statuses}\n"
                    f"{warm.raw[-2000:]}"
                )
            pids = t["pids"]()
            ts_pids = t["ts_pids"]() if t["ts_pids"] else []
            load_before = loadavg()
            cpu0, ts0, busy0, t0 = (
                cpu_seconds(pids),
                cpu_seconds(ts_pids),
                machine_busy_seconds(),
                time.monotonic(),
            )
            since = dt.datetime.now(dt.UTC).isoformat()
            result = run_load(t["url"], prefix=run_prefix, seconds=args.duration, **common)
            wall = time.monotonic() - t0
            if t["key"] != "a":  # the decision leaves of this run: merge delay below
                windows.append((t["key"], since, dt.datetime.now(dt.UTC).isoformat()))
            cpu1, ts1, busy1 = cpu_seconds(pids), cpu_seconds(ts_pids), machine_busy_seconds()
            server_cpu = cpu1 - cpu0
            ts_cpu = ts1 - ts0
            other = (busy1 - busy0) - server_cpu - ts_cpu - result.tool_cpu_s
            row = {
                "key": t["key"],
                "target": t["name"],
                "server": t["server"],
                "url": t["url"],
                "load": result.tool,
                "requests": result.requests,
                "ok_2xx": result.ok,
                "non_2xx": result.requests - result.ok,
                "statuses": result.statuses,
                "socket_errors": result.errors,
                "duration_s": round(result.duration_s, 2),
                "rps": round(result.rps, 1),
                "p50_ms": round(result.p50_ms, 2),
                "p90_ms": round(result.p90_ms, 2),
                "p99_ms": round(result.p99_ms, 2),
                "server_cpu_ms_per_req": round(1000 * server_cpu / max(1, result.requests), 2),
                "torchserve_cpu_ms_per_req": (
                    round(1000 * ts_cpu / max(1, result.requests), 2) if ts_pids else None
                ),
                "load_tool_cpu_cores": round(result.tool_cpu_s / wall, 2),
                "other_processes_cpu_cores": round(max(0.0, other) / wall, 2),
                "loadavg_before": load_before,
                "_ok_ids": result.ok_ids,
                "_sent": result.sent,
            }
            rows.append(row)
            log(
                f"{t['name']:<32} {row['rps']:>8.1f} req/s  p50 {row['p50_ms']:>7.1f} ms  "
                f"p99 {row['p99_ms']:>7.1f} ms  non-2xx {row['non_2xx']}  "
                f"server CPU {row['server_cpu_ms_per_req']} ms/req  "
                f"(others used {row['other_processes_cpu_cores']} cores)"
            )

        # --- completeness: one decision record per 2xx answer, matched by request id -----------
        gh_rows = [r for r in rows if r["key"] != "a"]
        found = json.loads(
            django(
                PYTHON,
                str(ROOT / "bench" / "djtool.py"),
                "ids",
                *[x for r in gh_rows for x in ("--prefix", f"r{run_id}{r['key']}.")],
            )
        )
        for r in gh_rows:
            got = found[f"r{run_id}{r['key']}."]
            recorded = set(got["ids"])
            answered = set(r["_ok_ids"])
            matched = len(answered & recorded)
            r["completeness"] = {
                "ok_2xx": r["ok_2xx"],
                "ok_ids_seen": len(answered),
                "records_for_2xx": matched,
                "missing_records": len(answered - recorded),
                "duplicate_records": got["records"] - len(recorded),
                # Sent, served and recorded, but the answer was not read: the load tool closed
                # its connections at the end of the run with these requests in flight.
                "records_in_flight_at_stop": len(recorded - answered),
                "ratio": round(matched / r["ok_2xx"], 6) if r["ok_2xx"] else None,
            }
            if (
                len(answered) != r["ok_2xx"]
                or r["completeness"]["ratio"] != 1.0
                or r["completeness"]["duplicate_records"]
            ):
                exit_code = 1
        for r in rows:
            r["ratio_vs_a"] = round(r["rps"] / rows[0]["rps"], 3) if rows[0]["rps"] else None

        # --- profile of (c) (or --profile-target b) -------------------------------------------
        profile: dict[str, Any] | None = None
        if args.profile_seconds > 0 and py_spy:
            pt = next(t for t in targets if t["key"] == args.profile_target)
            pt_server = server_b if args.profile_target == "b" else server_c
            raw = out_dir / f"profile-{pt['key']}-{args.profile_mode}.txt"
            spy_argv = [py_spy, "record", "--subprocesses", "--nonblocking", "--rate", "100"]
            if args.profile_mode == "wall":
                spy_argv.append("--idle")  # waits (locks, GIL, TorchServe) count too
            spy_argv += [
                "--duration",
                str(int(args.profile_seconds)),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--pid",
                str(pt_server.process.pid),
            ]
            log(
                f"profiling {pt['name']} with py-spy ({args.profile_mode} time) for "
                f"{args.profile_seconds:.0f} s under the same load"
            )
            spy = procs.popen("py-spy", spy_argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            time.sleep(0.5)
            run_load(
                pt["url"],
                prefix=f"p{run_id}{pt['key']}.",
                seconds=args.profile_seconds,
                auth=pt["auth"],
                body_file=body_file,
                args=args,
                out_dir=out_dir,
                procs=procs,
            )
            spy_out = spy.communicate(timeout=60)[0].decode(errors="replace")
            procs.forget(spy)
            if raw.exists():
                profile = summarise_profile(raw, args.profile_mode)
                profile["target"] = pt["name"]
                profile["raw"] = (
                    str(raw.relative_to(ROOT)) if raw.is_relative_to(ROOT) else str(raw)
                )
                profile["tool"] = (
                    " ".join(
                        [
                            "py-spy",
                            *spy_argv[1:6],
                            "(idle included)" if "--idle" in spy_argv else "",
                        ]
                    ).strip()
                    + f" = {args.profile_mode} time"
                )
            else:
                log(f"py-spy produced no profile:\n{spy_out[-1500:]}")
        elif args.profile_seconds > 0:
            log("py-spy is not installed: no profile (`make bench` puts it in var/bench-tools)")

        # --- decision log: merge delay of each counted run ---------------------------------------
        # integrated_at - created_at of the "decision" leaves created during each run, once the
        # servers' embedded sequencers have emptied the queue (bench/tlog.py merge-delay waits
        # up to 30 s; the servers are still up here). An empty queue also keeps the sequencer
        # from writing while verify_decisions reads.
        merge_out = out_dir / "merge-delay.json"
        django(
            PYTHON,
            str(ROOT / "bench" / "tlog.py"),
            "merge-delay",
            "--wait",
            "30",
            "--out",
            str(merge_out),
            *[x for key, since, until in windows for x in ("--window", key, since, until)],
        )
        merge = json.loads(merge_out.read_text())
        for r in rows:
            if r["key"] in merge["windows"]:
                r["merge_delay"] = merge["windows"][r["key"]]
        log(
            f"decision log: queue empty after {merge['waited_s']} s "
            f"({merge['pending_after_wait']} leaves still queued)"
        )

        # --- log verification -----------------------------------------------------------------
        # The servers (and their embedded sequencers) are still running: no --integrate, which
        # would need the sequencer lease they hold. Leaves still queued are counted by
        # verify_decisions, not failed.
        verify = subprocess.run(  # noqa: S603
            [*manage, "verify_decisions"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        verify_text = (verify.stdout + verify.stderr).strip().splitlines()[-1:] or ["(no output)"]
        if verify.returncode != 0:
            exit_code = 1

        # --- report -----------------------------------------------------------------------------
        b_a = next((r["ratio_vs_a"] for r in rows if r["key"] == "b"), None)
        c_a = next((r["ratio_vs_a"] for r in rows if r["key"] == "c"), None)
        results = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": info,
            "code": code_version(),
            "versions": versions(env),
            "command": "make bench  (bench/run.py " + " ".join(sys.argv[1:]) + ")",
            "settings": {
                "family": prep["family"],
                "version": prep["version"],
                "rows_per_request": 1,
                "load": rows[0]["load"],
                "warmup_s": args.warmup,
                "duration_s": args.duration,
                "database": "SQLite (WAL)" if sqlite else "DATABASE_URL",
                "torchserve": "2 workers, batch_size 8, max_batch_delay 5 ms, token auth",
            },
            "targets": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
            "ratios": {
                "b/a": b_a,
                "c/a": c_a,
                "target": TARGET_RATIO,
                "b_meets_target": bool(b_a is not None and b_a >= TARGET_RATIO),
            },
            "verify_decisions": {"ok": verify.returncode == 0, "output": verify_text[0]},
            "decision_log": {
                "merge_delay": {r["key"]: r.get("merge_delay") for r in rows if r["key"] != "a"},
                "queue_wait_s": merge["waited_s"],
                "pending_after_wait": merge["pending_after_wait"],
                "max_merge_delay_setting_s": float(os.environ.get("LOG_MAX_MERGE_DELAY_S", 1)),
            },
            "profile": profile,
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        results_path = var_dir / "results.json"
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        print_report(results, results_path)
        if exit_code:
            log(
                "FAILED: decision-record completeness is not exactly 1.0 or the log does not verify"
            )
    except KeyboardInterrupt as exc:
        log(f"interrupted ({str(exc) or 'Ctrl-C'}); stopping everything")
        exit_code = 130
    except Exception as exc:
        log(f"FAILED: {exc}")
        exit_code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log(f"all processes stopped; {time.monotonic() - started:.0f} s in all")
    return exit_code


def print_report(results: dict[str, Any], path: Path) -> None:
    rows = results["targets"]
    print()
    print(
        f"Gatehouse benchmark, {results['date']}: {results['settings']['family']} "
        f"v{results['settings']['version']}, 1 row per request, {results['settings']['load']}, "
        f"{results['settings']['warmup_s']:.0f} s warm-up + {results['settings']['duration_s']:.0f}"
        f" s counted, {results['settings']['database']}"
    )
    m = results["machine"]
    print(f"Machine: {m['nproc']} x {m['cpu_model']}, {m['ram_gib']} GiB RAM, Python {m['python']}")
    header = (
        f"{'target':<31} {'server model':<42} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'x (a)':>6} {'CPU ms/req':>10} {'completeness':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        comp = r.get("completeness")
        comp_text = f"{comp['ratio']:.4f}" if comp and comp["ratio"] is not None else "n/a"
        cpu = f"{r['server_cpu_ms_per_req']:.2f}"
        if r.get("torchserve_cpu_ms_per_req") is not None:
            cpu += f"+{r['torchserve_cpu_ms_per_req']:.1f}"
        print(
            f"{r['target']:<31} {r['server'][:42]:<42} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['ratio_vs_a']:>6.3f} {cpu:>10} {comp_text:>13}"
        )
    print(
        "(CPU ms/req: server processes' CPU per answered request; for (b), Gatehouse + TorchServe)"
    )
    for r in rows:
        comp = r.get("completeness")
        if comp:
            print(
                f"{r['target']}: {comp['ok_2xx']} 2xx answers, {comp['records_for_2xx']} of "
                f"them with a decision record, {comp['missing_records']} missing, "
                f"{comp['duplicate_records']} duplicates; {comp['records_in_flight_at_stop']} "
                "more records for requests in flight when the load tool stopped "
                "(served and recorded, answer not read)"
            )
        if r["non_2xx"] or any(r["socket_errors"].values()):
            print(f"{r['target']}: statuses {r['statuses']}, socket errors {r['socket_errors']}")
    ratios = results["ratios"]
    verdict = "MET" if ratios["b_meets_target"] else "NOT MET"
    print(
        f"b/a = {ratios['b/a']:.3f}   c/a = {ratios['c/a']:.3f}   "
        f"target b/a >= {ratios['target']}: {verdict}"
    )
    for r in rows:
        md = r.get("merge_delay")
        if md and md["p50_ms"] is not None:
            print(
                f"{r['target']}: merge delay p50 {md['p50_ms']:.0f} ms, p99 {md['p99_ms']:.0f} ms, "
                f"max {md['max_ms']:.0f} ms over {md['leaves']} decision leaves "
                f"({md['still_queued']} still queued)"
            )
    print(f"verify_decisions: {results['verify_decisions']['output']}")
    others = max(r["other_processes_cpu_cores"] for r in rows)
    if others > 0.2:
        print(
            f"NOTE: other processes on this machine used up to {others:.2f} cores during the "
            "runs; the figures are noisy (compare ratios and CPU ms/req)."
        )
    profile = results.get("profile")
    if profile:
        print()
        print(
            f"Where the time of {profile['target']} goes ({profile['tool']}, "
            f"{profile['samples']} samples in request threads):"
        )
        for name, _, pct in profile["categories"]:
            print(f"  {pct:5.1f}%  {name}")
        print("  top frames (own time):")
        for frame, _, pct in profile["top_own"][:8]:
            print(f"  {pct:5.1f}%  {frame}")
        print(f"  raw stacks: {profile['raw']}")
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"results: {shown}  ({results['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
