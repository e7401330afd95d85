"""Reads of the registry, scoped to the caller (user, and API key when there is one)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet
from guardian.core import ObjectPermissionChecker
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
        if action.value not in key.actions:
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


def family_actions(
    *, user: Any, family: ModelFamily, checker: ObjectPermissionChecker | None = None
) -> list[str]:
    """The actions ``user`` holds on ``family``, for display.

    For a list pass ``checker=family_permission_checker(...)``: a fixed number of queries,
    not two per family and action.
    """
    if checker is None:
        return [a.value for a in FamilyAction if user.has_perm(a.perm, family)]
    # Model-level grants count too (guardian's checker only sees object permissions).
    global_perms = user.get_all_permissions()
    return [
        a.value for a in FamilyAction if a.perm in global_perms or checker.has_perm(a.perm, family)
    ]


def family_permission_checker(
    *, user: Any, families: Iterable[ModelFamily]
) -> ObjectPermissionChecker:
    """A guardian checker with the permissions of ``user`` on ``families`` prefetched."""
    checker = ObjectPermissionChecker(user)
    families = list(families)
    if families:
        checker.prefetch_perms(families)  # type: ignore[arg-type]
    return checker


def family_choices(user: Any) -> list[tuple[str, str]]:
    """(slug, name) of the families a user may scope an API key to."""
    return [(f.slug, f.name) for f in family_list(user=user)]
