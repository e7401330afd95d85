"""Reads of the registry, scoped to the caller (user, and API key when there is one)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from guardian.shortcuts import get_objects_for_user

from apps.registry.models import ModelFamily
from apps.registry.permissions import FamilyAction
from gatehouse.errors import NotFound, PermissionDenied
from gatehouse.models import ApiKey


def family_list(
    *, user: Any, action: FamilyAction = FamilyAction.VIEW, key: ApiKey | None = None
) -> QuerySet[ModelFamily]:
    """The families ``user`` may ``action``; narrowed to the key's scope when a key is used."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return ModelFamily.objects.none()
    families = get_objects_for_user(
        user, action.perm, klass=ModelFamily, accept_global_perms=True
    ).select_related("owner")
    if key is not None:
        # Any key may see the families it covers; acting needs the action in its scope.
        if action is not FamilyAction.VIEW and action.value not in key.actions:
            return ModelFamily.objects.none()
        if key.families:
            families = families.filter(slug__in=key.families)
    return families.order_by("slug")


def family_get(
    *, user: Any, slug: str, action: FamilyAction = FamilyAction.VIEW, key: ApiKey | None = None
) -> ModelFamily:
    """One family: 404 when the caller may not see it, 403 when they see it but may not act."""
    visible = family_list(user=user, key=key, action=FamilyAction.VIEW)
    family = visible.filter(slug=slug).first()
    if family is None:
        raise NotFound(f"No model family '{slug}'.")
    if action is not FamilyAction.VIEW and not (
        family_list(user=user, key=key, action=action).filter(pk=family.pk).exists()
    ):
        raise PermissionDenied(f"You may not {action.value} '{slug}'.")
    return family


def family_actions(*, user: Any, family: ModelFamily) -> list[str]:
    """The actions ``user`` holds on ``family``, for display."""
    return [a.value for a in FamilyAction if user.has_perm(a.perm, family)]


def family_choices(user: Any) -> list[tuple[str, str]]:
    """(slug, name) of the families a user may scope an API key to."""
    return [(f.slug, f.name) for f in family_list(user=user)]
