"""Keyed-HMAC pseudonyms of data subjects: the only form in which subjects appear in records.

The key (``PSEUDONYM_KEY``) is a secret setting, never stored with the data; without it a
pseudonym cannot be linked back to a reference, and with it erased it cannot be recomputed.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
from collections.abc import Iterable

from django.conf import settings

DIGEST_BYTES = 8  # lineage membership digests: 64 bits, compact and collision-safe enough


def pseudonymise(reference: str) -> str:
    """The pseudonym (hex HMAC-SHA256) of an external data-subject reference."""
    key = settings.PSEUDONYM_KEY.encode("utf-8")
    return hmac.new(key, reference.strip().encode("utf-8"), hashlib.sha256).hexdigest()


def lineage_digest(pseudonym: str) -> bytes:
    return bytes.fromhex(pseudonym)[:DIGEST_BYTES]


def pack_lineage(pseudonyms: Iterable[str]) -> bytes:
    """A sorted, de-duplicated concatenation of the subjects' 8-byte digests."""
    return b"".join(sorted({lineage_digest(p) for p in pseudonyms}))


def lineage_contains(packed: bytes, pseudonym: str) -> bool:
    digests = [packed[i : i + DIGEST_BYTES] for i in range(0, len(packed), DIGEST_BYTES)]
    target = lineage_digest(pseudonym)
    index = bisect.bisect_left(digests, target)
    return index < len(digests) and digests[index] == target


def lineage_remove(packed: bytes, pseudonym: str) -> bytes:
    target = lineage_digest(pseudonym)
    return b"".join(
        packed[i : i + DIGEST_BYTES]
        for i in range(0, len(packed), DIGEST_BYTES)
        if packed[i : i + DIGEST_BYTES] != target
    )
