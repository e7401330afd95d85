"""Run a real TorchServe instance for a test: its own ports, temp dir, logs; stopped with no orphan.

See /work/shared/notes/torchserve.md for the traps this works around (one TEMP per instance,
readiness judged by /ping and READY workers, SIGTERM to the Java PID, quiet logging).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import psutil
import pytest

from apps.inference.torchserve_server import (
    JAVA_MAIN_CLASS,
    LOG4J2_XML,
    MAX_TEMP_PATH,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    find_java,
    properties_value,
)

BIN = Path(sys.executable).parent


class TorchServeError(RuntimeError):
    """TorchServe did not start, register or answer as expected (the message has the log tail)."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass
class TorchServeInstance:
    """One running TorchServe; use through ``torchserve(...)``."""

    inference_url: str
    management_url: str
    metrics_url: str
    model_store: Path
    home: Path
    log_path: Path
    inference_key: str | None = None
    management_key: str | None = None
    registered: list[tuple[str, str]] = field(default_factory=list)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Response:
        """One HTTP request; never raises on a status code. Adds the bearer token if any."""
        parts = urlsplit(url)
        all_headers = dict(headers or {})
        key = self.management_key if url.startswith(self.management_url) else self.inference_key
        if key and url.startswith((self.management_url, self.inference_url)):
            all_headers.setdefault("Authorization", f"Bearer {key}")
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request(method, path or "/", body=body, headers=all_headers)
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def ping(self) -> Response:
        return self.request("GET", f"{self.inference_url}/ping", timeout=5)

    def register(
        self,
        mar_name: str,
        *,
        batch_size: int = 8,
        max_batch_delay_ms: int = 5,
        workers: int = 1,
    ) -> dict[str, Any]:
        """Register ``model_store/mar_name`` synchronously; returns its description once
        ``workers`` workers are READY. A failed registration is deleted again (trap 5)."""
        name, version = mar_identity(self.model_store / mar_name)
        query = urlencode(
            {
                "url": mar_name,
                "initial_workers": workers,
                "batch_size": batch_size,
                "max_batch_delay": max_batch_delay_ms,
                "synchronous": "true",
            }
        )
        resp = self.request("POST", f"{self.management_url}/models?{query}", timeout=120)
        if resp.status != 200:
            self.unregister(name, version)
            raise TorchServeError(
                f"registering {mar_name} answered {resp.status}: {resp.text}\n{self.log_tail()}"
            )
        self.registered.append((name, version))
        described = self.describe(name, version)
        ready = [w for w in described.get("workers", []) if w.get("status") == "READY"]
        if len(ready) < workers:
            raise TorchServeError(
                f"{name} v{version}: {len(ready)}/{workers} workers READY: {described}\n"
                f"{self.log_tail()}"
            )
        return described

    def describe(self, name: str, version: str | None = None) -> dict[str, Any]:
        path = f"/models/{quote(name)}" + (f"/{quote(version)}" if version else "")
        resp = self.request("GET", f"{self.management_url}{path}")
        if resp.status != 200:
            raise TorchServeError(f"describing {name}: {resp.status} {resp.text}")
        described: list[dict[str, Any]] = resp.json()
        return described[0]

    def unregister(self, name: str, version: str) -> Response:
        return self.request(
            "DELETE", f"{self.management_url}/models/{quote(name)}/{quote(version)}", timeout=60
        )

    def predict(
        self, model: str, rows: Sequence[Mapping[str, Any]], version: str | None = None
    ) -> Response:
        """POST ``{"rows": rows}`` as JSON to /predictions/MODEL[/VERSION]."""
        path = f"/predictions/{quote(model)}" + (f"/{quote(version)}" if version else "")
        return self.request(
            "POST",
            f"{self.inference_url}{path}",
            body=json.dumps({"rows": list(rows)}).encode(),
            headers={"Content-Type": "application/json"},
        )


def mar_identity(mar: Path) -> tuple[str, str]:
    """(modelName, modelVersion) from an archive's MAR-INF/MANIFEST.json."""
    with zipfile.ZipFile(mar) as z:
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
    return manifest["model"]["modelName"], manifest["model"]["modelVersion"]


def _requirefind_java() -> None:
    problem = None
    if find_java() is None:
        problem = "TorchServe needs Java 17: `java` is not on PATH (or JAVA_HOME is wrong)"
    elif not (BIN / "torchserve").exists():
        problem = f"the torchserve launcher is not installed in {BIN}"
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(problem)
        pytest.skip(problem)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _write_config(home: Path, model_store: Path, *, token_auth: bool) -> dict[str, Any]:
    inference, management, metrics, grpc_inference, grpc_management = _free_ports(5)
    store = model_store.resolve()
    allowed = "file://" + re.escape(str(store)) + "/.*"
    lines = [
        f"inference_address=http://127.0.0.1:{inference}",
        f"management_address=http://127.0.0.1:{management}",
        f"metrics_address=http://127.0.0.1:{metrics}",
        "grpc_inference_address=127.0.0.1",
        "grpc_management_address=127.0.0.1",
        f"grpc_inference_port={grpc_inference}",
        f"grpc_management_port={grpc_management}",
        f"model_store={properties_value(str(store))}",
        "enable_model_api=true",
        f"disable_token_authorization={'false' if token_auth else 'true'}",
        "metrics_mode=prometheus",
        "install_py_dep_per_model=false",
        f"allowed_urls={properties_value(allowed)}",
        "vmargs=-Xmx256m",
    ]
    (home / "config.properties").write_text("\n".join(lines) + "\n")
    (home / "log4j2.xml").write_text(LOG4J2_XML)
    return {
        "inference_url": f"http://127.0.0.1:{inference}",
        "management_url": f"http://127.0.0.1:{management}",
        "metrics_url": f"http://127.0.0.1:{metrics}",
    }


