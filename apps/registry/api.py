"""Registry endpoints under ``/api/v1/registry/``."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from guardian.core import ObjectPermissionChecker
from ninja import File, Form, Router, Status
from ninja.files import UploadedFile
from pydantic import ValidationError as PydanticError

from apps.registry import selectors, services
from apps.registry.models import ModelFamily, ModelVersion
from apps.registry.permissions import FamilyAction
from apps.registry.schemas import (
    DeployIn,
    FamilyIn,
    FamilyOut,
    GateOut,
    ProductionSpanOut,
    ReasonIn,
    TransitionOut,
    VersionMetadata,
    VersionOut,
)
from gatehouse.auth import api_key_of, require_key_scope, require_verified_session
from gatehouse.errors import ValidationFailed
from gatehouse.schemas import ErrorOut

router = Router(tags=["registry"])
ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut}
WRITE_ERRORS = {**ERRORS, 409: ErrorOut, 413: ErrorOut, 422: ErrorOut}


def _family_out(
    request: HttpRequest,
    family: ModelFamily,
    checker: ObjectPermissionChecker | None = None,
    production: dict[int, str] | None = None,
) -> FamilyOut:
    actions = selectors.family_actions(user=request.user, family=family, checker=checker)
    key = api_key_of(request)
    if key is not None:
        actions = [a for a in actions if key.allows(a, family.slug)]
    if production is None:
        current = selectors.production_version(family=family)
        production = {family.pk: current.version} if current else {}
    return FamilyOut(
        slug=family.slug,
        name=family.name,
        description=family.description,
        owner=family.owner.get_username(),
        purposes=family.purposes,
        legal_basis=family.legal_basis,
        consent_purpose=family.consent_purpose,
        risk_class=family.risk_class,
        retention_days=family.retention_days,
        actions=actions,
        production_version=production.get(family.pk),
    )


def _version_out(version: ModelVersion) -> VersionOut:
    gates, transitions = selectors.version_detail(version=version)
    return VersionOut(
        family=version.family.slug,
        version=version.version,
        status=version.status,
        framework=version.framework,
        architecture=version.architecture,
        artifact_sha256=version.artifact_sha256,
        artifact_size=version.artifact_size,
        mar_sha256=version.mar_sha256,
        signature=version.signature,
        metrics=version.metrics,
        dataset_name=version.dataset_name,
        dataset_version=version.dataset_version,
        dataset_sha256=version.dataset_sha256,
        training_subject_count=version.training_subject_count,
        intended_use=version.intended_use,
        limitations=version.limitations,
        ethical_considerations=version.ethical_considerations,
        created_by=version.created_by.get_username(),
        created_at=version.created_at,
        gates=[GateOut.from_orm(g) for g in gates],
        transitions=[
            TransitionOut(
                from_status=t.from_status,
                to_status=t.to_status,
                actor=t.actor.get_username() if t.actor else None,
                reason=t.reason,
                at=t.at,
            )
            for t in transitions
        ],
    )


@router.get("/families", response={200: list[FamilyOut], 401: ErrorOut})
def list_families(request: HttpRequest) -> list[FamilyOut]:
    """The model families the caller may view (and, with a key, that the key covers)."""
    require_key_scope(request, action="view")
    families = list(selectors.family_list(user=request.user, key=api_key_of(request)))
    checker = selectors.family_permission_checker(user=request.user, families=families)
    production = dict(
        ModelVersion.objects.filter(family__in=families, status="production").values_list(
            "family_id", "version"
        )
    )
    return [_family_out(request, f, checker, production) for f in families]


@router.post("/families", response={201: FamilyOut, **WRITE_ERRORS})
def create_family(request: HttpRequest, payload: FamilyIn) -> Status[FamilyOut]:
    """Create a model family with its compliance metadata (model owners)."""
    require_key_scope(request, action="manage")
    family = services.family_create(data=payload, owner=request.user)
    return Status(201, _family_out(request, family))


@router.get("/families/{slug}", response={200: FamilyOut, **ERRORS})
def get_family(request: HttpRequest, slug: str) -> FamilyOut:
    require_key_scope(request, action="view")
    family = selectors.family_get(user=request.user, slug=slug, key=api_key_of(request))
    return _family_out(request, family)


@router.get("/families/{slug}/versions", response={200: list[VersionOut], **ERRORS})
def list_versions(request: HttpRequest, slug: str) -> list[VersionOut]:
    require_key_scope(request, action="view")
    family = selectors.family_get(user=request.user, slug=slug, key=api_key_of(request))
    return [_version_out(v) for v in selectors.version_list(family=family)]


@router.post("/families/{slug}/versions", response={201: VersionOut, **WRITE_ERRORS})
def register_version(
    request: HttpRequest,
    slug: str,
    metadata: Form[str],
    artifact: UploadedFile = File(...),  # noqa: B008
    validation: UploadedFile = File(...),  # noqa: B008
) -> Status[VersionOut]:
    """Register a version: multipart with ``artifact`` (weights or TorchScript),
    ``validation`` (held-out CSV: one column per feature and ``label``) and ``metadata``
    (JSON: version, framework, architecture, signature, model card, lineage)."""
    require_key_scope(request, action="manage")
    family = selectors.family_get(
        user=request.user, slug=slug, action=FamilyAction.MANAGE, key=api_key_of(request)
    )
    try:
        parsed = VersionMetadata.model_validate_json(metadata)
    except PydanticError as exc:
        raise ValidationFailed(
            "metadata: invalid.",
            errors=[
                {
                    "field": ".".join(["metadata", *map(str, e["loc"])]),
                    "message": e["msg"],
                    "type": e["type"],
                }
                for e in exc.errors()
            ],
        ) from exc
    version = services.version_register(
        family=family,
        user=request.user,
        metadata=parsed,
        artifact=artifact,
        validation=validation,
    )
    return Status(201, _version_out(version))


@router.get("/families/{slug}/versions/{version}", response={200: VersionOut, **ERRORS})
def get_version(request: HttpRequest, slug: str, version: str) -> VersionOut:
    require_key_scope(request, action="view")
    found = selectors.version_get(
        user=request.user, slug=slug, version=version, key=api_key_of(request)
    )
    return _version_out(found)


@router.post(
    "/families/{slug}/versions/{version}/validate", response={200: VersionOut, **WRITE_ERRORS}
)
def validate_version(request: HttpRequest, slug: str, version: str) -> VersionOut:
    """Run the promotion gates of the family's risk class."""
    require_key_scope(request, action="manage")
    found = selectors.version_get(
        user=request.user,
        slug=slug,
        version=version,
        action=FamilyAction.MANAGE,
        key=api_key_of(request),
    )
    services.version_validate(version=found, user=request.user)
    return _version_out(found)


