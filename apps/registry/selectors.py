"""Reads of the registry, scoped to the caller (user, and API key when there is one)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db.models import Q, QuerySet
from guardian.core import ObjectPermissionChecker
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import get_groups_with_perms, get_objects_for_user, get_users_with_perms

from apps.registry.models import (
    GateResult,
    ModelFamily,
    ModelVersion,
    VersionStatus,
    VersionTransition,
)
from apps.registry.permissions import FamilyAction
from gatehouse.errors import NotFound, PermissionDenied
from gatehouse.freshness import Fingerprint, FreshMemo, fingerprint
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
    """One family: 404 when the caller may not see it (or it is outside the key's families),
    403 when they see it but may not ``action`` (or the key does not allow it).

    On the predict path: one query for the family and one guardian checker for both rights
    (model-level grants count too, as in ``family_list``).
    """
    family = None
    if getattr(user, "is_authenticated", False) and user.is_active:
        family = ModelFamily.objects.select_related("owner").filter(slug=slug).first()
    if family is None:
        raise NotFound(f"No model family '{slug}'.")
    return _checked(family, _held_actions(user, family), user=user, action=action, key=key)


def _held_actions(user: Any, family: ModelFamily) -> frozenset[FamilyAction]:
    """What ``user`` holds on ``family``: one guardian checker, model-level grants included."""
    checker = ObjectPermissionChecker(user)
    return frozenset(
        wanted
        for wanted in FamilyAction
        if user.has_perm(wanted.perm) or checker.has_perm(wanted.perm, family)
    )


def _checked(
    family: ModelFamily,
    held: frozenset[FamilyAction],
    *,
    user: Any,
    action: FamilyAction,
    key: ApiKey | None,
) -> ModelFamily:
    slug = family.slug
    if key is not None and key.families and slug not in key.families:
        raise NotFound(f"No model family '{slug}'.")
    if FamilyAction.VIEW not in held:
        raise NotFound(f"No model family '{slug}'.")
    if key is not None and action.value not in key.actions:
        raise PermissionDenied(
            f"This API key does not allow '{action.value}' on '{slug}'.", code="key_scope"
        )
    if action not in held:
        raise PermissionDenied(f"You may not {action.value} '{slug}'.")
    return family


_serving_families: FreshMemo[tuple[ModelFamily, frozenset[FamilyAction]] | None] = FreshMemo()


def _access_rows(user: Any, slug: str) -> Fingerprint:
    """Every row the answer of ``family_get`` depends on, beyond the user row itself: the
    family's row, the user's and their groups' model-level permissions, and the user's and
    their groups' object permissions on the family."""
    family_table = ModelFamily._meta.db_table
    user_perms = user._meta.get_field("user_permissions").remote_field.through._meta.db_table
    user_groups = user._meta.get_field("groups").remote_field.through._meta.db_table
    group_perms = Group.permissions.through._meta.db_table
    user_object = UserObjectPermission._meta.db_table
    group_object = GroupObjectPermission._meta.db_table
    family_rows = fingerprint(
        f"SELECT f.id, f.* FROM {family_table} f WHERE f.slug = %s",  # noqa: S608 (table names)
        [slug],
    )
    if not family_rows:
        return ()
    uid, object_pk = user.pk, str(family_rows[0][0])
    content_type = ContentType.objects.get_for_model(ModelFamily).pk  # cached by Django
    return family_rows + fingerprint(
        f"SELECT 'u', permission_id FROM {user_perms} WHERE user_id = %s "  # noqa: S608
        f"UNION ALL SELECT 'g', gp.permission_id FROM {group_perms} gp "
        f"JOIN {user_groups} ug ON ug.group_id = gp.group_id WHERE ug.user_id = %s "
        f"UNION ALL SELECT 'ou', permission_id FROM {user_object} "
        "WHERE user_id = %s AND content_type_id = %s AND object_pk = %s "
        f"UNION ALL SELECT 'og', go.permission_id FROM {group_object} go "
        f"JOIN {user_groups} ug ON ug.group_id = go.group_id "
        "WHERE ug.user_id = %s AND go.content_type_id = %s AND go.object_pk = %s "
        "ORDER BY 1, 2",
        [uid, uid, uid, content_type, object_pk, uid, content_type, object_pk],
    )


def family_for_serving(
    *, user: Any, slug: str, action: FamilyAction, key: ApiKey | None = None
) -> ModelFamily:
    """``family_get`` for the predict path, with the same answers (404, 403, the family).

    The family and what the user holds on it are built once per process and reused while the
    rows they come from are unchanged (``gatehouse.freshness``): two raw, indexed reads per
    request instead of five ORM queries. The rows are read on every call, so a grant, a
    revocation or a change of the family applies to the very next request. The family comes
    without its owner loaded; it is shared by the requests of a process, so treat it as
    read-only.
    """
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        raise NotFound(f"No model family '{slug}'.")

    def build() -> tuple[ModelFamily, frozenset[FamilyAction]] | None:
        family = ModelFamily.objects.filter(slug=slug).first()
        return None if family is None else (family, _held_actions(user, family))

    # A superuser holds everything; the flag comes from the user row read with the key.
    memo_key = (user.pk, bool(user.is_superuser), slug)
    found = _serving_families.get(memo_key, lambda: _access_rows(user, slug), build)
    if found is None:
        raise NotFound(f"No model family '{slug}'.")
    family, held = found
    return _checked(family, held, user=user, action=action, key=key)


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


def version_list(*, family: ModelFamily) -> QuerySet[ModelVersion]:
    """The versions of a family the caller was already allowed to see (see family_get)."""
    return family.versions.select_related("created_by").order_by("-created_at")


def version_get(
    *,
    user: Any,
    slug: str,
    version: str,
    action: FamilyAction = FamilyAction.VIEW,
    key: ApiKey | None = None,
) -> ModelVersion:
    family = family_get(user=user, slug=slug, action=action, key=key)
    found = (
        ModelVersion.objects.select_related("family", "created_by")
        .filter(family=family, version=version)
        .first()
    )
    if found is None:
        raise NotFound(f"'{slug}' has no version {version}.")
    return found


def version_detail(*, version: ModelVersion) -> tuple[list[GateResult], list[VersionTransition]]:
    return (
        list(version.gates.all()),
        list(version.transitions.select_related("actor").order_by("at", "pk")),
    )


def approval_queue(*, user: Any) -> list[ModelVersion]:
    """Validated versions awaiting a decision that ``user`` may take (not their own)."""
    families = family_list(user=user, action=FamilyAction.APPROVE)
    return list(
        ModelVersion.objects.select_related("family", "created_by")
        .filter(family__in=families, status=VersionStatus.VALIDATED)
        .exclude(created_by=user)
        .order_by("created_at")
    )


def production_version(*, family: ModelFamily) -> ModelVersion | None:
    return family.versions.filter(status=VersionStatus.PRODUCTION).first()


def production_history(*, family: ModelFamily) -> list[tuple[str, Any, Any]]:
    """(version, since, until) for every period a version of ``family`` was in production."""
    spans: list[tuple[str, Any, Any]] = []
    open_spans: dict[int, tuple[str, Any]] = {}
    transitions = (
        VersionTransition.objects.filter(version__family=family)
        .filter(Q(to_status=VersionStatus.PRODUCTION) | Q(from_status=VersionStatus.PRODUCTION))
        .select_related("version")
        .order_by("at", "pk")
    )
    for t in transitions:
        if t.to_status == VersionStatus.PRODUCTION:
            open_spans[t.version_id] = (t.version.version, t.at)
        elif t.version_id in open_spans:
            name, since = open_spans.pop(t.version_id)
            spans.append((name, since, t.at))
    spans.extend((name, since, None) for name, since in open_spans.values())
    return sorted(spans, key=lambda span: span[1])


def records_of_processing(*, user: Any) -> list[dict[str, Any]]:
    """GDPR Art. 30 records of processing, generated from the registry (compliance, admin)."""
    from gatehouse.roles import Role, has_role

    if not has_role(user, Role.COMPLIANCE_OFFICER, Role.ADMIN):
        raise PermissionDenied("Records of processing are for compliance officers.")
    production = dict(
        ModelVersion.objects.filter(status=VersionStatus.PRODUCTION).values_list(
            "family_id", "version"
        )
    )
    return [
        {
            "family": f.slug,
            "name": f.name,
            "controller_contact": f.owner.email or f.owner.get_username(),
            "purposes": f.purposes,
            "legal_basis": f.get_legal_basis_display() if f.legal_basis else "",
            "consent_purpose": f.consent_purpose,
            "risk_class": f.risk_class,
            "retention_days": f.retention_days,
            "personal_data_features": sorted(
                {
                    feat["name"]
                    for v in f.versions.all()
                    for feat in v.signature["features"]
                    if feat.get("pii") or feat.get("protected")
                }
            ),
            "production_version": production.get(f.pk),
        }
        for f in ModelFamily.objects.select_related("owner").prefetch_related("versions")
    ]


def family_permission_holders(*, family: ModelFamily) -> list[dict[str, Any]]:
    """Per action: the users and groups holding it on ``family`` (object permissions)."""
    by_codename: dict[str, dict[str, list[str]]] = {
        a.codename: {"users": [], "groups": []} for a in FamilyAction
    }
    users: dict[Any, list[str]] = get_users_with_perms(  # type: ignore[assignment]
        family, attach_perms=True, with_group_users=False
    )
    groups: dict[Any, list[str]] = get_groups_with_perms(  # type: ignore[assignment]
        family, attach_perms=True
    )
    for user, perms in users.items():
        for codename in perms:
            if codename in by_codename:
                by_codename[codename]["users"].append(user.get_username())
    for group, perms in groups.items():
        for codename in perms:
            if codename in by_codename:
                by_codename[codename]["groups"].append(group.name)
    return [
        {
            "action": action.value,
            "users": sorted(by_codename[action.codename]["users"]),
            "groups": sorted(by_codename[action.codename]["groups"]),
        }
        for action in FamilyAction
    ]


def version_previous(*, version: ModelVersion) -> ModelVersion | None:
    """The family's next older version by creation time, if any."""
    return (
        ModelVersion.objects.filter(family_id=version.family_id)
        .filter(
            Q(created_at__lt=version.created_at)
            | Q(created_at=version.created_at, pk__lt=version.pk)
        )
        .order_by("-created_at", "-pk")
        .first()
    )
