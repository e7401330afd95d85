"""Reads of the inference app, scoped to the caller."""

from __future__ import annotations

from typing import Any

from apps.inference.models import Decision
from apps.registry.permissions import FamilyAction
from gatehouse.errors import NotFound
from gatehouse.models import ApiKey
from gatehouse.roles import Role, has_role


def decision_get(*, user: Any, key: ApiKey | None, decision_id: str) -> Decision:
    """A decision the caller may see: made by them (or their key), or on a family they manage,
    or any for compliance officers and admins. 404 otherwise, not 403: existence is not told."""
    decision = (
        Decision.objects.select_related("family", "version", "outcome")
        .filter(pk=decision_id)
        .first()
    )
    if decision is None:
        raise NotFound("No such decision.")
    if key is not None:
        if decision.api_key_id == key.pk:
            return decision
        raise NotFound("No such decision.")
    if (
        decision.actor_user_id == user.pk
        or user.has_perm(FamilyAction.MANAGE.perm, decision.family)
        or has_role(user, Role.COMPLIANCE_OFFICER, Role.ADMIN)
    ):
        return decision
    raise NotFound("No such decision.")


def decision_history(*, user: Any, limit: int = 20) -> list[Decision]:
    """The caller's own most recent decisions (served, not shadow)."""
    return list(
        Decision.objects.select_related("family")
        .filter(actor_user=user)
        .exclude(route="shadow")
        .order_by("-created_at")[:limit]
    )


def decision_receipt(*, decision: Decision, tree_size: int | None = None) -> dict[str, Any]:
    """The receipt of a decision the caller may see (``decision_get``); 409 when the record
    no longer matches what was logged (its fields or its personal payload were edited)."""
    from apps.inference import records
    from gatehouse.errors import Conflict
    from gatehouse.tlog import receipts

    if not records.payload_intact(decision):
        raise Conflict(
            "The record's payload differs from its digest in the decision log; an operator "
            "must run `manage.py verify_decisions`.",
            code="log_mismatch",
        )
    return receipts.receipt(
        kind=records.KIND,
        ref=str(decision.id),
        current=records.leaf_bytes(decision),
        moment=decision.created_at,
        tree_size=tree_size,
    )
