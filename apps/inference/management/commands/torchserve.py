"""``manage.py torchserve start|stop|status``: a development TorchServe configured from settings."""

from __future__ import annotations

import json
import logging
import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.inference import torchserve_server as server


class Command(BaseCommand):
    help = (
        "Start, stop or inspect a development TorchServe serving TORCHSERVE_MODEL_STORE on the "
        "ports of TORCHSERVE_INFERENCE_URL and TORCHSERVE_MANAGEMENT_URL."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["start", "stop", "status"])
        parser.add_argument(
            "--foreground",
            action="store_true",
            help="start: stay attached (for a Procfile) and stop TorchServe on SIGTERM/SIGINT.",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=server.START_TIMEOUT_S,
            help="start: seconds to wait for /ping to answer Healthy.",
        )
        parser.add_argument("--json", action="store_true", help="status: print JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per /ping poll
        config = server.ServerConfig.from_settings()
        action = options["action"]
        if action == "start":
            self._start(config, foreground=options["foreground"], timeout=options["timeout"])
        elif action == "stop":
            if server.stop(config):
                self.stdout.write("TorchServe stopped.")
            else:
                self.stdout.write("TorchServe was not running.")
        else:
            self._status(config, as_json=options["json"])

    def _start(self, config: server.ServerConfig, *, foreground: bool, timeout: float) -> None:
        try:
            process = server.start(config, timeout_s=timeout)
        except server.TorchServeServerError as exc:
            raise CommandError(str(exc)) from exc
        java = server.java_process(config)
        self.stdout.write(
            f"TorchServe is healthy (Java pid {java.pid if java else '?'}): inference "
            f"{config.inference_url}, management {config.management_url}, model store "
            f"{config.model_store}, log {config.log_path}"
        )
        if config.token_auth:
            self.stdout.write(
                f"Token authorization is on: TorchServe wrote its keys to {config.key_file}; "
                "set TORCHSERVE_KEY_FILE to that path (or copy the keys into TORCHSERVE_TOKEN "
                "and TORCHSERVE_MANAGEMENT_TOKEN)."
            )
        else:
            self.stdout.write(
                self.style.WARNING("Token authorization is OFF (development, no token set).")
            )
        if not foreground:
            return
        stop_requested = threading.Event()

        def request_stop(signum: int, frame: Any) -> None:
            stop_requested.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        while process.poll() is None and not stop_requested.wait(0.5):
            pass
        server.stop(config)
        process.wait(timeout=10)
        self.stdout.write("TorchServe stopped.")

    def _status(self, config: server.ServerConfig, *, as_json: bool) -> None:
        state = server.status(config)
        if as_json:
            self.stdout.write(json.dumps(state, indent=2))
        elif state["running"]:
            self.stdout.write(
                f"TorchServe is running (Java pid {state['java_pid']}), /ping: "
                f"{state['ping'] or 'no answer'}; inference {state['inference_url']}, "
                f"management {state['management_url']}, log {state['log']}"
            )
        else:
            self.stdout.write(f"TorchServe is not running (home {state['home']}).")
        if not state["running"] or state["ping"] != "Healthy":
            raise CommandError("TorchServe is not running and healthy.", returncode=3)
