"""The stored Merkle tree: leaves written by recorders, proofs read with O(log n) node reads.

Coordinates ``(level, idx)`` name the perfect subtree over leaves ``[idx << level, (idx + 1) <<
level)``; level 0 is a leaf hash (``LogLeaf``), higher levels are ``LogNode`` rows written by the
sequencer. A proof is first planned as coordinates, then read in one query, then folded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Max
from django.utils import timezone

from gatehouse.errors import NotFound, ValidationFailed
from gatehouse.tlog.models import LogCheckpoint, LogLeaf, LogNode
from gatehouse.tlog.verify import EMPTY_ROOT, fold, leaf_hash, split_point

Coord = tuple[int, int]


@dataclass(frozen=True)
class Entry:
    """What a recorder hands to the log: which record, and its canonical leaf."""

    ref: str
    leaf: bytes
    salt: str = ""

    @property
    def leaf_hash(self) -> bytes:
        return leaf_hash(self.leaf)


def enqueue(kind: str, entries: Sequence[Entry]) -> None:
    """Queue leaves for the sequencer, in the caller's transaction (so that a record and its
    leaf commit together). Inserts only: no row shared with other writers is read or locked."""
    if not entries:
        return
    now = timezone.now()
    LogLeaf.objects.bulk_create(
        [
            LogLeaf(
                kind=kind,
                ref=e.ref,
                leaf=e.leaf,
                leaf_hash=e.leaf_hash,
                salt=e.salt,
                created_at=now,
            )
            for e in entries
        ]
    )


def integrated_size() -> int:
    top = LogLeaf.objects.aggregate(top=Max("idx"))["top"]
    return 0 if top is None else int(top) + 1


def range_coords(start: int, end: int) -> list[Coord]:
    """The perfect subtrees covering ``[start, end)``, left to right (largest aligned first)."""
    coords: list[Coord] = []
    while start < end:
        level = (start & -start).bit_length() - 1 if start else (end - start).bit_length() - 1
        while (1 << level) > end - start:
            level -= 1
        coords.append((level, start >> level))
        start += 1 << level
    return coords


def frontier_coords(size: int) -> list[Coord]:
    """The perfect subtrees of a tree of ``size`` leaves (its right edge), left to right."""
    return range_coords(0, size)


def inclusion_plan(index: int, size: int) -> list[list[Coord]]:
    """RFC 9162 PATH(index, D[size]) as coordinates: one list of subtrees per proof hash."""
    plan: list[list[Coord]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split_point(hi - lo)
        if index < lo + k:
            plan.append(range_coords(lo + k, hi))
            hi = lo + k
        else:
            plan.append(range_coords(lo, lo + k))
            lo += k
    plan.reverse()  # leaf to root
    return plan


def consistency_plan(old: int, new: int) -> list[list[Coord]]:
    """RFC 9162 PROOF(old, D[new]) as coordinates (0 < old < new)."""
    plan: list[list[Coord]] = []
    lo, hi, complete = 0, new, True
    while True:
        m = old - lo
        if m == hi - lo:
            if not complete:
                plan.append(range_coords(lo, hi))
            break
        k = split_point(hi - lo)
        if m <= k:
            plan.append(range_coords(lo + k, hi))
            hi = lo + k
        else:
            plan.append(range_coords(lo, lo + k))
            lo += k
            complete = False
    plan.reverse()
    return plan


def read_nodes(coords: Iterable[Coord]) -> dict[Coord, bytes]:
    """The stored hashes of ``coords``; raises NotFound naming one that is missing."""
    wanted = set(coords)
    found: dict[Coord, bytes] = {}
    leaves = [i for level, i in wanted if level == 0]
    inner = [(level, i) for level, i in wanted if level > 0]
    if leaves:
        rows = LogLeaf.objects.filter(idx__in=leaves).values_list("idx", "leaf_hash")
        found.update({(0, idx): bytes(h) for idx, h in rows if idx is not None})
    if inner:
        # One statement for the interior nodes: (level, idx) pairs as OR-ed equalities.
        where = " OR ".join(["(level = %s AND idx = %s)"] * len(inner))
        params = [v for pair in inner for v in pair]
        table = LogNode._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT level, idx, hash FROM {table} WHERE {where}", params)  # noqa: S608
            for level, idx, h in cursor.fetchall():
                found[(level, idx)] = bytes(h)
    missing = wanted - found.keys()
    if missing:
        raise NotFound(f"the log has no node {sorted(missing)[0]}: the tree is incomplete")
    return found


def _assemble(plan: list[list[Coord]]) -> list[bytes]:
    nodes = read_nodes(c for part in plan for c in part)
    return [fold(nodes[c] for c in part) for part in plan]


def root(size: int) -> bytes:
    if size == 0:
        return EMPTY_ROOT
    coords = frontier_coords(size)
    nodes = read_nodes(coords)
    return fold(nodes[c] for c in coords)


def inclusion_proof(index: int, size: int) -> list[bytes]:
    return _assemble(inclusion_plan(index, size))


def consistency_proof(old: int, new: int) -> list[bytes]:
    if not 0 < old <= new:
        raise ValidationFailed.for_field("first", "must be between 1 and the second size")
    if old == new:
        return []
    return _assemble(consistency_plan(old, new))


def checkpoint_at(size: int | None = None) -> LogCheckpoint:
    """The latest checkpoint, or the one of ``size``; NotFound when there is none."""
    query = LogCheckpoint.objects.all()
    checkpoint = query.filter(size=size).first() if size is not None else query.last()
    if checkpoint is None:
        raise NotFound("No checkpoint of that size." if size is not None else "No checkpoint yet.")
    return checkpoint


def mark_removed(
    kind: str, refs: Sequence[str], *, reason: str, when: datetime | None = None
) -> int:
    """Record that the rows of these leaves were removed (a purge, an erasure) and when: the
    leaves keep their places; their salts go. Verification asks the kind whether it was lawful."""
    if not refs:
        return 0
    return LogLeaf.objects.filter(kind=kind, ref__in=list(refs)).update(
        removed=reason, removed_at=when or timezone.now(), salt=""
    )


def oldest_pending_age_s() -> float:
    """Seconds since the oldest leaf still waiting for the sequencer was queued (0 when none)."""
    from django.db.models import Min

    oldest = LogLeaf.objects.filter(idx=None).aggregate(oldest=Min("created_at"))["oldest"]
    return 0.0 if oldest is None else max(0.0, (timezone.now() - oldest).total_seconds())


def health() -> str:
    """ "ok" while leaves are integrated within a few merge delays, "degraded" when the sequencer
    is behind or gone (GET /health)."""
    from django.conf import settings

    allowed = 5 * settings.LOG_MAX_MERGE_DELAY_S + settings.LOG_LEASE_S
    return "ok" if oldest_pending_age_s() <= allowed else "degraded"
