"""Demo data of the registry: the model families the demo users work with."""

from __future__ import annotations

from typing import Any

from apps.registry import services
from apps.registry.models import ModelFamily
from apps.registry.permissions import FamilyAction as A
from gatehouse.roles import Role

DEMO_FAMILIES = [
    (
        "credit-risk",
        "Credit risk",
        "Scores the risk that a credit applicant defaults "
        "(German Credit data). Requires consent for the purpose 'credit_scoring'.",
    ),
    (
        "digits",
        "Handwritten digits",
        "Recognises a handwritten digit from an 8x8 image (scikit-learn digits). No personal data.",
    ),
]

GRANTS: dict[Role, list[A]] = {
    Role.BUSINESS_USER: [A.VIEW, A.PREDICT],
    Role.API_CONSUMER: [A.VIEW, A.PREDICT],
    Role.APPROVER: [A.VIEW, A.APPROVE],
    Role.COMPLIANCE_OFFICER: [A.VIEW],
}


def create_demo_families(users: dict[Role, Any]) -> None:
    owner = users[Role.MODEL_OWNER]
    for slug, name, description in DEMO_FAMILIES:
        family = ModelFamily.objects.filter(slug=slug).first() or services.family_create(
            slug=slug, name=name, owner=owner, description=description
        )
        for role, actions in GRANTS.items():
            services.family_grant(family=family, to=users[role], actions=actions)
