"""Audit-trail entries (django-auditlog) as leaves: every human decision that governs
predictions (approvals, deployments, routing and kill-switch, consent, erasure, keys, grants).

The leaf covers the entry's non-personal fields and a salted digest of the rest (its changes
and description), so that an erasure can delete the entry and its salt and leave the tree valid.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from auditlog.models import LogEntry
from django.db.models.signals import post_save

from gatehouse.tlog import kinds, tree

KIND = "audit"
# Models ("app_label.model") whose audit entries an erasure may delete (registered by the apps
# that erase them); an entry of any other model that is gone was deleted unlawfully.
erasable_models: set[str] = set()


def leaf_bytes(entry: Any, salt: str) -> bytes:
    personal = {
        "changes": entry.changes,
        "changes_text": entry.changes_text,
        "object_repr": entry.object_repr,
        "serialized_data": entry.serialized_data,
        "additional_data": entry.additional_data,
        "remote_addr": entry.remote_addr,
        "remote_port": entry.remote_port,
        "actor_email": entry.actor_email,
        "cid": entry.cid,
    }
    digest = hashlib.sha256(bytes.fromhex(salt) + kinds.canonical(personal)).hexdigest()
    return kinds.canonical(
        {
            "v": 1,
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
    tree.enqueue(KIND, [tree.Entry(str(entry.pk), leaf_bytes(entry, salt), salt)])


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


def _may_remove(fields: dict[str, Any], reason: str, when: datetime | None) -> str | None:
    if reason == "erased" and fields.get("model") in erasable_models:
        return None
    return f"an audit entry of {fields.get('model')} was removed ({reason or 'no reason'})"


def connect() -> None:
    post_save.connect(_on_entry, sender=LogEntry, dispatch_uid="tlog-audit-leaf")
    kinds.register(
        kinds.LeafKind(
            name=KIND,
            label="audit entry",
            recompute=_recompute,
            unlogged=_unlogged,
            may_remove=_may_remove,
        )
    )
