"""Model registry: registration, platform-computed metrics, gates, four-eyes approval,
deployment, lifecycle, history and artifact integrity."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.registry import selectors, services
from apps.registry.artifacts import ArtifactStore, ArtifactTampered
from apps.registry.loading import load_version
from apps.registry.models import ModelVersion, VersionStatus, VersionTransition
from apps.registry.permissions import FamilyAction
from gatehouse.errors import Conflict, PermissionDenied
from gatehouse.models import Alert
from gatehouse.roles import Role
from tests.registry_models import Registration, register, validation_csv

pytestmark = pytest.mark.django_db

URL = "/api/v1/registry/families/credit-risk/versions"


@pytest.fixture(autouse=True)
def _artifact_store(settings, tmp_path):
    settings.ARTIFACT_STORE_DIR = tmp_path / "artifacts"


def stored_files(settings):
    root = settings.ARTIFACT_STORE_DIR
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --- Registration -----------------------------------------------------------------------------


def test_a_model_owner_registers_a_version_and_the_platform_measures_it(owner_client, family):
    response = owner_client.post(URL, Registration().files())
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "registered"
    overall = body["metrics"]["overall"]
    assert 0.7 < overall["accuracy"] <= 1
    assert overall["roc_auc"] > 0.7
    assert set(body["metrics"]["by_group"]["age"]) == {"<30", "30-50", ">=50"}
    assert "demographic_parity_difference" in body["metrics"]["fairness"]["sex"]
    assert body["training_subject_count"] == 2
    assert body["transitions"][0]["to_status"] == "registered"
    version = ModelVersion.objects.get()
    assert b"subject-1" not in bytes(version.training_subjects)
    assert len(bytes(version.training_subjects)) == 16


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"version": "one"}, 422, "metadata.version"),
        (
            {
                "signature": {
                    "features": [{"name": "x", "type": "complex"}],
                    "output": {"labels": ["a", "b"]},
                }
            },
            422,
            "metadata.signature.features.0.type",
        ),
        ({"framework": None}, 422, "metadata.framework"),
    ],
)
def test_bad_metadata_is_refused_naming_the_field(owner_client, settings, change, status, field):
    reg = Registration(extra=change)
    response = owner_client.post(URL, reg.files())
    assert response.status_code == status
    assert field in [e["field"] for e in response.json()["errors"]]
    assert ModelVersion.objects.count() == 0
    assert stored_files(settings) == []


def test_a_file_that_is_not_a_model_is_refused_and_nothing_remains(owner_client, settings):
    response = owner_client.post(URL, Registration().files(artifact=b"not a model at all"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "artifact"
    assert ModelVersion.objects.count() == 0
    assert stored_files(settings) == []


def test_a_signature_that_does_not_match_the_artifact_is_refused(owner_client, settings):
    reg = Registration()
    reg.signature["features"][2]["allowed"] = ["own", "rent", "free", "boat"]
    response = owner_client.post(URL, reg.files(validation=validation_csv(signature=reg.signature)))
    assert response.status_code == 422
    fields = [e["field"] for e in response.json()["errors"]]
    assert fields == ["signature"] or fields == ["artifact"]
    assert stored_files(settings) == []


def test_an_artifact_over_the_size_limit_gets_413(owner_client, settings):
    settings.ARTIFACT_MAX_BYTES = 100
    response = owner_client.post(URL, Registration().files())
    assert response.status_code == 413
    assert stored_files(settings) == []


def test_invalid_validation_rows_are_named(owner_client):
    bad = validation_csv().replace(b",own,", b",castle,", 1)
    response = owner_client.post(URL, Registration().files(validation=bad))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"].endswith(".housing")


def test_a_duplicate_version_gets_409(owner_client, family, owner):
    register(family, owner)
    response = owner_client.post(URL, Registration().files())
    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_version"
    assert ModelVersion.objects.count() == 1


def test_an_unknown_family_gets_404(owner_client):
    response = owner_client.post("/api/v1/registry/families/nope/versions", Registration().files())
    assert response.status_code == 404


def test_only_model_owners_with_manage_rights_upload(make_user, family):
    consumer = make_user(Role.API_CONSUMER)
    services.family_grant(
        family=family, to=consumer, actions=[FamilyAction.VIEW, FamilyAction.MANAGE]
    )
    client = Client()
    client.force_login(consumer)
    assert client.post(URL, Registration().files()).status_code == 403
    other_owner = make_user(Role.MODEL_OWNER)
    client.force_login(other_owner)
    assert client.post(URL, Registration().files()).status_code == 404  # cannot even see it
    assert ModelVersion.objects.count() == 0


# --- Gates and approval -----------------------------------------------------------------------


def test_validation_runs_the_gates_and_passes_a_good_version(family, owner):
    version = register(family, owner)
    results = services.version_validate(version=version, user=owner)
    assert all(r.passed for r in results), [(r.gate, r.measured, r.threshold) for r in results]
    gates = {r.gate for r in results}
    assert {
        "metric accuracy",
        "model card complete",
        "compliance metadata",
        "fairness sex: demographic_parity_difference",
    } <= gates
    version.refresh_from_db()
    assert version.status == VersionStatus.VALIDATED


def test_a_failed_gate_keeps_the_version_registered_and_blocks_approval(family, owner, approver):
    version = register(family, owner, Registration(model_card=False))
    results = services.version_validate(version=version, user=owner)
    failed = [r for r in results if not r.passed]
    assert [r.gate for r in failed] == ["model card complete"]
    version.refresh_from_db()
    assert version.status == VersionStatus.REGISTERED
    with pytest.raises(Conflict):
        services.version_approve(version=version, user=approver, reason="looks fine")


def test_a_metric_below_its_threshold_fails_its_gate(family, owner, settings, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text("[high]\nmetrics = { accuracy = { min = 0.99 } }\n")
    settings.REGISTRY_POLICY_FILE = str(policy)
    version = register(family, owner)
    results = {r.gate: r for r in services.version_validate(version=version, user=owner)}
    result = results["metric accuracy"]
    assert (result.passed, result.threshold) == (False, ">= 0.99")
    assert 0.7 < float(result.measured) < 0.99


def test_the_registrant_cannot_approve_their_own_version(family, owner):
    services.family_grant(family=family, to=owner, actions=[FamilyAction.APPROVE])
    version = register(family, owner)
    services.version_validate(version=version, user=owner)
    with pytest.raises(PermissionDenied) as excinfo:
        services.version_approve(version=version, user=owner, reason="mine")
    assert excinfo.value.error_code == "four_eyes"


def test_approval_needs_a_verified_second_factor(family, owner, approver, verified_client):
    version = register(family, owner)
    services.version_validate(version=version, user=owner)
    url = f"{URL}/1.0.0/approve"
    plain = Client()
    plain.force_login(approver)
    response = plain.post(url, {"reason": "ok"}, content_type="application/json")
    assert response.status_code == 403
    assert response.json()["code"] == "otp_required"
    client = verified_client(approver)
    response = client.post(url, {"reason": ""}, content_type="application/json")
    assert response.status_code == 422
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("apps.registry.services._enqueue_packaging", lambda _id: None)
        response = client.post(
            url, {"reason": "metrics and fairness within policy"}, content_type="application/json"
        )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "approved"
    last = VersionTransition.objects.filter(version=version).last()
    assert (last.actor, last.reason) == (approver, "metrics and fairness within policy")


def test_approval_is_never_possible_with_an_api_key(family, owner, approver, client):
    version = register(family, owner)
    services.version_validate(version=version, user=owner)
    raw = (
        __import__("gatehouse.services", fromlist=["x"])
        .apikey_create(user=approver, name="k", actions=["view"])
        .raw
    )
    response = client.post(
        f"{URL}/1.0.0/approve",
        {"reason": "approved by key"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 403


def test_approving_enqueues_torchserve_packaging_after_commit(
    family, owner, approver, django_capture_on_commit_callbacks, monkeypatch
):
    packaged = []
    monkeypatch.setattr("apps.registry.services._enqueue_packaging", packaged.append)
    version = register(family, owner)
    services.version_validate(version=version, user=owner)
    with django_capture_on_commit_callbacks(execute=True):
        services.version_approve(version=version, user=approver, reason="ok")
    assert packaged == [version.pk]


def test_the_approval_queue_lists_validated_versions_of_others(family, owner, approver):
    version = register(family, owner)
    assert selectors.approval_queue(user=approver) == []
    services.version_validate(version=version, user=owner)
    assert selectors.approval_queue(user=approver) == [version]
    assert selectors.approval_queue(user=owner) == []


# --- Deployment, lifecycle and history --------------------------------------------------------


def _approved(family, owner, approver, number):
    version = register(family, owner, Registration(version=number))
    services.version_validate(version=version, user=owner)
    services.version_approve(version=version, user=approver, reason="ok")
    return version


def test_only_approved_versions_are_deployed_and_production_is_unique(
    family, owner, approver, monkeypatch
):
    monkeypatch.setattr("apps.registry.services._enqueue_packaging", lambda _id: None)
    draft = register(family, owner, Registration(version="0.9.0"))
    with pytest.raises(Conflict):
        services.version_deploy(version=draft, user=owner, target="production")
    v1 = _approved(family, owner, approver, "1.0.0")
    v2 = _approved(family, owner, approver, "2.0.0")
    services.version_deploy(version=v1, user=owner, target="production")
    services.version_deploy(version=v2, user=owner, target="staging")
    services.version_deploy(version=v2, user=owner, target="production")
    v1.refresh_from_db()
    assert (v1.status, v2.status) == (VersionStatus.APPROVED, VersionStatus.PRODUCTION)
    history = selectors.production_history(family=family)
    assert [(name, until is None) for name, _, until in history] == [
        ("1.0.0", False),
        ("2.0.0", True),
    ]
    assert history[0][2] <= history[1][1]


def test_the_production_history_is_served_by_the_api(
    family, owner, approver, owner_client, monkeypatch
):
    monkeypatch.setattr("apps.registry.services._enqueue_packaging", lambda _id: None)
    v1 = _approved(family, owner, approver, "1.0.0")
    services.version_deploy(version=v1, user=owner, target="production")
    spans = owner_client.get("/api/v1/registry/families/credit-risk/production-history").json()
    assert [s["version"] for s in spans] == ["1.0.0"]
    assert spans[0]["until"] is None
    detail = owner_client.get("/api/v1/registry/families/credit-risk").json()
    assert detail["production_version"] == "1.0.0"


@pytest.mark.parametrize("start", list(services.ALLOWED))
def test_every_transition_is_allowed_or_refused_as_the_lifecycle_says(family, owner, start):
    version = register(family, owner)
    for target in VersionStatus.values:
        ModelVersion.objects.filter(pk=version.pk).update(status=start)
        version.refresh_from_db()
        if target in services.ALLOWED[start]:
            services._transition(version, target, actor=owner, reason="test")
            assert version.status == target
        else:
            with pytest.raises(Conflict):
                services._transition(version, target, actor=owner)
    assert VersionTransition.objects.filter(version=version, reason="test").count() == len(
        services.ALLOWED[start]
    )


def test_a_business_user_cannot_see_or_change_versions(family, owner, make_user):
    register(family, owner)
    user = make_user(Role.BUSINESS_USER)
    client = Client()
    client.force_login(user)
    assert client.get(URL).status_code == 404
    services.family_grant(family=family, to=user, actions=[FamilyAction.VIEW])
    assert client.get(URL).status_code == 200
    assert client.post(f"{URL}/1.0.0/validate").status_code == 403


# --- Artifact integrity -----------------------------------------------------------------------


def test_a_tampered_artifact_is_refused_with_an_alert(family, owner):
    version = register(family, owner)
    assert load_version(version) is not None
    path = ArtifactStore().path(version.artifact_sha256)
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactTampered):
        load_version(version)
    alert = Alert.objects.get(kind="artifact_integrity")
    assert alert.severity == "critical"
    assert str(version) in alert.subject


def test_the_store_writes_atomically_and_by_content(tmp_path):
    import io

    store = ArtifactStore(tmp_path)
    first = store.put(io.BytesIO(b"abc"), max_bytes=10)
    second = store.put(io.BytesIO(b"abc"), max_bytes=10)
    assert first == second
    assert store.read_verified(first.sha256) == b"abc"
    assert not list(tmp_path.glob(".incoming-*"))


def test_records_of_processing_are_generated_for_compliance_only(
    family, owner, make_user, verified_client
):
    register(family, owner)
    officer = make_user(Role.COMPLIANCE_OFFICER)
    (record,) = verified_client(officer).get("/api/v1/registry/records-of-processing").json()
    assert record["family"] == "credit-risk"
    assert record["legal_basis"].startswith("Consent")
    assert record["personal_data_features"] == ["age", "sex"]
    assert verified_client(owner).get("/api/v1/registry/records-of-processing").status_code == 403


@pytest.mark.slow
def test_an_approved_version_is_packaged_for_torchserve_beside_its_artifact(
    family, owner, approver, monkeypatch
):
    import zipfile

    monkeypatch.setattr("apps.registry.services._enqueue_packaging", lambda _id: None)
    version = _approved(family, owner, approver, "1.0.0")
    services.version_package(version_id=version.pk)
    version.refresh_from_db()
    assert version.mar_sha256
    archive = ArtifactStore().read_verified(version.mar_sha256)
    import io

    names = zipfile.ZipFile(io.BytesIO(archive)).namelist()
    assert {"encoding.py", "architectures.py", "gatehouse_model.json"} <= {
        n.rsplit("/", 1)[-1] for n in names
    }
    again = services.version_package(version_id=version.pk)  # idempotent
    assert again.mar_sha256 == version.mar_sha256
