"""Writes of the registry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from guardian.shortcuts import assign_perm, remove_perm

from apps.registry.models import ModelFamily
from apps.registry.permissions import FamilyAction
from gatehouse.errors import Conflict, ValidationFailed


@transaction.atomic
def family_create(*, slug: str, name: str, owner: Any, description: str = "") -> ModelFamily:
    if ModelFamily.objects.filter(slug=slug).exists():
        raise Conflict(f"A model family '{slug}' exists already.")
    if not slug:
        raise ValidationFailed.for_field("slug", "A slug is required.", code="required")
    family = ModelFamily.objects.create(slug=slug, name=name, owner=owner, description=description)
    family_grant(family=family, to=owner, actions=[FamilyAction.VIEW, FamilyAction.MANAGE])
    return family


def family_grant(*, family: ModelFamily, to: Any, actions: Iterable[FamilyAction]) -> None:
    """Grant ``actions`` on ``family`` to a user or a group (audited by django-auditlog)."""
    for action in actions:
        assign_perm(action.codename, to, family)


def family_revoke(*, family: ModelFamily, to: Any, actions: Iterable[FamilyAction]) -> None:
    for action in actions:
        remove_perm(action.codename, to, family)
