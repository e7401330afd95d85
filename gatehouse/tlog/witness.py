"""Checkpoints exported for witnesses outside the database: a directory of files (one per tree
size, the signed note as served by ``GET /api/v1/log/checkpoint``) and a signed webhook."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import httpx
from django.conf import settings

from gatehouse.tlog import sequencer
from gatehouse.tlog.models import LogCheckpoint
from gatehouse.webhooks import SIGNATURE_HEADER, WEBHOOK_TIMEOUT_S, sign

logger = logging.getLogger(__name__)


CATCH_UP = 1000  # checkpoints written at most per export after a gap


def write_file(checkpoint: LogCheckpoint) -> Path | None:
    """``<LOG_WITNESS_DIR>/<size>.checkpoint``, written atomically, with any checkpoint since
    the one in ``latest`` that is missing (a process that died between a pass's commit and its
    export), then ``latest`` itself."""
    if not settings.LOG_WITNESS_DIR:
        return None
    directory = Path(settings.LOG_WITNESS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    since = _latest_size(directory / "latest")
    missed = LogCheckpoint.objects.filter(size__gt=since, size__lt=checkpoint.size).order_by(
        "-size"
    )[:CATCH_UP]
    for earlier in [*missed, checkpoint]:
        _write(directory / f"{earlier.size:012d}.checkpoint", earlier.note)
    _write(directory / "latest", checkpoint.note)
    return directory / f"{checkpoint.size:012d}.checkpoint"


def _latest_size(path: Path) -> int:
    try:
        return int(path.read_text(encoding="utf-8").split("\n")[1])
    except (OSError, IndexError, ValueError):
        return 0


def _write(target: Path, text: str) -> None:
    part = target.with_name(f".{target.name}.part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, target)


_last_post = 0.0


def webhook_payload(checkpoint: LogCheckpoint) -> bytes:
    return json.dumps(
        {
            "event": "log.checkpoint",
            "size": checkpoint.size,
            "root": bytes(checkpoint.root).hex(),
            "key_id": checkpoint.key_id,
            "note": checkpoint.note,
        },
        sort_keys=True,
    ).encode()


def post_webhook(checkpoint: LogCheckpoint) -> int | None:
    """POST the checkpoint to LOG_WITNESS_WEBHOOK_URL, signed with ALERT_WEBHOOK_SECRET; the
    status code, or None when not configured or failed (logged: witnesses also poll the API)."""
    url, secret = settings.LOG_WITNESS_WEBHOOK_URL, settings.ALERT_WEBHOOK_SECRET
    if not url:
        return None
    if not secret:
        logger.error("checkpoint webhook not sent: ALERT_WEBHOOK_SECRET is empty")
        return None
    body = webhook_payload(checkpoint)
    try:
        response = httpx.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret)},
            timeout=WEBHOOK_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        logger.warning("checkpoint webhook failed: %s", type(exc).__name__)
        return None
    if not response.is_success:
        logger.warning("checkpoint webhook answered %s", response.status_code)
    return response.status_code


def _export(checkpoint: LogCheckpoint) -> None:
    global _last_post
    try:
        write_file(checkpoint)
    except OSError:
        logger.exception("checkpoint %s not written to LOG_WITNESS_DIR", checkpoint.size)
    now = time.monotonic()
    if (
        settings.LOG_WITNESS_WEBHOOK_URL
        and now - _last_post >= settings.LOG_WITNESS_WEBHOOK_INTERVAL_S
    ):
        _last_post = now
        # Off the sequencer's thread: a slow witness must not delay integration.
        threading.Thread(target=post_webhook, args=(checkpoint,), daemon=True).start()


def connect() -> None:
    if _export not in sequencer.checkpoint_listeners:
        sequencer.checkpoint_listeners.append(_export)
