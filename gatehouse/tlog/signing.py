"""The log's signing key (``LOG_SIGNING_KEY``) and what it signs: checkpoints and promises."""

from __future__ import annotations

from datetime import datetime
from functools import cache

from django.conf import settings

from gatehouse.tlog.verify import Checkpoint, Promise, SignerKey, VerifierKey


@cache
def signer() -> SignerKey:
    return SignerKey.parse(settings.LOG_SIGNING_KEY)


def origin() -> str:
    """The log's origin line; it is also the signing key's name."""
    return signer().name


@cache
def verifier_keys() -> tuple[VerifierKey, ...]:
    """The current public key first, then earlier ones (``LOG_PREVIOUS_PUBLIC_KEYS``), so that
    checkpoints signed before a rotation keep verifying."""
    previous = tuple(VerifierKey.parse(text) for text in settings.LOG_PREVIOUS_PUBLIC_KEYS)
    return (signer().verifier, *previous)


def sign_checkpoint(size: int, root: bytes) -> str:
    return signer().sign_note(Checkpoint(origin(), size, root).body())


def promise_time(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def sign_promise(record_id: str, leaf_hash: bytes, moment: datetime) -> str:
    """A signed promise to integrate the leaf (Ed25519 is deterministic: the same promise is
    given again for the same record, as long as the key is the same)."""
    return signer().sign_note(Promise(origin(), record_id, leaf_hash, promise_time(moment)).body())
