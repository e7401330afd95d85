"""Demo data of the registry: the model families the demo users work with."""

from __future__ import annotations

from typing import Any

from apps.registry import services
from apps.registry.models import ModelFamily
from apps.registry.permissions import FamilyAction as A
from apps.registry.schemas import FamilyIn
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

COMPLIANCE: dict[str, dict[str, Any]] = {
    "credit-risk": {
        "purposes": ["creditworthiness assessment of loan applicants"],
        "legal_basis": "consent",
        "consent_purpose": "credit_scoring",
        "risk_class": "high",
        "retention_days": 365,
        "review_below_confidence": 0.6,
    },
    "digits": {
        "purposes": ["recognising handwritten digits on scanned forms"],
        "legal_basis": "not_applicable",
        "risk_class": "minimal",
        "retention_days": 183,
        "explain_decisions": False,
    },
}

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
            data=FamilyIn(slug=slug, name=name, description=description, **COMPLIANCE[slug]),
            owner=owner,
        )
        for role, actions in GRANTS.items():
            services.family_grant(family=family, to=users[role], actions=actions)


def create_demo_models(users: dict[Role, Any]) -> None:
    """Train the demo models for real and take them through the lifecycle: version 1 of each
    family approved and in production, credit-risk 2.0.0 waiting in the approval queue."""
    import io

    from apps.registry import demo_training
    from apps.registry.models import Framework, ModelVersion, VersionStatus
    from apps.registry.schemas import VersionMetadata
    from apps.registry.signature import Signature

    owner, approver = users[Role.MODEL_OWNER], users[Role.APPROVER]
    plan = [
        ("credit-risk", "1.0.0", demo_training.train_credit_v1, "production"),
        ("digits", "1.0.0", demo_training.train_digits_v1, "production"),
        ("credit-risk", "2.0.0", demo_training.train_credit_v2, "queue"),
    ]
    for slug, number, train, goal in plan:
        family = ModelFamily.objects.get(slug=slug)
        if ModelVersion.objects.filter(family=family, version=number).exists():
            continue  # trained on an earlier run: no retraining
        trained = train()
        metadata = VersionMetadata(
            version=trained.version,
            framework=Framework.STATE_DICT,
            architecture=trained.architecture,
            architecture_kwargs=trained.architecture_kwargs,
            signature=Signature.model_validate(trained.signature),
            description=trained.description,
            intended_use=trained.intended_use,
            limitations=trained.limitations,
            ethical_considerations=trained.ethical_considerations,
            dataset_name=trained.dataset_name,
            dataset_version=trained.dataset_version,
            dataset_sha256=trained.dataset_sha256,
            training_subject_refs=trained.training_subject_refs,
        )
        version = services.version_register(
            family=family,
            user=owner,
            metadata=metadata,
            artifact=io.BytesIO(trained.state_dict),
            validation=io.BytesIO(trained.validation_csv),
        )
        services.version_validate(version=version, user=owner)
        version.refresh_from_db()
        if version.status != VersionStatus.VALIDATED or goal == "queue":
            continue
        services.version_approve(
            version=version,
            user=approver,
            reason="Demo: held-out metrics and fairness within the promotion policy.",
        )
        services.version_deploy(
            version=version,
            user=owner,
            target="production",
            reason="Demo: first production version.",
        )
