"""The live-update websocket: authenticated by the session, one group per user."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from gatehouse import extensions
from gatehouse.live import topic_group, user_group
from gatehouse.middleware import session_expired
from gatehouse.roles import roles_of, user_requires_otp

logger = logging.getLogger("gatehouse.security")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class LiveConsumer(AsyncWebsocketConsumer):
    """Relays ``live.html`` messages of the user's group to the browser (htmx ws extension)."""

    group: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.topics: set[str] = set()
        self.rendered_at: dict[str, float] = {}
        self.deferred: set[str] = set()
        self.tasks: set[asyncio.Future[None]] = set()

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            logger.info("websocket refused: not authenticated")
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await database_sync_to_async(_session_allows)(user, self.scope.get("session")):
            logger.info("websocket refused: second factor missing user_id=%s", user.pk)
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.group = user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        for name in self.topics:
            await self.channel_layer.group_discard(topic_group(name), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The only message a browser sends: ``{"subscribe": "<topic>"}`` (htmx ``ws-send``
        with ``hx-vals``), which joins a registered live topic the user's roles allow and
        renders it at once. Anything else is ignored."""
        try:
            data = json.loads(text_data or "")
        except ValueError:
            return
        name = data.get("subscribe") if isinstance(data, dict) else None
        topic = extensions.live_topic(name) if isinstance(name, str) else None
        user = self.scope["user"]
        if topic is None or not (roles_of(user) & topic.roles) or name in self.topics:
            return
        self.topics.add(topic.name)
        await self.channel_layer.group_add(topic_group(topic.name), self.channel_name)
        await self._render(topic.name)

    async def topic_publish(self, message: dict[str, Any]) -> None:
        await self._render(message["topic"])

    async def _render(self, name: str) -> None:
        """Render a topic for this socket's user, at most every 0.5 s (bursts coalesce)."""
        topic = extensions.live_topic(name)
        if topic is None:
            return
        now = time.monotonic()
        if now - self.rendered_at.get(name, 0.0) < 0.5:
            if name not in self.deferred:
                self.deferred.add(name)
                asyncio.get_running_loop().call_later(0.5, self._render_later, name)
            return
        self.rendered_at[name] = now
        html = await database_sync_to_async(topic.render)(self.scope["user"])
        if html:
            await self.send(text_data=html)

    def _render_later(self, name: str) -> None:
        self.deferred.discard(name)
        task = asyncio.ensure_future(self._render(name))
        self.tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self.tasks.discard)

    async def live_html(self, message: dict[str, Any]) -> None:
        await self.send(text_data=message["html"])

    async def live_close(self, message: dict[str, Any]) -> None:
        await self.close(code=CLOSE_FORBIDDEN)


def _session_allows(user: Any, session: Any) -> bool:
    """The socket needs a live session: active user, within timeouts, 2FA where required."""
    if not user.is_active or session is None or session_expired(session):
        return False
    if not user_requires_otp(user):
        return True
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.models import Device

    persistent_id = session.get(DEVICE_ID_SESSION_KEY)
    if not persistent_id:
        return False
    device = Device.from_persistent_id(persistent_id)
    return device is not None and device.user_id == user.pk and device.confirmed
