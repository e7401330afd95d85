"""The six roles of Gatehouse, kept as Django groups, and what each one needs."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Role(StrEnum):
    BUSINESS_USER = "business_user"
    API_CONSUMER = "api_consumer"
    MODEL_OWNER = "model_owner"
    APPROVER = "approver"
    COMPLIANCE_OFFICER = "compliance_officer"
    ADMIN = "admin"

    @property
    def label(self) -> str:
        return ROLE_LABELS[self]


ROLE_LABELS: dict[Role, str] = {
    Role.BUSINESS_USER: "Business user",
    Role.API_CONSUMER: "API consumer",
    Role.MODEL_OWNER: "Model owner",
    Role.APPROVER: "Approver",
    Role.COMPLIANCE_OFFICER: "Compliance officer",
    Role.ADMIN: "Administrator",
}

# Roles whose pages and actions require a session verified with a second factor.
OTP_ROLES: frozenset[Role] = frozenset({Role.APPROVER, Role.COMPLIANCE_OFFICER, Role.ADMIN})

_CACHE_ATTR = "_gatehouse_roles"


def roles_of(user: Any) -> frozenset[Role]:
    """The roles of ``user`` (cached on the instance for the length of a request)."""
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        cached = frozenset(role for role in Role if role.value in names)
        if user.is_superuser:
            cached = cached | {Role.ADMIN}
        setattr(user, _CACHE_ATTR, cached)
    return cached


def has_role(user: Any, *roles: Role) -> bool:
    return bool(roles_of(user) & set(roles))


def user_requires_otp(user: Any) -> bool:
    return bool(getattr(user, "is_staff", False)) or bool(roles_of(user) & OTP_ROLES)
