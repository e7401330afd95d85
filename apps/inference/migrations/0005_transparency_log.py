"""The linear hash chain of decisions becomes the first leaves of the transparency log.

The chain is verified first, with the rules it was written under (frozen here): a migration
must not launder an edited chain into a signed tree, so a broken chain stops it, naming the
record. Then every kept record becomes a leaf in ``seq`` order (indexes 0..n-1) and the
interior nodes are stored; the sequencer signs the first checkpoint over them. Audit-trail
entries written before the log existed are queued after them. Then the chain's columns go.
"""

import hashlib
import json
import secrets

from django.db import migrations
from django.utils import timezone

GENESIS = "0" * 64


def _canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def _legacy_payload_digest(salt, d):
    payload = {"subject": d.subject_pseudonym, "inputs": d.inputs, "label": d.label, "scores": d.scores}
    return hashlib.sha256(bytes.fromhex(salt) + _canonical(payload)).hexdigest()


def _legacy_content_hash(d):
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
    if d.policy_ref:
        fields["policy_ref"] = d.policy_ref
    return hashlib.sha256(_canonical(fields)).hexdigest()


# The leaf formats (v1) as this migration writes them, frozen here like the chain's rules: the
# live ones (apps/inference/records.py, gatehouse/tlog/audit.py) may move on to a v2.
def _decision_leaf_v1(d):
    return _canonical(
        {
            "v": 1,
            "kind": "decision",
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


def _audit_leaf_v1(entry, salt):
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
    digest = hashlib.sha256(bytes.fromhex(salt) + _canonical(personal)).hexdigest()
    return _canonical(
        {
            "v": 1,
            "kind": "audit",
            "id": str(entry.pk),
            "model": f"{entry.content_type.app_label}.{entry.content_type.model}",
            "object_pk": entry.object_pk,
            "action": entry.action,
            "actor": entry.actor_id,
            "timestamp": entry.timestamp.isoformat(),
            "digest": digest,
        }
    )


def _verify_legacy_chain(Decision, ChainHead, ChainStart):
    start = ChainStart.objects.filter(pk=1).first()
    prev, expected = (start.chain_hash, start.seq + 1) if start else (GENESIS, 1)
    for d in Decision.objects.order_by("seq").iterator(2000):
        if d.seq != expected:
            raise RuntimeError(f"decision chain broken: record #{expected} is missing ({d.id})")
        if d.prev_hash != prev:
            raise RuntimeError(f"decision chain broken: link before record {d.id}")
        if d.erased_at is not None:
            intact = not (d.payload_salt or d.subject_pseudonym or d.inputs or d.label or d.scores)
        else:
            intact = bool(d.payload_salt) and _legacy_payload_digest(d.payload_salt, d) == d.payload_digest
        if not intact:
            raise RuntimeError(f"decision chain broken: the payload of record {d.id} was edited")
        if _legacy_content_hash(d) != d.content_hash or hashlib.sha256(
            (prev + d.content_hash).encode()
        ).hexdigest() != d.chain_hash:
            raise RuntimeError(f"decision chain broken: record {d.id} was edited")
        prev, expected = d.chain_hash, expected + 1
    head = ChainHead.objects.filter(pk=1).first()
    if head is not None and (head.seq, head.chain_hash) != (expected - 1, prev):
        raise RuntimeError("decision chain broken: records were removed from its end")


def chain_to_tree(apps, schema_editor):
    from gatehouse.tlog.verify import leaf_hash, node_hash

    Decision = apps.get_model("inference", "Decision")
    ChainHead = apps.get_model("inference", "ChainHead")
    ChainStart = apps.get_model("inference", "ChainStart")
    LogLeaf = apps.get_model("gatehouse", "LogLeaf")
    LogNode = apps.get_model("gatehouse", "LogNode")
    LogEntry = apps.get_model("auditlog", "LogEntry")
    _verify_legacy_chain(Decision, ChainHead, ChainStart)

    now = timezone.now()
    frontier = []  # (level, hash)
    leaves, nodes, size = [], [], 0
    for d in Decision.objects.order_by("seq").iterator(2000):
        leaf = _decision_leaf_v1(d)
        h = leaf_hash(leaf)
        leaves.append(
            LogLeaf(
                kind="decision", ref=str(d.id), leaf=leaf, leaf_hash=h, created_at=d.created_at,
                idx=size, integrated_at=now,
            )
        )
        level, idx, node = 0, size, h
        while frontier and frontier[-1][0] == level:
            node = node_hash(frontier.pop()[1], node)
            level, idx = level + 1, idx >> 1
            nodes.append(LogNode(level=level, idx=idx, hash=node))
        frontier.append((level, node))
        size += 1
        if len(leaves) >= 2000:
            LogLeaf.objects.bulk_create(leaves)
            LogNode.objects.bulk_create(nodes)
            leaves, nodes = [], []
    LogLeaf.objects.bulk_create(leaves)
    LogNode.objects.bulk_create(nodes)

    pending = []
    for entry in LogEntry.objects.select_related("content_type").order_by("pk").iterator(2000):
        salt = secrets.token_hex(16)
        leaf = _audit_leaf_v1(entry, salt)
        pending.append(
            LogLeaf(
                kind="audit",
                ref=str(entry.pk),
                leaf=leaf,
                leaf_hash=leaf_hash(leaf),
                salt=salt,
                created_at=entry.timestamp,
            )
        )
    LogLeaf.objects.bulk_create(pending, batch_size=2000)
    if size:
        # The first checkpoint over the migrated chain, so that it verifies at once.
        from gatehouse.tlog import signing
        from gatehouse.tlog.verify import fold

        root = fold(h for _, h in frontier)
        LogCheckpoint = apps.get_model("gatehouse", "LogCheckpoint")
        LogCheckpoint.objects.create(
            size=size,
            root=root,
            note=signing.sign_checkpoint(size, root),
            key_id=signing.signer().verifier.id.hex(),
        )


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0004_decision_policy_ref"),
        ("gatehouse", "0006_transparency_log"),
        ("auditlog", "__latest__"),
    ]

    operations = [
        migrations.RunPython(chain_to_tree, migrations.RunPython.noop, elidable=False),
        migrations.DeleteModel(name="ChainHead"),
        migrations.DeleteModel(name="ChainStart"),
        migrations.AlterModelOptions(name="decision", options={"ordering": ["created_at"]}),
        migrations.RemoveField(model_name="decision", name="chain_hash"),
        migrations.RemoveField(model_name="decision", name="content_hash"),
        migrations.RemoveField(model_name="decision", name="prev_hash"),
        migrations.RemoveField(model_name="decision", name="seq"),
    ]
