"""Start, watch and stop a TorchServe instance for development (``manage.py torchserve``).

The configuration is generated from settings: ports from ``TORCHSERVE_*_URL``, the model store
``TORCHSERVE_MODEL_STORE``, and a private home ``<GATEHOUSE_VAR_DIR>/torchserve`` with its own
TEMP and logs. It works around the traps in docs (shared notes "torchserve.md"): one TEMP per
instance (trap 1), readiness judged by ``/ping`` rather than the launcher's exit code (trap 2),
SIGTERM sent to the Java process named in ``$TEMP/.model_server.pid`` (trap 3), quiet logging
(trap 4). Production runs TorchServe from ``deploy/torchserve/`` under a service manager.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

JAVA_MAIN_CLASS = "org.pytorch.serve.ModelServer"
JAVA_PID_FILE = ".model_server.pid"  # written by the launcher into tempfile.gettempdir()
LAUNCHER_PID_FILE = "launcher.pid"
KEY_FILE = "key_file.json"  # written by TorchServe into its current directory
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
# Worker sockets live in TEMP as .ts.sock.<n>; a Unix socket path must stay under 108 bytes.
MAX_TEMP_PATH = 70

LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Development logging: no access log, no metrics log (about 800 bytes per request
     otherwise, trap 4). Handler tracebacks are logged by the worker at INFO under MODEL_LOG,
     so that one stays at INFO. -->
<Configuration>
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{ISO8601} [%-5p] %t %c - %m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="off" additivity="false"/>
    <Logger name="TS_METRICS" level="off" additivity="false"/>
    <Logger name="MODEL_METRICS" level="off" additivity="false"/>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Logger name="MODEL_LOG" level="info" additivity="false">
      <AppenderRef ref="STDOUT"/>
    </Logger>
    <Logger name="org.pytorch.serve" level="warn" additivity="false">
      <AppenderRef ref="STDOUT"/>
    </Logger>
    <Root level="warn">
      <AppenderRef ref="STDOUT"/>
    </Root>
  </Loggers>
</Configuration>
"""


class TorchServeServerError(RuntimeError):
    """TorchServe could not be started or stopped (the message says why, with the log tail)."""


def _port(url: str) -> int:
    port = urlsplit(url).port
    if port is None:
        raise TorchServeServerError(f"{url} names no port")
    return port


def _host(url: str) -> str:
    return urlsplit(url).hostname or "127.0.0.1"


@dataclass(frozen=True)
class ServerConfig:
    """Everything one instance needs; ``from_settings`` builds the development one."""

    inference_url: str
    management_url: str
    metrics_url: str
    grpc_inference_port: int
    grpc_management_port: int
    model_store: Path
    home: Path
    token_auth: bool = True
    heap_mb: int = 512
    workers_per_model: int = 1

    @classmethod
    def from_settings(cls) -> ServerConfig:
        from django.conf import settings

        inference = str(settings.TORCHSERVE_INFERENCE_URL).rstrip("/")
        management = str(settings.TORCHSERVE_MANAGEMENT_URL).rstrip("/")
        metrics = str(
            getattr(settings, "TORCHSERVE_METRICS_URL", "")
            or f"http://{_host(management)}:{_port(management) + 1}"
        ).rstrip("/")
        # Token authorization is off only in development, and only without a token to send.
        token_auth = not (
            settings.DEBUG
            and not settings.TORCHSERVE_TOKEN
            and not getattr(settings, "TORCHSERVE_KEY_FILE", "")
        )
        return cls(
            inference_url=inference,
            management_url=management,
            metrics_url=metrics,
            grpc_inference_port=int(
                getattr(settings, "TORCHSERVE_GRPC_INFERENCE_PORT", _port(inference) + 10)
            ),
            grpc_management_port=int(
                getattr(settings, "TORCHSERVE_GRPC_MANAGEMENT_PORT", _port(management) + 10)
            ),
            model_store=Path(settings.TORCHSERVE_MODEL_STORE).resolve(),
            home=(Path(settings.VAR_DIR) / "torchserve").resolve(),
            token_auth=token_auth,
            heap_mb=int(getattr(settings, "TORCHSERVE_HEAP_MB", 512)),
            workers_per_model=int(getattr(settings, "TORCHSERVE_WORKERS", 1)),
        )

    @property
    def temp(self) -> Path:
        """TEMP of this instance: under its home, unless that path is too long for sockets."""
        temp = self.home / "tmp"
        if len(str(temp)) <= MAX_TEMP_PATH:
            return temp
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"gatehouse-ts-{digest}"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def log_path(self) -> Path:
        return self.logs / "torchserve.out"

    @property
    def config_path(self) -> Path:
        return self.home / "config.properties"

    @property
    def log4j_path(self) -> Path:
        return self.home / "log4j2.xml"

    @property
    def key_file(self) -> Path:
        return self.home / KEY_FILE

    @property
    def ports(self) -> dict[str, tuple[str, int]]:
        return {
            "inference": (_host(self.inference_url), _port(self.inference_url)),
            "management": (_host(self.management_url), _port(self.management_url)),
            "metrics": (_host(self.metrics_url), _port(self.metrics_url)),
            "grpc inference": (_host(self.inference_url), self.grpc_inference_port),
            "grpc management": (_host(self.management_url), self.grpc_management_port),
        }


