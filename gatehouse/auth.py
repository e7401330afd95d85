"""Authentication for the REST API (API keys or the browser session) and caller checks.

API keys travel in ``Authorization: Bearer <key>`` only; a key in the query string is refused
so that it cannot leak into logs and browser history. Keys are looked up by their SHA-256.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import secrets
import time
from datetime import timedelta
from typing import Any

from auditlog.context import auditlog_value
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS
from django.db.models import Model
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer, SessionAuth

from gatehouse.errors import NotAuthenticated, OTPRequired, PermissionDenied
from gatehouse.freshness import Fingerprint, FreshMemo, fingerprint
from gatehouse.models import ApiKey
from gatehouse.otp import is_verified
from gatehouse.ratelimit import enforce as enforce_rate_limits
from gatehouse.roles import user_requires_otp

security_log = logging.getLogger("gatehouse.security")

KEY_PREFIX = "gh_"
_QUERY_KEY_NAMES = ("api_key", "apikey", "key", "token", "access_token")
LAST_USED_RESOLUTION = timedelta(seconds=60)


def generate_key() -> str:
    """A new key: ``gh_`` and 43 URL-safe characters (256 bits of entropy)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def display_prefix(raw: str) -> str:
    return raw[: len(KEY_PREFIX) + 6]


def _field_values(instance: Model) -> list[Any]:
    return [getattr(instance, f.attname) for f in instance._meta.concrete_fields]


# key hash -> the field values of the key and of its owner, as the ORM loaded them.
_keys: FreshMemo[tuple[list[Any], list[Any]] | None] = FreshMemo()


def _key_rows(key_hash: str) -> Fingerprint:
    """The key's row and its owner's row, every column: revoking the key, changing its expiry
    or scope, deactivating the owner or changing their password changes the fingerprint."""
    user_model = get_user_model()
    return fingerprint(
        f"SELECT k.*, u.* FROM {ApiKey._meta.db_table} k "  # noqa: S608 (table names only)
        f"JOIN {user_model._meta.db_table} u ON u.{user_model._meta.pk.column} = k.user_id "
        "WHERE k.key_hash = %s",
        [key_hash],
    )


def _load_key(key_hash: str) -> ApiKey | None:
    """The key with its owner: fresh instances on every call, built from field values that the
    ORM loaded once per process and that are reused while the rows are unchanged (one raw,
    indexed read per request; see ``gatehouse.freshness``)."""

    def build() -> tuple[list[Any], list[Any]] | None:
        key = ApiKey.objects.select_related("user").filter(key_hash=key_hash).first()
        return None if key is None else (_field_values(key), _field_values(key.user))

    found = _keys.get(key_hash, lambda: _key_rows(key_hash), build)
    if found is None:
        return None
    key_values, user_values = copy.deepcopy(found)  # nothing is shared between requests
    key = ApiKey.from_db(DEFAULT_DB_ALIAS, None, key_values)  # type: ignore[arg-type]
    key.user = get_user_model().from_db(DEFAULT_DB_ALIAS, None, user_values)  # type: ignore[arg-type]
    return key


def key_from_raw(raw: str) -> ApiKey | None:
    """The usable key for ``raw``, or None (unknown, revoked, expired, owner inactive)."""
    if not raw.startswith(KEY_PREFIX) or len(raw) > 128:
        return None
    key = _load_key(hash_key(raw))
    now = timezone.now()
    if key is None or not key.is_usable(now):
        security_log.warning(
            "api key refused prefix=%s reason=%s",
            display_prefix(raw),
            "unknown" if key is None else key.status if key.user.is_active else "owner_inactive",
        )
        return None
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


# --- Repeated authentication failures ---------------------------------------------------------
# A sliding window of AUTH_FAILURE_WINDOW_S in AUTH_FAILURE_SLOTS cache counters per key prefix
# and per client address: a few cache operations per failure, nothing per success.
AUTH_FAILURE_SLOTS = 10
_FAILURE_CACHE_PREFIX = "gh:authfail"


def _failure_count(ident: str, now: float) -> int:
    """Add one failure for ``ident`` and return the failures within the window."""
    window = max(1, settings.AUTH_FAILURE_WINDOW_S)
    slot_s = window / AUTH_FAILURE_SLOTS
    current = int(now // slot_s)
    key = f"{_FAILURE_CACHE_PREFIX}:{ident}:{current}"
    cache.add(key, 0, timeout=int(window + slot_s) + 1)
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=int(window + slot_s) + 1)
    keys = [f"{_FAILURE_CACHE_PREFIX}:{ident}:{current - i}" for i in range(AUTH_FAILURE_SLOTS)]
    return sum(int(v) for v in cache.get_many(keys).values())


