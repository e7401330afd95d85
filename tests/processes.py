"""Start real platform processes (ASGI server, Celery worker) against the test database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_database_url() -> str:
    """The URL of the database the test run created, for processes started by a test."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or ""
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": test_database_url(),
            "PYTHONUNBUFFERED": "1",
            "GATEHOUSE_TESTING": "1",
            **extra,
        }
    )
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(process: subprocess.Popen[Any], log: Path) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextmanager
def celery_worker(tmp_path: Path) -> Iterator[str]:
    """A real worker process on a queue of its own; yields the queue name."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "gatehouse",
                "worker",
                "--queues",
                queue,
                "--pool",
                "solo",
                "--hostname",
                f"{queue}@%h",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for(lambda: b"ready." in log.read_bytes(), process, log, "worker")
            yield queue
        finally:
            _stop(process, log)


@contextmanager
def asgi_server(tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """A real uvicorn process serving gatehouse.asgi (``env`` added to its environment);
    yields its base URL."""
    port = free_port()
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(BIN / "uvicorn"),
                "gatehouse.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--lifespan",
                "off",
            ],
            cwd=ROOT,
            env=_env(**(env or {})),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for(lambda: _port_open(port), process, log, "web server")
            yield f"127.0.0.1:{port}"
        finally:
            _stop(process, log)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(
    ready: Any, process: subprocess.Popen[Any], log: Path, what: str, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log.read_text(errors='replace')[-3000:]}")
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(
        f"{what} not ready in {timeout}s:\n{log.read_text(errors='replace')[-3000:]}"
    )


@contextmanager
def killable_celery_worker(
    tmp_path: Path, *, queue: str, name: str = "worker", env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[Any]]:
    """A real worker process on ``queue`` (solo pool: tasks run in the process itself, so a
    SIGKILL kills the running task too); yields the process, for the test to kill."""
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "gatehouse",
                "worker",
                "--queues",
                queue,
                "--pool",
                "solo",
                "--hostname",
                f"{name}-{queue}@%h",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=_env(**(env or {})),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for(lambda: b"ready." in log.read_bytes(), process, log, name)
            yield process
        finally:
            if process.poll() is None:
                _stop(process, log)
