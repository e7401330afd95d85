"""Live updates: the one way services and tasks push server-rendered HTML to browsers.

Messages go to per-user groups (``user.<id>``), never to a global group, so a user only
receives what was rendered for them. Sending happens after the transaction commits.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def _send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:
        # A live update is a convenience; the state it announces is already committed.
        logger.warning("live update to %s could not be sent", group, exc_info=True)


def push_html(user_id: int, html: str, *, event: str = "update") -> None:
    """Send an htmx out-of-band fragment to every open socket of ``user_id`` after commit."""
    message = {"type": "live.html", "event": event, "html": html}
    transaction.on_commit(lambda: _send(user_group(user_id), message))


def close_user_sockets(user_id: int, *, reason: str = "access revoked") -> None:
    """Close the websockets of a user whose access ended (deactivation, revocation)."""
    message = {"type": "live.close", "reason": reason}
    transaction.on_commit(lambda: _send(user_group(user_id), message))


def topic_group(name: str) -> str:
    return f"topic.{name}"


def publish_topic(name: str) -> None:
    """Ask every socket subscribed to topic ``name`` to render it again for its own user
    (see ``gatehouse.extensions.LiveTopic``); sent now, not after a transaction."""
    _send(topic_group(name), {"type": "topic.publish", "topic": name})
