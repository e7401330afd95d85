"""Per-caller request limits on the API: fixed windows, counted atomically across processes.

Every authenticated API request counts against ``RATE_LIMIT_API``, and predictions (online and
batch submissions) also against ``RATE_LIMIT_PREDICT``, per API key or, in a browser session,
per user. A request over a limit gets 429 ``rate_limited`` with ``Retry-After``.

The counters live in the database (embedded default: one atomic ``INSERT ... ON CONFLICT DO
UPDATE ... RETURNING`` on ``gatehouse_ratelimitcounter``, SQLite >= 3.35 and PostgreSQL) or in
Redis (``RATE_LIMIT_STORAGE=redis``, the default with ``REDIS_URL``: a Lua script doing INCR and
EXPIRE). Either way one statement (or one round trip) per request counts every scope at once,
and two clients can never both read the same count, so no more than ``limit`` requests are
admitted per window whatever the number of processes.

Written here rather than with ``limits`` (5.8): its storages are memory, Redis, Memcached,
MongoDB and etcd, none of which the embedded default has (a per-process memory store would admit
``limit`` per process). django-ninja's throttles keep a timestamp list in the cache with
``get``/``set``, which over-admits under concurrency, and the database cache's ``incr`` is a
read-then-write as well.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest

from gatehouse.errors import RateLimited

security_log = logging.getLogger("gatehouse.security")

# Operations that count as predictions (ninja's URL names under the "api" namespace); a test
# checks that they still resolve.
PREDICT_ROUTES = frozenset({"api:predict", "api:batch_submit"})

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Rate:
    """``limit`` requests per ``period`` seconds."""

    limit: int
    period: int


@lru_cache(maxsize=64)
def parse_rate(value: str | None) -> Rate | None:
    """``"600/60"`` -> Rate(600, 60); ``"0"``, ``""`` or a zero limit -> None (no limit)."""
    text = (value or "").strip()
    if text in {"", "0"}:
        return None
    match = _RATE.match(text)
    if not match or int(match.group(2)) <= 0:
        raise ImproperlyConfigured(
            f"A rate limit is '<requests>/<seconds>' (e.g. 600/60) or 0, got {value!r}"
        )
    limit = int(match.group(1))
    return Rate(limit, int(match.group(2))) if limit > 0 else None


@dataclass(frozen=True)
class Count:
    """One scope's count after this request, in the window that started at ``window_start``."""

    scope: str
    rate: Rate
    window_start: int
    hits: int

    @property
    def exceeded(self) -> bool:
        return self.hits > self.rate.limit

    def retry_after(self, now: float) -> int:
        """Whole seconds until the window ends (at least 1)."""
        return max(1, math.ceil(self.window_start + self.rate.period - now))


def scopes_for(request: HttpRequest) -> list[tuple[str, Rate]]:
    """The limits that apply to ``request``: ``api`` always, ``predict`` on predictions."""
    scopes: list[tuple[str, Rate]] = []
    api = parse_rate(settings.RATE_LIMIT_API)
    if api is not None:
        scopes.append(("api", api))
    if request.method == "POST":
        match = getattr(request, "resolver_match", None)
        predict = parse_rate(settings.RATE_LIMIT_PREDICT)
        if predict is not None and match is not None and match.view_name in PREDICT_ROUTES:
            scopes.append(("predict", predict))
    return scopes


