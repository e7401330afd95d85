"""Run the log's sequencer as a process of its own (active, or standing by for the active one)."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand

from gatehouse.tlog.sequencer import Sequencer


class Command(BaseCommand):
    help = "Integrate queued leaves and sign checkpoints; stands by while another one is active."

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()

        def _stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        worker = Sequencer()
        self.stdout.write(f"sequencer {worker.owner} started")
        worker.run(stop)
        self.stdout.write(f"sequencer {worker.owner} stopped")
