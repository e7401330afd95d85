"""The tamper-evident decision chain: append in order under a lock, verify from the start."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from apps.inference.models import ChainHead, ChainStart, Decision

GENESIS = "0" * 64


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def new_salt() -> str:
    return secrets.token_hex(16)


def payload_digest(
    salt: str, *, subject_pseudonym: str, inputs: Any, label: str, scores: Any
) -> str:
    """The salted digest of a record's personal payload: who (pseudonym), what was put in and
    what came out. Only this digest enters the chain, so the payload can be erased."""
    payload = {"subject": subject_pseudonym, "inputs": inputs, "label": label, "scores": scores}
    return hashlib.sha256(bytes.fromhex(salt) + _canonical(payload)).hexdigest()


def content_hash(d: Decision) -> str:
    fields = {
        "id": str(d.id),
        "seq": d.seq,
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
        "row_index": d.row_index,
        "latency_ms": round(d.latency_ms, 3),
        "payload_digest": d.payload_digest,
    }
    if d.policy_ref:  # only when set, so records made before the field hash as they did
        fields["policy_ref"] = d.policy_ref
    return hashlib.sha256(_canonical(fields)).hexdigest()


def link(prev_hash: str, content: str) -> str:
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


def append(decisions: list[Decision]) -> list[Decision]:
    """Number, hash and insert ``decisions`` after the current head. Call inside a transaction:
    the head row is locked until commit, so concurrent writers append one after the other."""
    if connection.get_autocommit():
        raise TransactionManagementError("chain.append needs a transaction (the head's lock).")
    # The head is read and written with two plain statements: this runs on every prediction,
    # and the ORM's get_or_create/save cost more than the rest of the append together.
    table = ChainHead._meta.db_table
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT seq, chain_hash FROM {table} WHERE id = 1{lock}")  # noqa: S608
        row = cursor.fetchone()
    if row is None:
        head, _ = ChainHead.objects.select_for_update().get_or_create(pk=1)
        row = (head.seq, head.chain_hash)
    seq, prev = row
    for decision in decisions:
        seq += 1
        decision.seq = seq
        decision.prev_hash = prev
        decision.content_hash = content_hash(decision)
        decision.chain_hash = prev = link(prev, decision.content_hash)
    Decision.objects.bulk_create(decisions)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET seq = %s, chain_hash = %s, updated_at = %s WHERE id = 1",  # noqa: S608
            [seq, prev, connection.ops.adapt_datetimefield_value(timezone.now())],
        )
    return decisions


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    problem: str = ""
    first_bad: str = ""


def verify(decisions: Iterable[Decision] | None = None) -> Verification:
    """Walk the chain from its start (the genesis, or the boundary of the last retention purge);
    name the first edited, deleted or reordered record."""
    start = ChainStart.objects.filter(pk=1).first()
    prev, expected_seq, checked = GENESIS, 1, 0
    if start is not None:
        prev, expected_seq = start.chain_hash, start.seq + 1
    rows = decisions if decisions is not None else Decision.objects.order_by("seq").iterator(2000)
    for d in rows:
        checked += 1
        if d.seq != expected_seq:
            return Verification(
                False,
                checked,
                expected_seq - 1,
                prev,
                f"record #{expected_seq} is missing (next is #{d.seq})",
                str(d.id),
            )
        if d.prev_hash != prev:
            return Verification(
                False,
                checked,
                d.seq - 1,
                prev,
                "link to the previous record is broken (deleted or reordered)",
                str(d.id),
            )
        if d.erased_at is not None:
            # An erased record must really be empty: salt, subject, inputs and outputs gone.
            intact = not (d.payload_salt or d.subject_pseudonym or d.inputs or d.label or d.scores)
        else:
            intact = (
                bool(d.payload_salt)
                and payload_digest(
                    d.payload_salt,
                    subject_pseudonym=d.subject_pseudonym,
                    inputs=d.inputs,
                    label=d.label,
                    scores=d.scores,
                )
                == d.payload_digest
            )
        if not intact:
            return Verification(False, checked, d.seq - 1, prev, "payload was edited", str(d.id))
        if content_hash(d) != d.content_hash or link(prev, d.content_hash) != d.chain_hash:
            return Verification(False, checked, d.seq - 1, prev, "record was edited", str(d.id))
        prev, expected_seq = d.chain_hash, expected_seq + 1
    head = ChainHead.objects.filter(pk=1).first()
    if head is not None and (head.seq, head.chain_hash) != (expected_seq - 1, prev):
        return Verification(
            False,
            checked,
            expected_seq - 1,
            prev,
            f"the chain ends at #{expected_seq - 1} but the head is #{head.seq} "
            "(records were removed from the end)",
        )
    return Verification(True, checked, expected_seq - 1, prev)


def prune_prefix(before_seq: int) -> int:
    """Delete the records numbered below ``before_seq`` and move the chain's start past them
    (a retention purge). Call inside a transaction; returns the number deleted."""
    last = Decision.objects.filter(seq__lt=before_seq).order_by("-seq").first()
    if last is None:
        return 0
    from apps.inference.models import BatchRow

    start, _ = ChainStart.objects.select_for_update().get_or_create(pk=1)
    BatchRow.objects.filter(decision__seq__lte=last.seq).update(decision=None)
    _, per_model = Decision.objects.filter(seq__lte=last.seq).delete()
    deleted = per_model.get(Decision._meta.label, 0)
    start.seq, start.chain_hash = last.seq, last.chain_hash
    start.purged_records += deleted
    start.purged_at = timezone.now()
    start.save()
    return deleted