def auth_failure_record(*, prefix: str = "", address: str = "", now: float | None = None) -> int:
    """``_auth_failure_record``, but never failing the request it observes: with the cache
    (Redis) down a bad key is still a 401, not a 500; the failure is only not counted."""
    try:
        return _auth_failure_record(prefix=prefix, address=address, now=now)
    except Exception:
        security_log.warning(
            "authentication failure not counted (cache unavailable)", exc_info=True
        )
        return 0


def _auth_failure_record(*, prefix: str = "", address: str = "", now: float | None = None) -> int:
    """Count one failed authentication (bad API key, failed login) against the key prefix and
    the client address; a count that reaches AUTH_FAILURE_ALERT_COUNT within
    AUTH_FAILURE_WINDOW_S raises an ``auth_failures`` alert at once (once while unacknowledged).

    The alert names the key prefix (not personal data) or a keyed pseudonym of the address; the
    security log links that pseudonym to the address. Returns the number of alerts raised.
    """
    from gatehouse.pseudonyms import pseudonymise
    from gatehouse.services import alert_raise_once

    now = time.time() if now is None else now
    threshold = settings.AUTH_FAILURE_ALERT_COUNT
    raised = 0
    targets = []
    if prefix:
        targets.append(("key", prefix, f"key:{prefix}", f"API key prefix {prefix}"))
    if address:
        ref = pseudonymise(f"address:{address}")[:16]
        targets.append(("address", ref, f"address:{ref}", f"client address {ref} (pseudonym)"))
    for what, ident, subject, label in targets:
        count = _failure_count(f"{what}:{hashlib.sha256(ident.encode()).hexdigest()[:24]}", now)
        if threshold <= 0 or count < threshold:
            continue
        alerted_key = f"{_FAILURE_CACHE_PREFIX}:alerted:{subject}"
        if cache.get(alerted_key):
            continue  # raised (or known to be open) within this window already
        cache.set(alerted_key, 1, timeout=settings.AUTH_FAILURE_WINDOW_S)
        if what == "address":
            security_log.warning(
                "auth failures over threshold address=%s pseudonym=%s", address, ident
            )
        alert = alert_raise_once(
            kind="auth_failures",
            severity="warning",
            title=f"{count} authentication failures from {label}",
            detail=f"At least {threshold} failed authentications (bad API key or failed login) "
            f"within {settings.AUTH_FAILURE_WINDOW_S} s.",
            subject=subject,
        )
        raised += alert is not None
    return raised


class ApiKeyAuth(HttpBearer):
    """``Authorization: Bearer gh_...``; sets ``request.user`` and ``request.auth`` to the key."""

    openapi_description = "API key created under 'API keys' or with `manage.py create_api_key`."

    def __call__(self, request: HttpRequest) -> Any:
        if any(name in request.GET for name in _QUERY_KEY_NAMES):
            security_log.warning("api key refused: sent in the query string")
            raise NotAuthenticated(
                "API keys are accepted only in the Authorization header.", code="key_in_query"
            )
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        key = key_from_raw(token)
        if key is None:
            auth_failure_record(
                # Only a well-formed key's display prefix: any other token may be a secret.
                prefix=display_prefix(token) if token.startswith(KEY_PREFIX) else "",
                address=request.META.get("REMOTE_ADDR", ""),
            )
            return None
        request.user = key.user
        context = auditlog_value.get(None)
        if isinstance(context, dict):
            context["actor"] = key.user  # audit entries name the key's owner
        enforce_rate_limits(request, subject=f"key:{key.pk}")
        return key


class VerifiedSessionAuth(SessionAuth):
    """The browser session (with CSRF); 2FA roles must have verified their session."""

    def __call__(self, request: HttpRequest) -> Any:
        # A request that brings an API key is judged by the key alone: a bad key is a 401,
        # not a fall-through to the session (and its CSRF check).
        if request.META.get("HTTP_AUTHORIZATION"):
            return None
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = super().authenticate(request, key)
        if user and user_requires_otp(user) and not is_verified(request.user):
            raise OTPRequired()
        if user:
            enforce_rate_limits(request, subject=f"user:{user.pk}")
        return user


api_key_auth = ApiKeyAuth()
session_auth = VerifiedSessionAuth()
API_AUTH = [api_key_auth, session_auth]


def api_key_of(request: HttpRequest) -> ApiKey | None:
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, ApiKey) else None


def require_key_scope(request: HttpRequest, *, action: str, family: str | None = None) -> None:
    """A request made with a key needs the key to allow ``action`` (on ``family``)."""
    key = api_key_of(request)
    if key is not None and not key.allows(action, family):
        raise PermissionDenied(
            f"This API key does not allow '{action}'" + (f" on '{family}'." if family else "."),
            code="key_scope",
        )


def require_verified_session(request: HttpRequest) -> None:
    """Actions of 2FA roles (approve, erase, export) need a verified browser session, not a key."""
    if api_key_of(request) is not None or not is_verified(request.user):
        raise OTPRequired()
