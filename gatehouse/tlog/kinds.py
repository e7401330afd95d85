"""Kinds of leaves: each app that logs records registers how to recompute a leaf from its row.

A kind's ``recompute`` gets references (and the salts kept on their leaves) and returns, per
reference whose row exists, the canonical leaf bytes, or a string naming what is wrong with the
row (e.g. its personal payload no longer matches its digest). ``unlogged`` yields references of
rows that have no leaf (inserted around the log). ``may_remove`` judges a leaf whose row is
gone, from the logged leaf's fields, the reason and the time recorded: None when it was lawful
(an erasure, a retention purge), else what is wrong with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


def canonical(value: Any) -> bytes:
    """The canonical JSON of ``value``: sorted keys, no spaces, non-JSON values as strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


@dataclass(frozen=True)
class LeafKind:
    name: str
    label: str  # how a person calls one record of this kind, e.g. "decision"
    recompute: Callable[[Sequence[str], Mapping[str, str]], dict[str, bytes | str]]
    unlogged: Callable[[set[str]], Iterable[str]]
    may_remove: Callable[[dict[str, Any], str, datetime | None], str | None]


_kinds: dict[str, LeafKind] = {}


def register(kind: LeafKind) -> None:
    _kinds[kind.name] = kind


def get(name: str) -> LeafKind | None:
    return _kinds.get(name)


def all_kinds() -> list[LeafKind]:
    return list(_kinds.values())