@router.post(
    "/families/{slug}/versions/{version}/approve", response={200: VersionOut, **WRITE_ERRORS}
)
def approve_version(request: HttpRequest, slug: str, version: str, payload: ReasonIn) -> Any:
    """Approve (approvers with a verified second factor; never the registrant)."""
    require_verified_session(request)
    found = selectors.version_get(
        user=request.user, slug=slug, version=version, action=FamilyAction.APPROVE
    )
    return _version_out(
        services.version_approve(version=found, user=request.user, reason=payload.reason)
    )


@router.post(
    "/families/{slug}/versions/{version}/reject", response={200: VersionOut, **WRITE_ERRORS}
)
def reject_version(request: HttpRequest, slug: str, version: str, payload: ReasonIn) -> Any:
    require_verified_session(request)
    found = selectors.version_get(
        user=request.user, slug=slug, version=version, action=FamilyAction.APPROVE
    )
    return _version_out(
        services.version_reject(version=found, user=request.user, reason=payload.reason)
    )


@router.post(
    "/families/{slug}/versions/{version}/deploy", response={200: VersionOut, **WRITE_ERRORS}
)
def deploy_version(request: HttpRequest, slug: str, version: str, payload: DeployIn) -> Any:
    """Deploy an approved version to staging or production."""
    require_key_scope(request, action="manage")
    found = selectors.version_get(
        user=request.user,
        slug=slug,
        version=version,
        action=FamilyAction.MANAGE,
        key=api_key_of(request),
    )
    return _version_out(
        services.version_deploy(
            version=found, user=request.user, target=payload.target, reason=payload.reason
        )
    )


@router.post(
    "/families/{slug}/versions/{version}/retire", response={200: VersionOut, **WRITE_ERRORS}
)
def retire_version(request: HttpRequest, slug: str, version: str, payload: ReasonIn) -> Any:
    require_key_scope(request, action="manage")
    found = selectors.version_get(
        user=request.user,
        slug=slug,
        version=version,
        action=FamilyAction.MANAGE,
        key=api_key_of(request),
    )
    return _version_out(
        services.version_retire(version=found, user=request.user, reason=payload.reason)
    )


@router.get(
    "/families/{slug}/production-history", response={200: list[ProductionSpanOut], **ERRORS}
)
def production_history(request: HttpRequest, slug: str) -> list[ProductionSpanOut]:
    """Which version was in production, and when."""
    require_key_scope(request, action="view")
    family = selectors.family_get(user=request.user, slug=slug, key=api_key_of(request))
    return [
        ProductionSpanOut(version=name, since=since, until=until)
        for name, since, until in selectors.production_history(family=family)
    ]


@router.get("/approvals", response={200: list[VersionOut], 401: ErrorOut, 403: ErrorOut})
def approval_queue(request: HttpRequest) -> list[VersionOut]:
    """Versions waiting for the caller's approval decision."""
    require_verified_session(request)
    return [_version_out(v) for v in selectors.approval_queue(user=request.user)]


@router.get(
    "/records-of-processing", response={200: list[dict[str, Any]], 401: ErrorOut, 403: ErrorOut}
)
def records_of_processing(request: HttpRequest) -> list[dict[str, Any]]:
    """GDPR Art. 30 records of processing for every family (compliance officers, admins)."""
    require_verified_session(request)
    return selectors.records_of_processing(user=request.user)