def _server_env(temp: Path, logs: Path) -> dict[str, str]:
    # TS_* variables override config.properties (TS_CONFIG_FILE even replaces it): drop them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
    # The launcher writes its pid file to tempfile.gettempdir(), which reads TMPDIR first.
    env.update(
        TEMP=str(temp),
        TMPDIR=str(temp),
        TMP=str(temp),
        LOG_LOCATION=str(logs),
        METRICS_LOCATION=str(logs),
        PYTHONUNBUFFERED="1",
    )
    return env


def _java_process(family: list[psutil.Process], temp: Path) -> psutil.Process | None:
    """The Java server: the pid in $TEMP/.model_server.pid, if it is one of ours."""
    with suppress(OSError, ValueError):
        pid = int((temp / ".model_server.pid").read_text().strip())
        for process in family:
            if process.pid == pid:
                return process
    for process in family:
        with suppress(psutil.Error):
            if JAVA_MAIN_CLASS in process.cmdline():
                return process
    return None


def _stop(process: subprocess.Popen[bytes], temp: Path) -> None:
    """SIGTERM the Java server (trap 3), wait for the launcher, then reap any leftover."""
    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    java = _java_process(family, temp)
    if java is not None:
        try:
            java.terminate()
            java.wait(timeout=STOP_TIMEOUT_S)
        except psutil.TimeoutExpired:
            java.kill()
        except psutil.NoSuchProcess:
            pass
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
    _, alive = psutil.wait_procs(family, timeout=10)
    for leftover in alive:
        with suppress(psutil.NoSuchProcess):
            leftover.kill()
    psutil.wait_procs(alive, timeout=5)


def _read_keys(home: Path) -> tuple[str, str] | None:
    try:
        keys = json.loads((home / "key_file.json").read_text())
        return keys["inference"]["key"], keys["management"]["key"]
    except (OSError, ValueError, KeyError):
        return None


def _wait_until_healthy(
    instance: TorchServeInstance, process: subprocess.Popen[bytes], token_auth: bool
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TorchServeError(
                f"TorchServe exited ({process.returncode}) before it was healthy:\n"
                f"{instance.log_tail()}"
            )
        if token_auth and instance.inference_key is None:
            keys = _read_keys(instance.home)
            if keys:
                instance.inference_key, instance.management_key = keys
        if not token_auth or instance.inference_key:
            try:
                resp = instance.ping()
                if resp.status == 200 and resp.json().get("status") == "Healthy":
                    return
            except (OSError, http.client.HTTPException, ValueError):
                pass
        time.sleep(0.2)
    raise TorchServeError(
        f"TorchServe not healthy after {START_TIMEOUT_S:.0f}s:\n{instance.log_tail()}"
    )


def _short_temp(home: Path, stack: ExitStack) -> Path:
    temp = home / "tmp"
    if len(str(temp)) <= MAX_TEMP_PATH:
        temp.mkdir()
        return temp
    short = Path(tempfile.mkdtemp(prefix="ts-"))
    stack.callback(shutil.rmtree, short, ignore_errors=True)
    return short


@contextmanager
def torchserve(
    tmp_path: Path, model_store: Path, *, token_auth: bool = False
) -> Iterator[TorchServeInstance]:
    """Start TorchServe on free loopback ports serving ``model_store``; stop it on exit.

    Skips the test when Java is missing (fails instead when CI=true). With ``token_auth``
    the instance reads key_file.json and sends the bearer keys itself.
    """
    _requirefind_java()
    for attempt in range(3):
        with ExitStack() as stack:
            home = Path(tempfile.mkdtemp(prefix="torchserve-", dir=tmp_path))
            temp = _short_temp(home, stack)
            logs = home / "logs"
            logs.mkdir()
            urls = _write_config(home, model_store, token_auth=token_auth)
            instance = TorchServeInstance(
                **urls, model_store=model_store, home=home, log_path=home / "torchserve.log"
            )
            with instance.log_path.open("wb") as log:
                process = subprocess.Popen(
                    [
                        str(BIN / "torchserve"),
                        "--start",
                        "--foreground",
                        "--ncs",
                        "--ts-config",
                        str(home / "config.properties"),
                        "--log-config",
                        str(home / "log4j2.xml"),
                    ],
                    cwd=home,  # key_file.json is written to the current directory
                    env=_server_env(temp, logs),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                try:
                    _wait_until_healthy(instance, process, token_auth)
                except TorchServeError:
                    # Trap 2: a port taken between _free_ports() and bind() kills Java.
                    if attempt < 2 and "BindException" in instance.log_tail(20000):
                        continue
                    raise
                yield instance
                return
            finally:
                _stop(process, temp)
    raise AssertionError("unreachable")
