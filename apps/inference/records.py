"""Decision records as leaves of the transparency log (gatehouse/tlog).

A decision's leaf covers its non-personal fields and the salted digest of its personal payload
(who, what went in, what came out), so that erasing the payload and its salt leaves the tree
valid and the digest unlinkable. Recording inserts the decisions and their leaves in the
caller's transaction, and nothing else: the sequencer numbers them later.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from apps.inference.models import Decision
from gatehouse.tlog import kinds, signing, tree
from gatehouse.tlog.kinds import canonical
from gatehouse.tlog.verify import leaf_hash

KIND = "decision"


def new_salt() -> str:
    return secrets.token_hex(16)


def payload_digest(
    salt: str, *, subject_pseudonym: str, inputs: Any, label: str, scores: Any
) -> str:
    """The salted digest of a record's personal payload: who (pseudonym), what was put in and
    what came out. Only this digest enters the log, so the payload can be erased."""
    payload = {"subject": subject_pseudonym, "inputs": inputs, "label": label, "scores": scores}
    return hashlib.sha256(bytes.fromhex(salt) + canonical(payload)).hexdigest()


def leaf_bytes(d: Any) -> bytes:
    """The canonical leaf of a decision (also what a receipt carries and the verifier hashes)."""
    return canonical(
        {
            "kind": KIND,
            "id": str(d.id),
            "created_at": d.created_at.isoformat(),
            "request_id": d.request_id,
            "family": d.family_id,
            "version": d.version_id,
            "version_label": d.version_label,
            "artifact_sha256": d.artifact_sha256,
            "route": d.route,
            "actor_user": d.actor_user_id,
            "api_key": d.api_key_id,
            "purpose": d.purpose,
            "jurisdiction": d.jurisdiction,
            "policy_ref": d.policy_ref,
            "row_index": d.row_index,
            "latency_ms": round(d.latency_ms, 3),
            "payload_digest": d.payload_digest,
        }
    )


def record(decisions: list[Decision]) -> list[Decision]:
    """Insert ``decisions`` and queue their leaves, in the caller's transaction (inserts only:
    concurrent recorders never wait for each other here)."""
    Decision.objects.bulk_create(decisions)
    tree.enqueue(KIND, [tree.Entry(str(d.id), leaf_hash(leaf_bytes(d))) for d in decisions])
    return decisions


def promise(decision: Decision) -> tuple[bytes, str]:
    """The decision's leaf hash and the log's signed promise to integrate it (given with the
    reply, and again with the receipt)."""
    h = leaf_hash(leaf_bytes(decision))
    return h, signing.sign_promise(str(decision.id), h, decision.created_at)


def forget(ids: Sequence[Any]) -> None:
    """Mark the leaves of deleted decisions (a retention purge): their hashes stay in the tree."""
    tree.mark_removed(KIND, [str(i) for i in ids], reason="purged")


def payload_intact(d: Decision) -> bool:
    if d.erased_at is not None:
        # An erased record must really be empty: salt, subject, inputs and outputs gone.
        return not (d.payload_salt or d.subject_pseudonym or d.inputs or d.label or d.scores)
    return bool(d.payload_salt) and d.payload_digest == payload_digest(
        d.payload_salt,
        subject_pseudonym=d.subject_pseudonym,
        inputs=d.inputs,
        label=d.label,
        scores=d.scores,
    )


def _recompute(refs: Sequence[str], salts: Mapping[str, str]) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for d in Decision.objects.filter(pk__in=refs):
        out[str(d.id)] = leaf_bytes(d) if payload_intact(d) else "its payload was edited"
    return out


def _unlogged(logged: set[str]) -> Iterable[str]:
    for pk in Decision.objects.values_list("pk", flat=True).iterator(5000):
        if str(pk) not in logged:
            yield str(pk)


def register_kind() -> None:
    kinds.register(
        kinds.LeafKind(name=KIND, label="decision", recompute=_recompute, unlogged=_unlogged)
    )
