"""Receipts: a record's leaf, the signed promise, and (once integrated) its inclusion proof
against a signed checkpoint, in one document that ``gatehouse.tlog.verify`` checks offline."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings

from gatehouse.errors import NotFound, ValidationFailed
from gatehouse.tlog import signing, tree
from gatehouse.tlog.models import LogCheckpoint, LogLeaf
from gatehouse.tlog.verify import RECEIPT_FORMAT, InclusionProof, b64, leaf_hash


def retry_after_s() -> int:
    return max(1, math.ceil(settings.LOG_MAX_MERGE_DELAY_S))


def receipt(
    *, kind: str, ref: str, leaf: bytes, promise: str, tree_size: int | None = None
) -> dict[str, Any]:
    """The receipt of one record; ``status`` is ``integrated`` (with ``proof``) or ``pending``
    (promise only: ask again after ``retry_after_s``). ``tree_size`` asks for the proof
    against an earlier checkpoint of that size."""
    row = LogLeaf.objects.filter(kind=kind, ref=ref).values("idx").first()
    if row is None:
        raise NotFound("The record is not in the log.")
    index = row["idx"]
    body: dict[str, Any] = {
        "format": RECEIPT_FORMAT,
        "kind": kind,
        "record_id": ref,
        "origin": signing.origin(),
        "public_key": signing.signer().verifier.text(),
        "leaf": leaf.decode(),
        "leaf_hash": b64(leaf_hash(leaf)),
        "promise": promise,
        "status": "pending",
        "leaf_index": index,
        "tree_size": None,
        "root_hash": None,
        "proof": None,
        "checkpoint": None,
    }
    if tree_size is not None:
        checkpoint: LogCheckpoint | None = LogCheckpoint.objects.filter(size=tree_size).first()
        if checkpoint is None:
            raise ValidationFailed.for_field("tree_size", f"no checkpoint of size {tree_size}")
        if index is None or index >= tree_size:
            raise ValidationFailed.for_field(
                "tree_size", f"the record is not in the tree of {tree_size} leaves"
            )
    else:
        checkpoint = LogCheckpoint.objects.order_by("-size").first()
    if index is None or checkpoint is None or checkpoint.size <= index:
        return body
    path = tree.inclusion_proof(index, checkpoint.size)
    body.update(
        status="integrated",
        tree_size=checkpoint.size,
        root_hash=b64(bytes(checkpoint.root)),
        proof=InclusionProof(index, path, checkpoint.note).text(),
        checkpoint=checkpoint.note,
    )
    return body
