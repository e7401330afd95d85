"""Security logging for authentication events (never the secret itself)."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.http import HttpRequest

from gatehouse.logging import log_safe

security_log = logging.getLogger("gatehouse.security")


def _on_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    from gatehouse.middleware import AUTH_TIME_KEY, LAST_SEEN_KEY

    if request is not None and hasattr(request, "session"):
        now = int(time.time())
        request.session[AUTH_TIME_KEY] = now
        request.session[LAST_SEEN_KEY] = now
    security_log.info("login succeeded user_id=%s", user.pk)


def _on_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    security_log.warning(
        "login failed username=%s", log_safe(credentials.get("username", ""), limit=64)
    )
    if request is not None:
        from gatehouse.auth import auth_failure_record

        auth_failure_record(address=request.META.get("REMOTE_ADDR", ""))


def _on_user_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    # Wherever a user is deactivated (admin, service, shell), their open sockets close.
    if not created and not instance.is_active:
        from gatehouse.live import close_user_sockets

        close_user_sockets(instance.pk, reason="deactivated")


def connect() -> None:
    from django.contrib.auth import get_user_model
    from django.db.models.signals import post_save

    post_save.connect(_on_user_saved, sender=get_user_model(), dispatch_uid="gatehouse.user_saved")
    user_logged_in.connect(_on_login, dispatch_uid="gatehouse.login")
    user_login_failed.connect(_on_login_failed, dispatch_uid="gatehouse.login_failed")
