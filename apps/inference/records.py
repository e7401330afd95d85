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
from datetime import datetime, timedelta
from typing import Any

from apps.inference.models import Decision
from gatehouse.tlog import kinds, signing, tree
from gatehouse.tlog.kinds import canonical

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
            "v": 1,
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


def entries(decisions: Sequence[Decision]) -> list[tree.Entry]:
    """The log entries of unsaved decisions (their ids and times are set at construction)."""
    return [tree.Entry(str(d.id), leaf_bytes(d)) for d in decisions]


def record(decisions: list[Decision], logged: Sequence[tree.Entry] | None = None) -> list[Decision]:
    """Insert ``decisions`` and queue their leaves (``logged``: their ``entries``, when the
    caller made them already), in the caller's transaction. Inserts only: concurrent recorders
    never wait for each other here."""
    Decision.objects.bulk_create(decisions)
    tree.enqueue(KIND, entries(decisions) if logged is None else logged)
    return decisions


def promise(decision: Decision, entry: tree.Entry) -> str:
    """The log's signed promise to integrate this decision's leaf (given with the reply)."""
    return signing.sign_promise(str(decision.id), entry.leaf_hash, decision.created_at)


def forget(ids: Sequence[Any], *, when: datetime) -> None:
    """Mark the leaves of deleted decisions (a retention purge at ``when``): they stay in the
    tree, and verification checks the purge against the family's retention."""
    tree.mark_removed(KIND, [str(i) for i in ids], reason="purged", when=when)


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


def _may_remove(fields: dict[str, Any], reason: str, when: datetime | None) -> str | None:
    """A decision's row may be gone only by a retention purge after its family's retention."""
    from apps.registry.models import ModelFamily

    if reason != "purged" or when is None:
        return f"it was removed ({reason or 'no reason'}), and only a retention purge may"
    family = ModelFamily.objects.filter(pk=int(fields.get("family") or 0)).first()
    made = datetime.fromisoformat(str(fields.get("created_at")))
    if family is None or family.legal_hold:
        return "it was purged while its family is on legal hold (or gone)"
    if made > when - timedelta(days=family.retention_days):
        return "it was purged before its family's retention ended"
    return None


def register_kind() -> None:
    kinds.register(
        kinds.LeafKind(
            name=KIND,
            label="decision",
            recompute=_recompute,
            unlogged=_unlogged,
            may_remove=_may_remove,
        )
    )
