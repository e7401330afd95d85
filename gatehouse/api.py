"""The one NinjaAPI of Gatehouse, mounted at ``/api/v1/``, and its error mapping.

Every error leaves as ``{"detail", "code", "errors": [...]}``; a crash leaves as a generic 500
with the request id, never a traceback. Apps' routers are mounted by import path so that this
module never imports an app.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Router, Schema
from ninja.errors import AuthenticationError, AuthorizationError, HttpError, ValidationError
from ninja.parser import Parser

from gatehouse import selectors, services
from gatehouse.auth import API_AUTH, api_key_of
from gatehouse.errors import (
    ApplicationError,
    NotAuthenticated,
    PayloadTooLarge,
    PermissionDenied,
    ServiceUnavailable,
    server_error_body,
)
from gatehouse.otp import is_verified
from gatehouse.roles import roles_of
from gatehouse.schemas import ErrorOut

logger = logging.getLogger(__name__)


class _ObjectBodyParser(Parser):
    """Every JSON body of this API is an object (``false``, ``0`` or ``[]`` would otherwise be
    read as an empty body, so that a PUT of ``false`` reset a routing to its defaults) without
    U+0000 anywhere (PostgreSQL cannot store it: a 500 there, found by fuzzing)."""

    def parse_body(self, request: HttpRequest) -> Any:
        data = super().parse_body(request)
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        if contains_nul(data):
            # PostgreSQL cannot store U+0000 in text or jsonb: refuse it here, on every database.
            raise ValueError("the body must not contain NUL characters (\\u0000)")
        return data


def contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(v) for v in value)
    return False


api = NinjaAPI(
    parser=_ObjectBodyParser(),
    title="Gatehouse API",
    version="1",
    description="Governed inference: registry, predictions, consent and decision records.",
    auth=API_AUTH,
    urls_namespace="api",
    # Signed-in users may read the docs; in production only staff (ASVS 13.4, API9).
    docs_decorator=login_required if settings.API_DOCS_PUBLIC else staff_member_required,
)


def _error_response(request: HttpRequest, error: ApplicationError) -> HttpResponse:
    response = api.create_response(request, error.as_dict(), status=error.status_code)
    for name, value in error.headers.items():
        response[name] = value
    return response


@api.exception_handler(ApplicationError)
def _application_error(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    return _error_response(request, exc)


def _field_of(loc: list[Any]) -> str:
    # ninja locations look like ["body", "payload", "rows", 0, "age"]: drop the parameter name.
    parts = [str(p) for p in loc]
    if len(parts) > 2 and parts[0] in {"body", "query", "path", "header", "form"}:
        parts = parts[2:]
    elif len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [
        {
            "field": _field_of(list(e.get("loc", []))),
            "message": e.get("msg", "invalid"),
            "type": e.get("type", "invalid"),
        }
        for e in exc.errors
    ]
    fields = ", ".join(sorted({e["field"] for e in errors})) or "request"
    body = {"detail": f"Invalid input: {fields}.", "code": "invalid", "errors": errors}
    return api.create_response(request, body, status=422)


@api.exception_handler(AuthenticationError)
def _authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error_response(request, NotAuthenticated())


@api.exception_handler(AuthorizationError)
def _authorization_error(request: HttpRequest, exc: AuthorizationError) -> HttpResponse:
    return _error_response(request, PermissionDenied())


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 400:
        # ninja's "Cannot parse request body" (malformed JSON): invalid input like any other,
        # a documented 422 naming the body rather than an undocumented 400.
        body: dict[str, Any] = {
            "detail": "Invalid input: body.",
            "code": "invalid",
            "errors": [{"field": "body", "message": str(exc), "type": "json_invalid"}],
        }
        return api.create_response(request, body, status=422)
    body = {"detail": str(exc), "code": "http_error", "errors": []}
    return api.create_response(request, body, status=exc.status_code)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    body = {"detail": "Not found.", "code": "not_found", "errors": []}
    return api.create_response(request, body, status=404)


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return _error_response(request, PayloadTooLarge())


@api.exception_handler(DatabaseOperationalError)
@api.exception_handler(DatabaseInterfaceError)
def _database_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    """The database went away (restart, failover): a retry may succeed, so answer 503 with
    Retry-After instead of a generic 500 (an Idempotency-Key makes the retry safe)."""
    logger.warning(
        "database unavailable in API %s %s: %s", request.method, request.path, type(exc).__name__
    )
    return _error_response(
        request,
        ServiceUnavailable(
            "The database is unavailable; retry shortly (with the same Idempotency-Key).",
            code="database_unavailable",
            retry_after=5,
        ),
    )


@api.exception_handler(Exception)
def _server_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("unhandled error in API %s %s", request.method, request.path)
    body = server_error_body(getattr(request, "request_id", ""))
    return api.create_response(request, body, status=500)


# --- The platform's own endpoints ---------------------------------------------------------------


class MeOut(Schema):
    username: str
    roles: list[str]
    otp_verified: bool
    api_key: str | None
    api_key_actions: list[str] | None
    api_key_families: list[str] | None


class ApiKeyOut(Schema):
    id: int
    name: str
    prefix: str
    actions: list[str]
    families: list[str]
    status: str
    created_at: Any
    expires_at: Any
    last_used_at: Any | None


platform_router = Router(tags=["platform"])


@platform_router.get("/me", response={200: MeOut, 401: ErrorOut})
def me(request: HttpRequest) -> MeOut:
    """Who the caller is: user, roles, and the key's scope when called with a key."""
    key = api_key_of(request)
    user: Any = request.user
    return MeOut(
        username=user.get_username(),
        roles=sorted(role.value for role in roles_of(user)),
        otp_verified=key is None and is_verified(user),
        api_key=key.prefix if key else None,
        api_key_actions=key.actions if key else None,
        api_key_families=key.families if key else None,
    )


@platform_router.get("/keys", response={200: list[ApiKeyOut], 401: ErrorOut, 403: ErrorOut})
def list_keys(request: HttpRequest) -> Any:
    """The caller's own API keys (never the secrets). Keys are managed in a browser session."""
    if api_key_of(request) is not None:
        raise PermissionDenied(
            "API keys are listed in a browser session, not with a key.", code="key_scope"
        )
    return list(selectors.apikey_list(user=request.user))


@platform_router.post(
    "/keys/{key_id}/revoke", response={200: ApiKeyOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut}
)
def revoke_key(request: HttpRequest, key_id: int) -> Any:
    """Revoke one of the caller's keys; the next request made with it gets 401.

    Called with a key, only that key itself can be revoked (e.g. after it leaked).
    """
    key = api_key_of(request)
    if key is not None and key.pk != key_id:
        raise PermissionDenied("A key can revoke only itself.", code="key_scope")
    return services.apikey_revoke(key_id=key_id, by=request.user)


api.add_router("/", platform_router)
for _prefix, _router in (
    ("/registry/", "apps.registry.api.router"),
    ("/", "gatehouse.tlog.api.router"),
    ("/", "apps.inference.api.router"),
    ("/", "apps.compliance.api.router"),
):
    api.add_router(_prefix, _router)