def properties_value(value: str) -> str:
    """Java .properties treats backslashes as escapes."""
    return value.replace("\\", "\\\\")


def render_properties(config: ServerConfig) -> str:
    store = str(config.model_store)
    allowed = "file://" + re.escape(store) + "/.*"  # the default allows any URL: SSRF
    lines = [
        "# Generated by `manage.py torchserve start` for development; see deploy/torchserve/.",
        f"inference_address={config.inference_url}",
        f"management_address={config.management_url}",
        f"metrics_address={config.metrics_url}",
        f"grpc_inference_address={_host(config.inference_url)}",
        f"grpc_management_address={_host(config.management_url)}",
        f"grpc_inference_port={config.grpc_inference_port}",
        f"grpc_management_port={config.grpc_management_port}",
        f"model_store={properties_value(store)}",
        "enable_model_api=true",
        f"disable_token_authorization={'false' if config.token_auth else 'true'}",
        "metrics_mode=prometheus",
        "install_py_dep_per_model=false",
        "enable_envvars_config=false",
        f"allowed_urls={properties_value(allowed)}",
        f"default_workers_per_model={config.workers_per_model}",
        f"vmargs=-Xmx{config.heap_mb}m -XX:+ExitOnOutOfMemoryError",
    ]
    return "\n".join(lines) + "\n"


def launcher() -> Path:
    """The ``torchserve`` launcher of this interpreter's environment."""
    return Path(sys.executable).parent / "torchserve"


def find_java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:  # the launcher runs $JAVA_HOME/bin/java when JAVA_HOME is set
        candidate = Path(java_home) / "bin" / "java"
        return str(candidate) if os.access(candidate, os.X_OK) else None
    return shutil.which("java")


def server_env(config: ServerConfig) -> dict[str, str]:
    # TS_* variables override config.properties (TS_CONFIG_FILE even replaces it): drop them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
    temp = str(config.temp)
    # The launcher writes its pid file to tempfile.gettempdir(), which reads TMPDIR first.
    env.update(
        TEMP=temp,
        TMPDIR=temp,
        TMP=temp,
        LOG_LOCATION=str(config.logs),
        METRICS_LOCATION=str(config.logs),
        PYTHONUNBUFFERED="1",
    )
    return env


def _process_from(pid_file: Path, marker: str) -> psutil.Process | None:
    """The process named in ``pid_file``, if it still runs and its command line has ``marker``
    (a recycled pid is never signalled)."""
    with suppress(OSError, ValueError, psutil.Error):
        process = psutil.Process(int(pid_file.read_text().strip()))
        if any(marker in part for part in process.cmdline()):
            return process
    return None


def java_process(config: ServerConfig) -> psutil.Process | None:
    return _process_from(config.temp / JAVA_PID_FILE, JAVA_MAIN_CLASS)


def launcher_process(config: ServerConfig) -> psutil.Process | None:
    return _process_from(config.home / LAUNCHER_PID_FILE, "torchserve")


def read_keys(config: ServerConfig) -> dict[str, str] | None:
    """{"inference", "management", "API"} keys from key_file.json, if TorchServe wrote it."""
    try:
        data = json.loads(config.key_file.read_text())
        return {api: str(data[api]["key"]) for api in ("inference", "management", "API")}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ping(config: ServerConfig, timeout: float = 2.0) -> str | None:
    """``Healthy``, ``Partial Healthy``, ``Unhealthy``, or None when it does not answer."""
    headers = {}
    if config.token_auth:
        keys = read_keys(config)
        if keys is None:
            return None
        headers["Authorization"] = f"Bearer {keys['inference']}"
    try:
        response = httpx.get(
            f"{config.inference_url}/ping", headers=headers, timeout=timeout, trust_env=False
        )
        status = response.json().get("status")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return str(status) if status else None


