"""Per-process memo of values derived from database rows, checked against those rows on every use.

The hot path (predict) reads the same governance state on every request: the family, the
caller's permissions on it, its routing and its servable versions. Building that state through
the ORM costs milliseconds; reading the rows it comes from, as plain tuples in one raw
statement, costs tens of microseconds. So each value is kept with the *fingerprint* it was built
from (the raw rows), and reused only while a fresh read of those rows is identical. Any change
to a row (a save, a queryset ``update()``, a write by another process or by hand) changes the
fingerprint, so nothing is served stale: there is no TTL and no invalidation signal to miss.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from django.db import connection

T = TypeVar("T")
Fingerprint = tuple[Any, ...]


def fingerprint(sql: str, params: Sequence[Any]) -> Fingerprint:
    """The rows of ``sql`` as a tuple of tuples, in the order the statement gives them."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return tuple(tuple(row) for row in cursor.fetchall())


class FreshMemo(Generic[T]):
    """``key -> (fingerprint, value)``; a value is returned only for an identical fingerprint.

    Values are shared by the threads of a process: callers must treat them as read-only.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: dict[Any, tuple[Fingerprint, T]] = {}
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, key: Any, read: Callable[[], Fingerprint], build: Callable[[], T]) -> T:
        """The value for ``key``: the memo when ``read()`` is unchanged, else ``build()``.

        A built value is kept only when the fingerprint read before and after building it is
        the same, so a value is never filed under rows older than the ones it was built from.
        None (nothing found) is never kept, so that unknown keys cannot fill the memo.
        """
        current = read()
        entry = self._entries.get(key)
        if entry is not None and entry[0] == current:
            return entry[1]
        value = build()
        if value is not None and read() == current:
            with self._lock:
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[key] = (current, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
