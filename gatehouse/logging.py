"""Request-id propagation into log records, and log-safe rendering of untrusted values."""

from __future__ import annotations

import logging
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


class RequestIDFilter(logging.Filter):
    """Adds ``record.request_id`` so every formatter can print it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def log_safe(value: object, limit: int = 80) -> str:
    """Render an untrusted value for a log line: no CR/LF (no forged lines), bounded length."""
    text = str(value)
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + "..."
