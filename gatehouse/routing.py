"""Websocket routes of the platform, and the Origin check in front of them."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import ParseResult

from channels.security.websocket import OriginValidator
from django.conf import settings
from django.urls import path

from gatehouse.consumers import LiveConsumer
from gatehouse.logging import log_safe

security_log = logging.getLogger("gatehouse.security")

websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi(), name="ws_live"),  # type: ignore[arg-type]
]


class LoggedOriginValidator(OriginValidator):
    """Channels' Origin check (only ALLOWED_HOSTS), logging each refused handshake."""

    def valid_origin(self, parsed_origin: ParseResult | None) -> bool:
        valid = bool(super().valid_origin(parsed_origin))
        if not valid:
            origin = parsed_origin.geturl() if parsed_origin is not None else "(none)"
            security_log.warning("websocket refused: foreign origin %s", log_safe(origin))
        return valid


def origin_checked(application: Any) -> LoggedOriginValidator:
    allowed = list(settings.ALLOWED_HOSTS) or ["localhost", "127.0.0.1", "[::1]"]
    return LoggedOriginValidator(application, allowed)
