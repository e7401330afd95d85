"""Private PostgreSQL and Redis servers for fault tests: started on free loopback ports in
throwaway directories, stopped and restarted by the test, removed afterwards. The shared
servers on 5432 and 6379 are never touched.

PostgreSQL refuses to run as root: when the tests run as root, the cluster belongs to the
``postgres`` OS user and every server command runs through ``runuser -u postgres --``.

``require_binaries`` skips a test when the binaries are missing, except in CI (``CI=true``),
where it fails: the CI machine has them, so a missing binary there is a broken machine.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_USER = "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def pg_bindir() -> Path | None:
    """The newest PostgreSQL server binaries (Debian's /usr/lib/postgresql/N/bin, or PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def require_binaries(*what: str) -> None:
    """Skip (or, with CI=true, fail) unless the server binaries named (postgres, redis) exist;
    PostgreSQL as root also needs the ``postgres`` OS user and ``runuser``."""
    missing = []
    if "postgres" in what:
        bindir = pg_bindir()
        if bindir is None or not (bindir / "initdb").exists():
            missing.append("PostgreSQL server binaries (initdb, pg_ctl)")
        elif os.geteuid() == 0:
            try:
                pwd.getpwnam(PG_USER)
            except KeyError:
                missing.append(f"the '{PG_USER}' OS user (PostgreSQL does not run as root)")
            if not shutil.which("runuser"):
                missing.append("runuser")
    if "redis" in what and not shutil.which("redis-server"):
        missing.append("redis-server")
    if missing:
        message = "fault test needs " + ", ".join(missing)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message} (CI=true: the CI machine must have them)", pytrace=False)
        pytest.skip(message)


# --- Redis -------------------------------------------------------------------------------------


class PrivateRedis:
    """``redis-server`` on a free port, no persistence; ``stop`` and ``start`` again on the
    same port (a fresh, empty server, as after a crash without persistence)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.workdir),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(workdir)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


# --- PostgreSQL --------------------------------------------------------------------------------


class PrivatePostgres:
    """A throwaway cluster (trust auth, fsync off) listening on 127.0.0.1:<free port>, its
    socket in its own directory. As root, it belongs to the ``postgres`` OS user."""

    def __init__(self) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL binaries")
        self.bindir = bindir
        # Under /tmp itself, not pytest's tmp_path: the postgres user cannot enter root's
        # 0700 pytest directories.
        self.root = Path(tempfile.mkdtemp(prefix="gh-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.superuser = PG_USER if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        if self.as_root:
            entry = pwd.getpwnam(PG_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", PG_USER, "--"] if self.as_root else []
        return subprocess.run(
            [*prefix, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
        )

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            server_log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n"
                f"{server_log}"
            )

    @property
    def options(self) -> str:
        return (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c fsync=off -c full_page_writes=off -c max_connections=100"
        )

    def init(self) -> None:
        self._check(
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.superuser,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ),
            "initdb",
        )

    def start(self) -> None:
        self._check(self._pg_ctl("start"), "pg_ctl start")

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, open transactions roll back."""
        self._check(self._pg_ctl("restart", "-m", "fast"), "pg_ctl restart")

    def _pg_ctl(self, action: str, *extra: str) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / "pg_ctl"), action, "-D", str(self.data), "-w", "-t", "60"]
        if action in ("start", "restart"):
            argv += ["-l", str(self.log), "-o", self.options]
        return self._run(*argv, *extra)

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = self._run(
            str(self.bindir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            self.superuser,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        )
        self._check(result, f"psql {sql!r}")
        return result.stdout.strip()

    def url(self, database: str) -> str:
        return f"postgres://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.remove()
