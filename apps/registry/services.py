"""Writes of the registry: families, version registration, validation, approval, deployment.

Every status change goes through ``_transition``, which checks the lifecycle, records who,
when and why, and is audited. Permission checks take the acting user explicitly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import IO, Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from apps.registry import evaluation, gates
from apps.registry.artifacts import ArtifactStore, StoredFile, default_store
from apps.registry.loading import model_from_bytes
from apps.registry.models import (
    GateResult,
    ModelFamily,
    ModelVersion,
    VersionStatus,
    VersionTransition,
)
from apps.registry.permissions import FamilyAction
from apps.registry.schemas import FamilyIn, VersionMetadata
from gatehouse.errors import Conflict, PermissionDenied, ValidationFailed
from gatehouse.pseudonyms import (
    lineage_contains,
    lineage_digest,
    lineage_remove,
    pack_lineage,
    pseudonymise,
)
from gatehouse.roles import Role, has_role

logger = logging.getLogger(__name__)
S = VersionStatus

# The lifecycle: which status may follow which.
ALLOWED: dict[str, set[str]] = {
    S.REGISTERED: {S.VALIDATED, S.RETIRED, S.RETRAIN_REQUIRED},
    S.VALIDATED: {S.APPROVED, S.REJECTED, S.RETIRED, S.RETRAIN_REQUIRED},
    S.APPROVED: {S.STAGING, S.PRODUCTION, S.RETIRED, S.RETRAIN_REQUIRED},
    S.STAGING: {S.PRODUCTION, S.APPROVED, S.RETIRED, S.RETRAIN_REQUIRED},
    S.PRODUCTION: {S.APPROVED, S.RETIRED, S.RETRAIN_REQUIRED},
    S.RETRAIN_REQUIRED: {S.RETIRED},
    S.REJECTED: set(),
    S.RETIRED: set(),
}


def _require(user: Any, family: ModelFamily, action: FamilyAction) -> None:
    if not user.has_perm(action.perm, family) and not user.has_perm(action.perm):
        raise PermissionDenied(f"You may not {action.value} '{family.slug}'.")


def _transition(
    version: ModelVersion, to: str, *, actor: Any | None, reason: str = ""
) -> ModelVersion:
    # Re-read under a row lock: two concurrent approvals or deployments cannot both pass.
    current, retrain_required = (
        ModelVersion.objects.select_for_update()
        .values_list("status", "retrain_required")
        .get(pk=version.pk)
    )
    promotion = to in (S.STAGING, S.PRODUCTION) or (to == S.APPROVED and current == S.VALIDATED)
    if promotion and retrain_required:
        raise Conflict(
            f"{version} was trained on data of erased subjects; register and promote a "
            "retrained version instead.",
            code="retrain_required",
        )
    if to not in ALLOWED[current]:
        raise Conflict(
            f"{version} is {VersionStatus(current).label.lower()}; it cannot become "
            f"{VersionStatus(to).label.lower()}.",
            code="invalid_transition",
        )
    version.status = to
    version.save(update_fields=["status", "updated_at"])
    VersionTransition.objects.create(
        version=version, from_status=current, to_status=to, actor=actor, reason=reason
    )
    logger.info("version %s: %s -> %s", version, current, to)
    return version


# --- Families -------------------------------------------------------------------------------


@transaction.atomic
def family_create(*, data: FamilyIn, owner: Any) -> ModelFamily:
    """A new family owned by ``owner`` (a model owner), who gets view and manage on it."""
    if not has_role(owner, Role.MODEL_OWNER, Role.ADMIN):
        raise PermissionDenied("Only model owners may create model families.")
    if ModelFamily.objects.filter(slug=data.slug).exists():
        raise Conflict(f"A model family '{data.slug}' exists already.")
    family = ModelFamily.objects.create(owner=owner, **data.model_dump())
    family_grant(family=family, to=owner, actions=[FamilyAction.VIEW, FamilyAction.MANAGE])
    return family


def family_grant(*, family: ModelFamily, to: Any, actions: Iterable[FamilyAction]) -> None:
    """Grant ``actions`` on ``family`` to a user or a group (audited by django-auditlog)."""
    for action in actions:
        assign_perm(action.codename, to, family)


def family_revoke(*, family: ModelFamily, to: Any, actions: Iterable[FamilyAction]) -> None:
    for action in actions:
        remove_perm(action.codename, to, family)


# --- Registration ---------------------------------------------------------------------------


def version_register(
    *,
    family: ModelFamily,
    user: Any,
    metadata: VersionMetadata,
    artifact: IO[bytes] | UploadedFile,
    validation: IO[bytes] | UploadedFile,
    store: ArtifactStore | None = None,
) -> ModelVersion:
    """Store the files, check the artifact against the signature, measure it, record it.

    Nothing half-registered remains: files stored for a refused registration are removed
    (unless another version shares them, the store being content-addressed).
    """
    if not has_role(user, Role.MODEL_OWNER, Role.ADMIN):
        raise PermissionDenied("Only model owners may upload model artifacts.")
    _require(user, family, FamilyAction.MANAGE)
    if ModelVersion.objects.filter(family=family, version=metadata.version).exists():
        raise Conflict(
            f"{family.slug} already has a version {metadata.version}.", code="duplicate_version"
        )
    store = store or default_store()
    stored: list[StoredFile] = []
    try:
        artifact_file = store.put(artifact, max_bytes=settings.ARTIFACT_MAX_BYTES)
        stored.append(artifact_file)
        validation_file = store.put(
            validation, max_bytes=settings.VALIDATION_MAX_BYTES, field="validation"
        )
        stored.append(validation_file)
        module = model_from_bytes(
            framework=metadata.framework,
            architecture=metadata.architecture,
            architecture_kwargs=metadata.architecture_kwargs,
            data=store.read_verified(artifact_file.sha256),
        )
        rows, y_true = evaluation.parse_validation_csv(
            metadata.signature, store.read_verified(validation_file.sha256)
        )
        evaluation.smoke_test(metadata.signature, module, rows)
        policy = gates.policy_for(family.risk_class)
        metrics = evaluation.evaluate(
            metadata.signature,
            module,
            rows,
            y_true,
            min_group_size=int(policy.get("min_group_size", 20)),
        )
        with transaction.atomic():
            version = ModelVersion.objects.create(
                family=family,
                version=metadata.version,
                framework=metadata.framework,
                architecture=metadata.architecture,
                architecture_kwargs=metadata.architecture_kwargs,
                artifact_sha256=artifact_file.sha256,
                artifact_size=artifact_file.size,
                validation_sha256=validation_file.sha256,
                validation_rows=len(rows),
                signature=metadata.signature.as_dict(),
                metrics=metrics,
                description=metadata.description,
                intended_use=metadata.intended_use,
                limitations=metadata.limitations,
                ethical_considerations=metadata.ethical_considerations,
                dataset_name=metadata.dataset_name,
                dataset_version=metadata.dataset_version,
                dataset_sha256=metadata.dataset_sha256,
                training_subjects=pack_lineage(
                    pseudonymise(ref) for ref in metadata.training_subject_refs
                ),
                training_subject_count=len({r.strip() for r in metadata.training_subject_refs}),
                created_by=user,
            )
            VersionTransition.objects.create(
                version=version,
                from_status="",
                to_status=S.REGISTERED,
                actor=user,
                reason="registered",
            )
    except IntegrityError as exc:
        _discard(store, stored)
        raise Conflict(
            f"{family.slug} already has a version {metadata.version}.", code="duplicate_version"
        ) from exc
    except BaseException:
        _discard(store, stored)
        raise
    return version


def _discard(store: ArtifactStore, files: list[StoredFile]) -> None:
    for stored in files:
        shared = ModelVersion.objects.filter(artifact_sha256=stored.sha256).exists() or (
            ModelVersion.objects.filter(validation_sha256=stored.sha256).exists()
        )
        if not shared:
            store.delete(stored.sha256)


# --- Lifecycle ------------------------------------------------------------------------------


@transaction.atomic
def version_validate(*, version: ModelVersion, user: Any) -> list[GateResult]:
    """Run the promotion gates; all pass -> validated, else the version stays registered."""
    _require(user, version.family, FamilyAction.MANAGE)
    if version.status != S.REGISTERED:
        raise Conflict(
            f"{version} is {version.status}; only registered versions are validated.",
            code="invalid_transition",
        )
    version.gates.all().delete()
    now = timezone.now()
    results = GateResult.objects.bulk_create(
        GateResult(
            version=version,
            run_at=now,
            gate=o.gate,
            passed=o.passed,
            measured=o.measured,
            threshold=o.threshold,
            detail=o.detail,
        )
        for o in gates.run_gates(version)
    )
    failed = [r.gate for r in results if not r.passed]
    if failed:
        logger.info("version %s failed gates: %s", version, ", ".join(failed))
    else:
        _transition(version, S.VALIDATED, actor=user, reason="all promotion gates passed")
    return results


def _decide(version: ModelVersion, user: Any, reason: str, verb: str) -> str:
    """The checks of an approval decision (approve or reject); returns the cleaned reason."""
    _require(user, version.family, FamilyAction.APPROVE)
    if version.created_by_id == user.pk:
        raise PermissionDenied(
            "Four-eyes rule: the person who registered a version cannot approve or reject it.",
            code="four_eyes",
        )
    if not reason.strip():
        raise ValidationFailed.for_field("reason", "A written reason is required.")
    if version.status != S.VALIDATED:
        raise Conflict(
            f"{version} is {version.status}; only validated versions are {verb}.",
            code="invalid_transition",
        )
    return reason.strip()


@transaction.atomic
def version_approve(*, version: ModelVersion, user: Any, reason: str) -> ModelVersion:
    """Approve a validated version whose gates all passed (approver, not its registrant)."""
    reason = _decide(version, user, reason, "approved")
    if not version.gates.exists() or version.gates.filter(passed=False).exists():
        raise Conflict(f"{version} has failed promotion gates.", code="gates_failed")
    _transition(version, S.APPROVED, actor=user, reason=reason)
    transaction.on_commit(lambda: _enqueue_packaging(version.pk))
    return version


def _enqueue_packaging(version_id: int) -> None:
    from apps.registry.tasks import package_version

    package_version.delay(version_id)


@transaction.atomic
def version_reject(*, version: ModelVersion, user: Any, reason: str) -> ModelVersion:
    reason = _decide(version, user, reason, "rejected")
    return _transition(version, S.REJECTED, actor=user, reason=reason)


@transaction.atomic
def version_deploy(
    *, version: ModelVersion, user: Any, target: str, reason: str = ""
) -> ModelVersion:
    """Deploy an approved version to staging or production; the previous production
    version steps back to approved (it may serve again, e.g. on rollback)."""
    _require(user, version.family, FamilyAction.MANAGE)
    if target not in (S.STAGING, S.PRODUCTION):
        raise ValidationFailed.for_field("target", "must be staging or production")
    if version.status not in (S.APPROVED, S.STAGING):
        raise Conflict(
            f"Only approved versions can be deployed; {version} is {version.status}.",
            code="not_approved",
        )
    if target == S.PRODUCTION:
        current = (
            ModelVersion.objects.select_for_update()
            .filter(family=version.family, status=S.PRODUCTION)
            .exclude(pk=version.pk)
            .first()
        )
        if current is not None:
            _transition(current, S.APPROVED, actor=user, reason=f"superseded by v{version.version}")
    return _transition(version, target, actor=user, reason=reason or f"deployed to {target}")


@transaction.atomic
def version_retire(*, version: ModelVersion, user: Any, reason: str) -> ModelVersion:
    _require(user, version.family, FamilyAction.MANAGE)
    if not reason.strip():
        raise ValidationFailed.for_field("reason", "A written reason is required.")
    return _transition(version, S.RETIRED, actor=user, reason=reason.strip())


@transaction.atomic
def version_flag_retrain(*, version: ModelVersion, reason: str, actor: Any = None) -> ModelVersion:
    """Mark a version as needing retraining (e.g. its training data was erased)."""
    return _transition(version, S.RETRAIN_REQUIRED, actor=actor, reason=reason)


def versions_with_subject(*, pseudonym: str) -> list[ModelVersion]:
    """The versions whose training lineage holds the subject."""
    target = lineage_digest(pseudonym)
    return [
        v
        for v in ModelVersion.objects.exclude(training_subjects=b"")
        if target in bytes(v.training_subjects)
        and lineage_contains(bytes(v.training_subjects), pseudonym)
    ]


def versions_erase_subject(*, pseudonym: str) -> list[ModelVersion]:
    """Remove an erased subject from the training lineage of every version that holds it, and
    flag those versions ``retrain_required`` (their promotion is blocked from now on)."""
    touched: list[ModelVersion] = []
    target = lineage_digest(pseudonym)
    candidates = ModelVersion.objects.select_for_update().exclude(training_subjects=b"")
    for version in candidates:
        packed = bytes(version.training_subjects)
        if target not in packed or not lineage_contains(packed, pseudonym):
            continue
        version.training_subjects = lineage_remove(packed, pseudonym)
        version.erased_subjects += 1
        version.retrain_required = True
        version.save(
            update_fields=["training_subjects", "erased_subjects", "retrain_required", "updated_at"]
        )
        touched.append(version)
    return touched


def version_package(*, version_id: int) -> ModelVersion:
    """Build the TorchServe archive (.mar) of an approved version and store it beside the
    artifact; idempotent."""
    import tempfile
    from pathlib import Path

    from apps.registry.packaging import build_mar

    version = ModelVersion.objects.select_related("family").get(pk=version_id)
    if version.mar_sha256:
        return version
    store = default_store()
    weights = store.read_verified(version.artifact_sha256)
    with tempfile.TemporaryDirectory() as tmp:
        mar = build_mar(
            model_name=version.family.slug,
            version=version.version,
            framework=version.framework,
            architecture=version.architecture,
            architecture_kwargs=version.architecture_kwargs,
            signature=version.signature,
            weights=weights,
            export_dir=Path(tmp),
        )
        with mar.open("rb") as handle:
            stored = store.put(handle, max_bytes=settings.ARTIFACT_MAX_BYTES * 2, field="mar")
    version.mar_sha256 = stored.sha256
    version.save(update_fields=["mar_sha256", "updated_at"])  # a save, so it is audited
    logger.info("version %s packaged for TorchServe: %s", version, stored.sha256)
    return version
