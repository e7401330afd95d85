"""The live-update websocket: authenticated by the session, one group per user."""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from gatehouse.live import user_group
from gatehouse.middleware import session_expired
from gatehouse.roles import user_requires_otp

logger = logging.getLogger("gatehouse.security")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class LiveConsumer(AsyncWebsocketConsumer):
    """Relays ``live.html`` messages of the user's group to the browser (htmx ws extension)."""

    group: str | None = None

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

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The socket is server-to-browser only; htmx may send form values, which we ignore.
        return

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