def hit(
    subject: str, scopes: Sequence[tuple[str, Rate]], *, now: float | None = None
) -> list[Count]:
    """Count one request of ``subject`` (e.g. ``key:12``, ``user:7``) in every scope, atomically,
    and return the counts after it. Nothing is counted for an empty ``scopes``."""
    if not scopes:
        return []
    now = time.time() if now is None else now
    windows = [
        (f"{scope}:{subject}", int(now // rate.period) * rate.period) for scope, rate in scopes
    ]
    storage = settings.RATE_LIMIT_STORAGE
    if storage == "redis":
        hits = _hit_redis(windows, [rate.period for _, rate in scopes], now)
        if hits is None:  # Redis unreachable: serve rather than refuse everyone
            return []
    elif storage == "database":
        hits = _hit_database(windows)
    else:
        raise ImproperlyConfigured(
            f"RATE_LIMIT_STORAGE must be 'database' or 'redis', got {storage!r}"
        )
    return [
        Count(scope, rate, start, hits[bucket])
        for (scope, rate), (bucket, start) in zip(scopes, windows, strict=True)
    ]


def enforce(request: HttpRequest, *, subject: str) -> None:
    """Count ``request`` for ``subject`` and raise RateLimited (429, Retry-After) over a limit.

    Called by the API's authentication once the caller is known (``gatehouse.auth``).
    """
    scopes = scopes_for(request)
    if not scopes:
        return
    now = time.time()
    over = [c for c in hit(subject, scopes, now=now) if c.exceeded]
    if not over:
        return
    retry_after = max(c.retry_after(now) for c in over)
    first = over[0]
    if any(c.hits == c.rate.limit + 1 for c in over):  # log once per window, not per refusal
        security_log.warning(
            "rate limited subject=%s scope=%s limit=%d/%ds path=%s",
            subject,
            first.scope,
            first.rate.limit,
            first.rate.period,
            request.path,
        )
    raise RateLimited(
        f"Rate limit exceeded: at most {first.rate.limit} {first.scope} requests per "
        f"{first.rate.period} s. Retry after {retry_after} s.",
        retry_after=retry_after,
    )


# --- Database storage ----------------------------------------------------------------------------


def _hit_database(windows: Sequence[tuple[str, int]]) -> dict[str, int]:
    """One upsert for every bucket: a new window resets the row to 1, the same window adds 1.

    The right-hand sides of SET see the row as it was (SQL standard; SQLite and PostgreSQL
    agree), and the statement holds the row's write lock, so concurrent requests serialise on it.
    """
    from gatehouse.models import RateLimitCounter

    connection = connections[DEFAULT_DB_ALIAS]
    q = connection.ops.quote_name
    table = q(RateLimitCounter._meta.db_table)
    values = ", ".join(["(%s, %s, 1)"] * len(windows))
    sql = (
        f"INSERT INTO {table} (bucket, window_start, hits) VALUES {values} "  # noqa: S608
        f"ON CONFLICT (bucket) DO UPDATE SET "
        f"hits = CASE WHEN {table}.window_start = excluded.window_start "
        f"THEN {table}.hits + 1 ELSE 1 END, "
        f"window_start = excluded.window_start "
        f"RETURNING bucket, hits"
    )
    params: list[Any] = [v for window in windows for v in window]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {str(bucket): int(hits) for bucket, hits in cursor.fetchall()}


# --- Redis storage -------------------------------------------------------------------------------

# KEYS: one counter per bucket and window; ARGV: each key's expiry in seconds.
_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, ARGV[i]) end
  out[i] = n
end
return out
"""
REDIS_PREFIX = "gatehouse:ratelimit:"
REDIS_TIMEOUT_S = 1.0
REDIS_BACKOFF_S = 5.0

_redis_lock = threading.Lock()
_redis: dict[str, Any] = {}  # url -> registered script (its client inside)
_redis_down_until = 0.0


def _script(url: str) -> Any:
    with _redis_lock:
        script = _redis.get(url)
        if script is None:
            import redis

            client = redis.Redis.from_url(
                url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
            )
            script = _redis[url] = client.register_script(_LUA)
        return script


def _hit_redis(
    windows: Sequence[tuple[str, int]], periods: Sequence[int], now: float
) -> dict[str, int] | None:
    """INCR every bucket's counter for its window in one script (atomic in Redis); None while
    Redis cannot be reached (then limits are not enforced for REDIS_BACKOFF_S)."""
    global _redis_down_until
    import redis

    if now < _redis_down_until:
        return None
    # The subject in braces keeps a request's keys in one Redis Cluster slot.
    keys = []
    for bucket, start in windows:
        scope, _, subject = bucket.partition(":")
        keys.append(f"{REDIS_PREFIX}{{{subject}}}:{scope}:{start}")
    try:
        result = _script(settings.REDIS_URL)(keys=keys, args=[p + 1 for p in periods])
    except redis.RedisError as exc:
        _redis_down_until = now + REDIS_BACKOFF_S
        security_log.warning("rate limits not enforced: Redis unreachable (%s)", type(exc).__name__)
        return None
    return {bucket: int(n) for (bucket, _), n in zip(windows, result, strict=True)}
