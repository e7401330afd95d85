"""Platform middleware: request ids, NUL refusal, session timeouts and second-factor enforcement."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect

from gatehouse.errors import OTPRequired
from gatehouse.logging import request_id_var
from gatehouse.otp import has_confirmed_device, otp_pending

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

Handler = Callable[[HttpRequest], HttpResponse]


class RequestIDMiddleware:
    """Gives every request an id (a safe incoming ``X-Request-ID`` is kept) and echoes it."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


class NulCharacterMiddleware:
    """Refuses a path or query string holding U+0000 (``%00``) before any view reads it:
    PostgreSQL cannot store or even compare such a string, so it would surface as a 500.
    The API answers 422 naming ``path`` or ``query``; pages answer 400."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        field = ""
        if "\x00" in request.path:
            field = "path"
        elif any("\x00" in k or "\x00" in v for k, vs in request.GET.lists() for v in vs):
            field = "query"
        if not field:
            return self.get_response(request)
        message = "must not contain NUL characters (%00)"
        if request.path.startswith("/api/"):
            return JsonResponse(
                {
                    "detail": f"Invalid input: {field}.",
                    "code": "invalid",
                    "errors": [{"field": field, "message": message, "type": "invalid"}],
                },
                status=422,
            )
        return HttpResponse(
            f"Bad request: the {field} {message}.", status=400, content_type="text/plain"
        )


AUTH_TIME_KEY = "_gatehouse_auth_at"
LAST_SEEN_KEY = "_gatehouse_last_seen"


def session_expired(session: Any, now: int | None = None) -> bool:
    """Whether a session is past its idle or absolute timeout (HTTP and websockets alike)."""
    now = now or int(time.time())
    auth_at = int(session.get(AUTH_TIME_KEY, now))
    last_seen = int(session.get(LAST_SEEN_KEY, now))
    return (
        now - auth_at > settings.SESSION_COOKIE_AGE
        or now - last_seen > settings.SESSION_IDLE_TIMEOUT_S
    )


class SessionTimeoutMiddleware:
    """Ends sessions idle for ``SESSION_IDLE_TIMEOUT_S`` or older than ``SESSION_COOKIE_AGE``."""

    touch_every_s = 60

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated and hasattr(request, "session"):
            now = int(time.time())
            if session_expired(request.session, now):
                logout(request)
            else:
                last_seen = int(request.session.get(LAST_SEEN_KEY, 0))
                request.session.setdefault(AUTH_TIME_KEY, now)
                if now - last_seen >= self.touch_every_s or LAST_SEEN_KEY not in request.session:
                    request.session[LAST_SEEN_KEY] = now
        return self.get_response(request)


# Paths a user who still owes a second factor may reach: to provide it, or to leave.
_OTP_EXEMPT_URL_NAMES = {"login", "logout", "otp_verify", "otp_setup", "health"}
_OTP_EXEMPT_PREFIXES = ("/static/",)


class OTPEnforcementMiddleware:
    """Approvers, compliance officers and admins use nothing until their session is verified.

    API-key requests carry no session user at this point and are checked by the API's auth.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if otp_pending(request) and not self._exempt(request):
            user = request.user
            if request.path.startswith("/api/"):
                error = OTPRequired()
                return JsonResponse(error.as_dict(), status=error.status_code)
            target = "otp_verify" if has_confirmed_device(user) else "otp_setup"
            response = redirect(target)
            if getattr(request, "htmx", False):
                response["HX-Redirect"] = response["Location"]
            return response
        return self.get_response(request)

    @staticmethod
    def _exempt(request: HttpRequest) -> bool:
        if request.path.startswith(_OTP_EXEMPT_PREFIXES):
            return True
        match = request.resolver_match
        if match is None:
            from django.urls import Resolver404, resolve

            try:
                match = resolve(request.path_info)
            except Resolver404:
                return False
        return match.url_name in _OTP_EXEMPT_URL_NAMES
