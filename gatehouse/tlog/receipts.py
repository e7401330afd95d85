"""Receipts: a record's leaf, the signed promise, and (once integrated) its inclusion proof
against a signed checkpoint, in one document that ``gatehouse.tlog.verify`` checks offline."""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any

from django.conf import settings

from gatehouse.errors import Conflict, NotFound, ValidationFailed
from gatehouse.tlog import signing, tree
from gatehouse.tlog.models import LogCheckpoint, LogLeaf
from gatehouse.tlog.verify import RECEIPT_FORMAT, InclusionProof, b64, leaf_hash

logger = logging.getLogger(__name__)


def retry_after_s() -> int:
    return max(1, math.ceil(settings.LOG_MAX_MERGE_DELAY_S))


def receipt(
    *, kind: str, ref: str, current: bytes, moment: datetime, tree_size: int | None = None
) -> dict[str, Any]:
    """The receipt of one record whose leaf, recomputed from its row now, is ``current``;
    ``status`` is ``integrated`` (with ``proof``) or ``pending`` (promise only: ask again after
    ``retry_after_s``). ``tree_size`` asks for the proof against a kept earlier checkpoint.

    The leaf and promise served are the logged ones; a row that no longer matches its logged
    leaf gets no receipt (409): the key must not vouch for an edited record."""
    row = LogLeaf.objects.filter(kind=kind, ref=ref).values("idx", "leaf", "leaf_hash").first()
    if row is None:
        raise NotFound("The record is not in the log.")
    leaf, logged_hash = bytes(row["leaf"]), bytes(row["leaf_hash"])
    if current != leaf or leaf_hash(leaf) != logged_hash:
        logger.error("receipt refused: %s %s differs from its logged leaf", kind, ref)
        raise Conflict(
            "The record differs from its entry in the decision log; an operator must run "
            "`manage.py verify_decisions`.",
            code="log_mismatch",
        )
    promise = signing.sign_promise(ref, logged_hash, moment)
    index = row["idx"]
    body: dict[str, Any] = {
        "format": RECEIPT_FORMAT,
        "kind": kind,
        "record_id": ref,
        "origin": signing.origin(),
        "public_key": signing.signer().verifier.text(),
        "leaf": leaf.decode(),
        "leaf_hash": b64(logged_hash),
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
        if index is not None and index >= tree_size:
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
