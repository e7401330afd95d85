"""Registry endpoints under ``/api/v1/registry/``."""

from __future__ import annotations

from django.http import HttpRequest
from guardian.core import ObjectPermissionChecker
from ninja import Router

from apps.registry import selectors
from apps.registry.models import ModelFamily
from apps.registry.schemas import FamilyOut
from gatehouse.auth import api_key_of
from gatehouse.schemas import ErrorOut

router = Router(tags=["registry"])


def _out(
    request: HttpRequest, family: ModelFamily, checker: ObjectPermissionChecker | None = None
) -> FamilyOut:
    actions = selectors.family_actions(user=request.user, family=family, checker=checker)
    key = api_key_of(request)
    if key is not None:
        actions = [a for a in actions if key.allows(a, family.slug)]
    return FamilyOut(
        slug=family.slug,
        name=family.name,
        description=family.description,
        owner=family.owner.get_username(),
        actions=actions,
    )


@router.get("/families", response={200: list[FamilyOut], 401: ErrorOut})
def list_families(request: HttpRequest) -> list[FamilyOut]:
    """The model families the caller may view (and, with a key, that the key covers)."""
    families = list(selectors.family_list(user=request.user, key=api_key_of(request)))
    checker = selectors.family_permission_checker(user=request.user, families=families)
    return [_out(request, f, checker) for f in families]


@router.get("/families/{slug}", response={200: FamilyOut, 401: ErrorOut, 404: ErrorOut})
def get_family(request: HttpRequest, slug: str) -> FamilyOut:
    family = selectors.family_get(user=request.user, slug=slug, key=api_key_of(request))
    return _out(request, family)
