"""Test helpers for the decision log: integrate what is queued, then verify the whole log."""

from __future__ import annotations

from gatehouse.tlog.sequencer import Sequencer
from gatehouse.tlog.verification import Verification, verify_log


def integrate() -> int:
    return Sequencer().drain()


def integrated_and_verified() -> Verification:
    integrate()
    return verify_log()
