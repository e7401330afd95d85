"""Audit-trail entries (django-auditlog) as leaves: every human decision that governs
predictions (approvals, deployments, routing and kill-switch, consent, erasure, keys, grants).

The leaf covers the entry's non-personal fields and a salted digest of the rest (its changes
and description), so that an erasure can delete the entry and its salt and leave the tree valid.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from auditlog.models import LogEntry
from django.db.models.signals import post_save

from gatehouse.tlog import kinds, tree
from gatehouse.tlog.verify import leaf_hash

KIND = "audit"


def leaf_bytes(entry: Any, salt: str) -> bytes:
    personal = {
        "changes": entry.changes,
        "object_repr": entry.object_repr,
        "additional_data": entry.additional_data,
        "remote_addr": entry.remote_addr,
    }
    digest = hashlib.sha256(bytes.fromhex(salt) + kinds.canonical(personal)).hexdigest()
    return kinds.canonical(
        {
            "kind": KIND,
            "id": str(entry.pk),
            "model": f"{entry.content_type.app_label}.{entry.content_type.model}",
            "object_pk": entry.object_pk,
            "action": entry.action,
            "actor": entry.actor_id,
            "timestamp": entry.timestamp.isoformat(),
            "digest": digest,
        }
    )


def _on_entry(sender: Any, instance: LogEntry, created: bool, raw: bool = False, **_: Any) -> None:
    if not created or raw:
        return
    # Read back as stored, so that the leaf is what verification will recompute from the row.
    entry = LogEntry.objects.select_related("content_type").get(pk=instance.pk)
    salt = secrets.token_hex(16)
    tree.enqueue(KIND, [tree.Entry(str(entry.pk), leaf_hash(leaf_bytes(entry, salt)), salt)])


def _recompute(refs: Sequence[str], salts: Mapping[str, str]) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    rows = LogEntry.objects.select_related("content_type").filter(pk__in=[int(r) for r in refs])
    for entry in rows:
        salt = salts.get(str(entry.pk), "")
        out[str(entry.pk)] = leaf_bytes(entry, salt) if salt else "its salt was removed"
    return out


def _unlogged(logged: set[str]) -> Iterable[str]:
    for pk in LogEntry.objects.values_list("pk", flat=True).iterator(5000):
        if str(pk) not in logged:
            yield str(pk)


def connect() -> None:
    post_save.connect(_on_entry, sender=LogEntry, dispatch_uid="tlog-audit-leaf")
    kinds.register(
        kinds.LeafKind(name=KIND, label="audit entry", recompute=_recompute, unlogged=_unlogged)
    )
