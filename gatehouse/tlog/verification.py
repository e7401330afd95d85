"""Verify the whole log from the database: every leaf from its row, every stored node, every
checkpoint's signature and root, consistency between consecutive checkpoints; name the first
problem (``manage.py verify_decisions``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gatehouse.tlog import kinds, signing, tree
from gatehouse.tlog.models import LogCheckpoint, LogLeaf, LogNode
from gatehouse.tlog.verify import (
    VerificationError,
    fold,
    leaf_hash,
    node_hash,
    open_checkpoint,
    push,
    verify_consistency,
)

CHUNK = 2000


@dataclass
class Verification:
    ok: bool = True
    leaves: int = 0
    pending: int = 0
    removed: int = 0
    checkpoints: int = 0
    size: int = 0
    root: bytes = b""
    problem: str = ""
    first_bad: str = ""  # the record (kind and id) or node the problem is about
    notes: list[str] = field(default_factory=list)

    def fail(self, problem: str, first_bad: str = "") -> Verification:
        self.ok, self.problem, self.first_bad = False, problem, first_bad
        return self


Row = tuple[int, str, str, bytes, str, str, bytes, Any]


def _chunks(query: object) -> Iterator[list[Row]]:
    rows: list[Row] = []
    for row in query.iterator(CHUNK):  # type: ignore[attr-defined]
        rows.append(row)
        if len(rows) == CHUNK:
            yield rows
            rows = []
    if rows:
        yield rows


def _fields(leaf: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(bytes(leaf))
    except ValueError:
        return {}
    return fields if isinstance(fields, dict) else {}


def _label(kind: str, ref: str) -> str:
    known = kinds.get(kind)
    return f"{known.label if known else kind} {ref}"


def verify_log() -> Verification:
    """Verify the log as it stood when this started, while a sequencer may keep integrating:
    a pass commits its leaves, nodes and checkpoint together, so everything at or below the
    integrated size read first is a fixed prefix."""
    result = Verification()
    bound = tree.integrated_size()
    integrated = (
        LogLeaf.objects.filter(idx__lt=bound)
        .order_by("idx")
        .values_list("idx", "kind", "ref", "leaf_hash", "salt", "removed", "leaf", "removed_at")
    )
    hashes: list[bytes] = []
    logged: dict[str, set[str]] = {}
    for rows in _chunks(integrated):
        by_kind: dict[str, list[Row]] = {}
        for row in rows:
            idx, kind, ref = row[0], row[1], row[2]
            if idx != len(hashes):
                missing = len(hashes)
                return result.fail(
                    f"leaf #{missing} is missing (the next is #{idx}): deleted from the log",
                    f"leaf #{missing}",
                )
            hashes.append(bytes(row[3]))
            logged.setdefault(kind, set()).add(ref)
            by_kind.setdefault(kind, []).append(row)
        for kind, group in by_kind.items():
            known = kinds.get(kind)
            if known is None:
                return result.fail(f"leaf #{group[0][0]} has an unknown kind {kind!r}")
            salts = {r[2]: r[4] for r in group}
            recomputed = known.recompute([r[2] for r in group], salts)
            for idx, _, ref, stored, _, removed, logged_leaf, removed_at in group:
                name = _label(kind, ref)
                if leaf_hash(bytes(logged_leaf)) != bytes(stored):
                    return result.fail(f"the logged leaf of {name} at #{idx} was edited", name)
                found = recomputed.get(ref)
                if found is None:
                    if not removed:
                        return result.fail(f"{name} at #{idx} was deleted", name)
                    why = known.may_remove(_fields(logged_leaf), removed, removed_at)
                    if why is not None:
                        return result.fail(f"{name} at #{idx} was deleted: {why}", name)
                    result.removed += 1
                    continue
                if isinstance(found, str):
                    return result.fail(f"{name} at #{idx}: {found}", name)
                if found != bytes(logged_leaf):
                    return result.fail(
                        f"{name} at #{idx} was edited (or the leaves were reordered)", name
                    )
    result.leaves = len(hashes)
    levels: dict[int, list[bytes]] = {}
    if (problem := _check_nodes(hashes, levels, bound)) is not None:
        return result.fail(*problem)
    if (problem := _check_checkpoints(hashes, levels, result, bound)) is not None:
        return result.fail(*problem)
    pending = LogLeaf.objects.filter(idx=None)
    result.pending = pending.count()
    for kind, ref in LogLeaf.objects.filter(idx__gte=bound).values_list("kind", "ref"):
        logged.setdefault(kind, set()).add(ref)  # integrated since this started
    for kind, ref in pending.values_list("kind", "ref").iterator(CHUNK):
        logged.setdefault(kind, set()).add(ref)
    for known in kinds.all_kinds():
        if (stray := _first_unlogged(known, logged.get(known.name, set()))) is not None:
            return result.fail(
                f"{_label(known.name, stray)} is not in the log (inserted around it)",
                _label(known.name, stray),
            )
    return result


def _first_unlogged(known: kinds.LeafKind, logged: set[str]) -> str | None:
    """A row of this kind without a leaf. Rows recorded while this ran are not in ``logged``;
    they are looked up again (a row and its leaf commit together, so the leaf is there)."""
    candidates: list[str] = []

    def still_missing() -> str | None:
        found = set(
            LogLeaf.objects.filter(kind=known.name, ref__in=candidates).values_list(
                "ref", flat=True
            )
        )
        return next((ref for ref in candidates if ref not in found), None)

    for ref in known.unlogged(logged):
        candidates.append(ref)
        if len(candidates) == 500:
            if (missing := still_missing()) is not None:
                return missing
            candidates = []
    return still_missing() if candidates else None


def _check_nodes(
    hashes: list[bytes], levels: dict[int, list[bytes]], bound: int
) -> tuple[str, str] | None:
    """Rebuild every perfect subtree from the leaves (into ``levels``) and compare with the
    stored nodes."""
    level_hashes = hashes
    stored = LogNode.objects.order_by("level", "idx").values_list("level", "idx", "hash")
    expected = levels
    expected[0] = hashes
    level = 0
    while len(level_hashes) > 1:
        level += 1
        level_hashes = [
            node_hash(level_hashes[i], level_hashes[i + 1])
            for i in range(0, len(level_hashes) - 1, 2)
        ]
        expected[level] = level_hashes
    count = 0
    for lvl, idx, h in stored.iterator(CHUNK):
        if (idx + 1) << lvl > bound:
            continue  # over leaves integrated since this started
        count += 1
        want = expected.get(lvl)
        if want is None or idx >= len(want):
            return (
                f"node {lvl}/{idx} is stored but the leaves do not reach it",
                f"node {lvl}/{idx}",
            )
        if want[idx] != bytes(h):
            first = idx << lvl
            return (
                f"the leaves under node {lvl}/{idx} (from #{first}) were reordered or replaced",
                f"leaf #{first}",
            )
    total = sum(len(v) for lvl, v in expected.items() if lvl > 0)
    if count != total:
        return (f"{total - count} interior nodes are missing from the log", "nodes")
    return None


def _check_checkpoints(
    hashes: list[bytes], levels: dict[int, list[bytes]], result: Verification, bound: int
) -> tuple[str, str] | None:
    """Each kept checkpoint: signed by a known key, of this origin, its root equal to the
    tree's at its size; consecutive ones consistent (proofs from the stored nodes)."""
    keys = signing.verifier_keys()
    frontier: list[tuple[int, bytes]] = []
    position = 0
    previous: LogCheckpoint | None = None
    later = LogCheckpoint.objects.filter(size__gt=bound).order_by("size").first()
    if later is not None and later.size > tree.integrated_size():
        return (  # a signed checkpoint larger than the whole tree: its tail was removed
            f"the log was truncated: checkpoint {later.size} was signed but only "
            f"{tree.integrated_size()} leaves remain",
            f"checkpoint {later.size}",
        )
    for checkpoint in (
        LogCheckpoint.objects.filter(size__lte=bound).order_by("size").iterator(CHUNK)
    ):
        result.checkpoints += 1
        label = f"checkpoint {checkpoint.size}"
        try:
            signed = open_checkpoint(checkpoint.note, keys, origin=signing.origin())
        except VerificationError as exc:
            return (f"{label}: {exc}", label)
        if signed.size != checkpoint.size or signed.root != bytes(checkpoint.root):
            return (f"{label}: its stored size or root is not what was signed", label)
        if checkpoint.size > len(hashes):
            return (
                f"the log was truncated: {label} was signed but only {len(hashes)} leaves remain",
                label,
            )
        while position < checkpoint.size:
            push(frontier, hashes[position])
            position += 1
        if fold(h for _, h in frontier) != signed.root:
            return (f"{label}: the tree's root at that size is not the signed root", label)
        if previous is not None:
            plan = tree.consistency_plan(previous.size, checkpoint.size)
            proof = [fold(levels[lvl][i] for lvl, i in part) for part in plan]
            try:
                verify_consistency(
                    previous.size,
                    checkpoint.size,
                    proof,
                    bytes(previous.root),
                    signed.root,
                )
            except VerificationError as exc:
                return (f"{label} is not consistent with checkpoint {previous.size}: {exc}", label)
        previous = checkpoint
    if previous is None:
        if hashes:
            return ("no checkpoint covers the integrated leaves", "checkpoints")
        return None
    result.size, result.root = previous.size, bytes(previous.root)
    if previous.size < len(hashes):
        result.notes.append(
            f"{len(hashes) - previous.size} integrated leaves are not yet in a checkpoint"
        )
    return None


def verify_against(note: str) -> tuple[int, int]:
    """Prove that the log grew append-only from a checkpoint kept elsewhere: its signature,
    then a consistency proof to the latest checkpoint. Returns (its size, the latest size)."""
    keys = signing.verifier_keys()
    theirs = open_checkpoint(note, keys, origin=signing.origin())
    latest = tree.checkpoint_at()
    if theirs.size > latest.size:
        raise VerificationError(
            f"the checkpoint is of {theirs.size} leaves but the log has {latest.size}: truncated"
        )
    if theirs.size == 0:
        return 0, latest.size
    verify_consistency(
        theirs.size,
        latest.size,
        tree.consistency_proof(theirs.size, latest.size),
        theirs.root,
        bytes(latest.root),
    )
    return theirs.size, latest.size