def log_tail(config: ServerConfig, chars: int = 4000) -> str:
    try:
        return config.log_path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def start(config: ServerConfig, *, timeout_s: float = START_TIMEOUT_S) -> subprocess.Popen[bytes]:
    """Launch TorchServe in its own session and return once ``/ping`` says Healthy.

    The launcher runs with ``--foreground`` (it waits for Java), detached from the caller:
    it survives the caller unless the caller stops it. Raises TorchServeServerError when it
    is already running, a port is taken, or it is not healthy in time (it is stopped then).
    """
    running = java_process(config)
    if running is not None:
        raise TorchServeServerError(f"TorchServe is already running (Java pid {running.pid}).")
    if find_java() is None:
        raise TorchServeServerError("TorchServe needs Java 17: `java` is not on PATH.")
    if not launcher().exists():
        raise TorchServeServerError(f"the torchserve launcher is not installed: {launcher()}")
    for name, (host, port) in config.ports.items():
        if _taken(host, port):  # trap 2: Java would die, and the launcher exit 0
            raise TorchServeServerError(f"the {name} port {host}:{port} is taken")
    for directory in (config.home, config.temp, config.logs, config.model_store):
        directory.mkdir(parents=True, exist_ok=True)
    config.config_path.write_text(render_properties(config))
    config.log4j_path.write_text(LOG4J2_XML)
    config.key_file.unlink(missing_ok=True)  # a stale key file would be read before the new one
    (config.temp / JAVA_PID_FILE).unlink(missing_ok=True)
    with config.log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                str(launcher()),
                "--start",
                "--foreground",
                "--ncs",
                "--ts-config",
                str(config.config_path),
                "--log-config",
                str(config.log4j_path),
            ],
            cwd=config.home,  # key_file.json is written to the current directory
            env=server_env(config),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (config.home / LAUNCHER_PID_FILE).write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stop(config)
            raise TorchServeServerError(
                f"TorchServe exited ({process.returncode}) before it was healthy:\n"
                f"{log_tail(config)}"
            )
        if ping(config) == "Healthy" and java_process(config) is not None:
            return process
        time.sleep(0.2)
    stop(config)
    raise TorchServeServerError(
        f"TorchServe was not healthy after {timeout_s:.0f} s:\n{log_tail(config)}"
    )


def stop(config: ServerConfig, *, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM the Java server (trap 3: killing the launcher would orphan it), wait for it and
    for the launcher; kill what outlives the timeout. True if something was running."""
    java = java_process(config)
    parent = launcher_process(config)
    stopped = java is not None or parent is not None
    if java is not None:
        try:
            java.terminate()
            java.wait(timeout=timeout_s)
        except psutil.TimeoutExpired:
            java.kill()
            with suppress(psutil.Error):
                java.wait(timeout=5)
        except psutil.NoSuchProcess:
            pass
    if parent is not None:
        try:
            parent.wait(timeout=10)  # it exits once Java has
        except psutil.TimeoutExpired:
            parent.terminate()
            with suppress(psutil.Error):
                parent.wait(timeout=5)
        except psutil.NoSuchProcess:
            pass
        if parent.is_running():
            with suppress(psutil.Error):
                parent.kill()
    for leftover in (
        config.temp / JAVA_PID_FILE,
        config.home / LAUNCHER_PID_FILE,
        config.key_file,  # the keys die with the server
    ):
        leftover.unlink(missing_ok=True)
    return stopped


def status(config: ServerConfig) -> dict[str, Any]:
    java = java_process(config)
    return {
        "running": java is not None,
        "java_pid": java.pid if java is not None else None,
        "ping": ping(config) if java is not None else None,
        "inference_url": config.inference_url,
        "management_url": config.management_url,
        "metrics_url": config.metrics_url,
        "model_store": str(config.model_store),
        "home": str(config.home),
        "temp": str(config.temp),
        "log": str(config.log_path),
        "token_auth": config.token_auth,
        "key_file": str(config.key_file) if config.token_auth else None,
    }
