"""Registry pages: family list and page, version page, registration form, lifecycle action
forms (validate, four-eyes approval with a second factor, deploy, retire) and the approval
queue; each page scoped to what the user may see."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.registry import services
from apps.registry.models import ModelVersion, VersionStatus
from apps.registry.permissions import FamilyAction
from apps.registry.schemas import VersionMetadata
from gatehouse.roles import Role
from tests.registry_models import Registration, state_dict_bytes, validation_csv

pytestmark = pytest.mark.django_db

FAMILY = "/registry/families/credit-risk/"
VERSION = f"{FAMILY}versions/1.0.0/"
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _artifact_store(settings, tmp_path):
    settings.ARTIFACT_STORE_DIR = tmp_path / "artifacts"


@pytest.fixture(autouse=True)
def _no_packaging(monkeypatch):
    monkeypatch.setattr("apps.registry.services._enqueue_packaging", lambda _id: None)


@pytest.fixture
def approver_client(approver, verified_client):
    return verified_client(approver)


@pytest.fixture
def viewer_client(make_user, family):
    """A business user who may view (and predict with) the family, nothing more."""
    user = make_user(Role.BUSINESS_USER, username="viewer")
    services.family_grant(family=family, to=user, actions=[FamilyAction.VIEW, FamilyAction.PREDICT])
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def outsider_client(make_user):
    """A model owner without any right on the family."""
    client = Client()
    client.force_login(make_user(Role.MODEL_OWNER, username="outsider"))
    return client


def register(family, owner, number="1.0.0", **kwargs: Any) -> ModelVersion:
    reg = Registration(version=number, **kwargs)
    return services.version_register(
        family=family,
        user=owner,
        metadata=VersionMetadata.model_validate(reg.metadata()),
        artifact=io.BytesIO(state_dict_bytes()),
        validation=io.BytesIO(validation_csv()),
    )


def validated(family, owner, number="1.0.0") -> ModelVersion:
    version = register(family, owner, number)
    services.version_validate(version=version, user=owner)
    version.refresh_from_db()
    assert version.status == VersionStatus.VALIDATED
    return version


def approved(family, owner, approver, number="1.0.0") -> ModelVersion:
    version = validated(family, owner, number)
    return services.version_approve(version=version, user=approver, reason="ok")


def form_data(
    reg: Registration | None = None,
    artifact: bytes | None = None,
    validation: bytes | None = None,
    **override: Any,
) -> dict[str, Any]:
    meta = (reg or Registration()).metadata()
    data = {
        "version": meta["version"],
        "framework": meta["framework"],
        "architecture": meta["architecture"],
        "architecture_kwargs": json.dumps(meta["architecture_kwargs"]),
        "signature": json.dumps(meta["signature"]),
        "description": "A test version.",
        "intended_use": meta.get("intended_use", ""),
        "limitations": meta.get("limitations", ""),
        "ethical_considerations": meta.get("ethical_considerations", ""),
        "dataset_name": meta["dataset_name"],
        "dataset_version": meta["dataset_version"],
        "dataset_sha256": "",
        "training_subject_refs": "\n".join(meta["training_subject_refs"]),
        "artifact": SimpleUploadedFile("model.pt", artifact or state_dict_bytes()),
        "validation": SimpleUploadedFile("validation.csv", validation or validation_csv()),
    }
    data.update(override)
    return data


def status_of(number: str = "1.0.0") -> str:
    return ModelVersion.objects.get(version=number).status


# --- Family list and page ---------------------------------------------------------------------


def test_the_family_list_shows_only_permitted_families_with_their_state(
    owner_client, viewer_client, family, owner, approver, other_family, make_user
):
    approved(family, owner, approver, "1.0.0")
    services.version_deploy(
        version=ModelVersion.objects.get(version="1.0.0"), user=owner, target="production"
    )
    validated(family, owner, "1.1.0")

    page = owner_client.get("/registry/families/").content.decode()
    assert 'href="/registry/families/credit-risk/"' in page
    assert "digits" not in page  # other_family: no rights on it
    assert "High" in page
    assert "v1.0.0" in page
    assert "<td>1</td>" in page  # one version awaiting approval
    assert 'href="/registry/families/credit-risk/register/"' in page

    page = viewer_client.get("/registry/families/").content.decode()
    assert "credit-risk" in page
    assert "Register a version" not in page

    nobody = Client()
    nobody.force_login(make_user(Role.BUSINESS_USER))
    page = nobody.get("/registry/families/").content.decode()
    assert "credit-risk" not in page
    assert "No model family has been shared with you." in page


def test_the_family_page_shows_compliance_versions_and_rights(
    owner_client, viewer_client, outsider_client, family, owner, approver
):
    register(family, owner)
    response = owner_client.get(FAMILY)
    assert response.status_code == 200
    page = response.content.decode()
    for text in ("credit scoring", "Consent (6(1)(a))", "credit_scoring", "365 days", "v1.0.0"):
        assert text in page
    assert "<caption>Who can do what</caption>" in page
    assert "approver" in page  # holds approve on the family
    assert "Register a version" in page

    page = viewer_client.get(FAMILY).content.decode()
    assert "v1.0.0" in page
    assert "Who can do what" not in page  # neither manage nor approve
    assert "Register a version" not in page

    assert outsider_client.get(FAMILY).status_code == 404
    assert owner_client.get("/registry/families/nope/").status_code == 404


def test_the_family_page_lists_the_production_history(owner_client, family, owner, approver):
    version = approved(family, owner, approver)
    services.version_deploy(version=version, user=owner, target="production")
    page = owner_client.get(FAMILY).content.decode()
    history = page[page.index("Production history") :]
    assert "v1.0.0" in history
    assert "<strong>now</strong>" in history


# --- Version page -----------------------------------------------------------------------------


def test_the_version_page_shows_signature_metrics_gates_lineage_and_history(
    viewer_client, outsider_client, owner_client, family, owner
):
    version = validated(family, owner)
    response = viewer_client.get(VERSION)
    assert response.status_code == 200
    page = response.content.decode()
    for text in (
        "<code>income</code>",
        "own, rent, free",
        "kEUR",
        "<code>bad</code> (positive)",
        "accuracy",
        "demographic parity difference",
        "By protected feature <code>sex</code>",
        "metric accuracy",
        'class="badge pass"',
        version.artifact_sha256,
        "synthetic-credit",
        "Training data subjects</dt><dd>2",
        "built once the version is approved",
        "Registered",
        "Validated",
        "all promotion gates passed",
    ):
        assert text in page, text
    assert "subject-1" not in page  # lineage keeps a count, never the subjects
    assert "No action is open to you" in page  # a viewer may do nothing here
    assert "your rights on this family (view, predict)" in page  # not the status
    assert "while it is validated" not in page
    assert outsider_client.get(VERSION).status_code == 404
    assert owner_client.get(f"{FAMILY}versions/9.9.9/").status_code == 404


def test_the_version_page_compares_metrics_with_the_previous_version(owner_client, family, owner):
    register(family, owner, "1.0.0")
    register(family, owner, "1.1.0")
    page = owner_client.get(f"{FAMILY}versions/1.1.0/").content.decode()
    assert "beside the previous version v1.0.0" in page
    assert "Difference" in page
    page = owner_client.get(VERSION).content.decode()
    assert "beside the previous version" not in page


def test_an_approved_version_without_archive_is_being_packaged(
    owner_client, family, owner, approver
):
    approved(family, owner, approver)
    page = owner_client.get(VERSION).content.decode()
    assert "being packaged" in page


# --- Registration form ------------------------------------------------------------------------


def test_a_model_owner_registers_a_version_through_the_form(owner_client, family):
    assert owner_client.get(f"{FAMILY}register/").status_code == 200
    response = owner_client.post(f"{FAMILY}register/", form_data())
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == VERSION
    version = ModelVersion.objects.get()
    assert (version.status, version.training_subject_count) == (VersionStatus.REGISTERED, 2)
    assert version.metrics["overall"]["accuracy"] > 0.7


def test_bad_signature_json_is_shown_on_its_field_with_422(owner_client, family, settings):
    response = owner_client.post(f"{FAMILY}register/", form_data(signature="{not json"))
    assert response.status_code == 422
    assert "Not valid JSON" in response.content.decode()
    assert ModelVersion.objects.count() == 0


def test_a_signature_the_schema_refuses_is_shown_with_its_path(owner_client, family):
    reg = Registration()
    reg.signature["features"][0]["type"] = "complex"
    response = owner_client.post(f"{FAMILY}register/", form_data(reg))
    assert response.status_code == 422
    form = response.context["form"]
    assert any(e.startswith("features.0.type:") for e in form.errors["signature"])
    assert ModelVersion.objects.count() == 0


def test_a_bad_version_number_is_shown_on_its_field(owner_client, family):
    response = owner_client.post(f"{FAMILY}register/", form_data(version="one"))
    assert response.status_code == 422
    assert response.context["form"].errors["version"] == [
        "must be a semantic version such as 1.2.0"
    ]


def test_patterns_are_explained_in_words_not_regular_expressions(owner_client, family):
    response = owner_client.post(
        f"{FAMILY}register/", form_data(version="abc", dataset_sha256="XYZ")
    )
    assert response.status_code == 422
    errors = response.context["form"].errors
    assert errors["version"] == ["must be a semantic version such as 1.2.0"]
    assert errors["dataset_sha256"] == ["must be 64 lowercase hex characters (a SHA-256)"]
    page = response.content.decode()
    assert "should match pattern" not in page
    assert "[1-9]" not in page


def test_metadata_errors_show_in_one_round_even_without_the_files(owner_client, family):
    data = form_data(version="abc", dataset_sha256="XYZ", signature="{not json")
    del data["artifact"], data["validation"]
    response = owner_client.post(f"{FAMILY}register/", data)
    assert response.status_code == 422
    errors = response.context["form"].errors
    assert set(errors) == {"version", "dataset_sha256", "signature", "artifact", "validation"}
    assert errors["version"] == ["must be a semantic version such as 1.2.0"]
    assert errors["signature"][0].startswith("Not valid JSON")  # one message, no "required"
    assert len(errors["signature"]) == 1
    assert "Choose the files again: browsers do not keep them" in response.content.decode()
    assert ModelVersion.objects.count() == 0


def test_the_file_hint_appears_only_after_an_error(owner_client, family):
    page = owner_client.get(f"{FAMILY}register/").content.decode()
    assert "Choose the files again" not in page
    response = owner_client.post(f"{FAMILY}register/", form_data(version="one"))
    assert "Choose the files again: browsers do not keep them" in response.content.decode()


def test_the_form_defaults_agree_and_the_architecture_follows_the_framework(owner_client, family):
    form = owner_client.get(f"{FAMILY}register/").context["form"]
    assert (form["framework"].value(), form["architecture"].value()) == (
        "torch_state_dict",
        "logistic_regression",
    )
    assert "state_dict" in form.fields["architecture"].help_text
    response = owner_client.post(f"{FAMILY}register/", form_data(architecture=""))
    assert response.status_code == 422
    assert "Choose the architecture" in response.context["form"].errors["architecture"][0]
    response = owner_client.post(f"{FAMILY}register/", form_data(framework="torchscript"))
    assert response.status_code == 422
    assert "Choose none for TorchScript" in response.context["form"].errors["architecture"][0]
    assert ModelVersion.objects.count() == 0


def test_a_file_that_is_not_a_model_is_shown_on_the_artifact_field(owner_client, family, settings):
    response = owner_client.post(f"{FAMILY}register/", form_data(artifact=b"not a model"))
    assert response.status_code == 422
    errors = response.context["form"].errors
    assert "artifact" in errors, errors
    assert errors["artifact"] == ["is not a torch state_dict (torch.save of model.state_dict())"]
    page = response.content.decode()
    for internal in ("Error", "PytorchStreamReader", "weights_only", "miniz"):
        assert internal not in page, internal
    assert ModelVersion.objects.count() == 0
    root = settings.ARTIFACT_STORE_DIR
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]


def test_artifact_errors_are_short_and_the_cause_is_logged(owner_client, family, caplog):
    from apps.registry.architectures import LogisticRegression

    caplog.set_level("INFO", logger="apps.registry.loading")
    response = owner_client.post(
        f"{FAMILY}register/",
        form_data(framework="torchscript", architecture="", artifact=b"not a model"),
    )
    assert response.status_code == 422
    assert response.context["form"].errors["artifact"] == ["is not a TorchScript archive"]
    assert "PytorchStreamReader" in caplog.text  # the technical detail, for the logs
    assert "not a model" not in caplog.text  # never the data

    wrong_width = state_dict_bytes(LogisticRegression(n_inputs=9))
    response = owner_client.post(f"{FAMILY}register/", form_data(artifact=wrong_width))
    assert response.status_code == 422
    (message,) = response.context["form"].errors["artifact"]
    assert message.startswith("does not match architecture logistic_regression with these kwargs:")
    assert "linear.weight (2x9 instead of 2x7)" in message
    assert "RuntimeError" not in message


def test_a_duplicate_version_is_shown_on_the_version_field(owner_client, family, owner):
    register(family, owner)
    response = owner_client.post(f"{FAMILY}register/", form_data())
    assert response.status_code == 409
    assert "version" in response.context["form"].errors


def test_only_model_owners_with_manage_may_open_the_form(
    viewer_client, outsider_client, make_user, family
):
    assert viewer_client.get(f"{FAMILY}register/").status_code == 403  # not a model owner
    assert outsider_client.get(f"{FAMILY}register/").status_code == 404  # cannot see it
    owner_without_manage = make_user(Role.MODEL_OWNER)
    services.family_grant(family=family, to=owner_without_manage, actions=[FamilyAction.VIEW])
    client = Client()
    client.force_login(owner_without_manage)
    assert client.get(f"{FAMILY}register/").status_code == 403
    assert client.post(f"{FAMILY}register/", form_data()).status_code == 403
    assert ModelVersion.objects.count() == 0


# --- Lifecycle actions ------------------------------------------------------------------------


def test_validate_through_the_form(owner_client, family, owner):
    register(family, owner)
    page = owner_client.get(VERSION).content.decode()
    assert f'action="{VERSION}validate/"' in page
    response = owner_client.post(f"{VERSION}validate/")
    assert response.status_code == 302
    assert status_of() == VersionStatus.VALIDATED
    assert "All " in owner_client.get(VERSION).content.decode()  # the message is shown


def test_an_htmx_post_returns_the_partial(owner_client, family, owner):
    register(family, owner)
    response = owner_client.post(f"{VERSION}validate/", **HTMX)
    assert response.status_code == 200
    page = response.content.decode()
    assert "<html" not in page
    assert page.lstrip().startswith('<div id="version-detail">')
    assert "gates passed; the version is validated" in page
    assert status_of() == VersionStatus.VALIDATED


def test_an_htmx_post_refused_by_a_service_returns_the_actions_panel_with_its_status(
    owner_client, family, owner
):
    register(family, owner)
    response = owner_client.post(f"{VERSION}deploy/", {"deploy-target": "production"}, **HTMX)
    assert response.status_code == 409
    page = response.content.decode()
    assert "<html" not in page
    assert page.lstrip().startswith('<section id="actions"')
    assert "Only approved versions can be deployed" in page
    assert response["HX-Retarget"] == "#actions"


def test_a_verified_approver_approves_with_a_reason(approver_client, family, owner, approver):
    validated(family, owner)
    page = approver_client.get(VERSION).content.decode()
    assert f'action="{VERSION}approve/"' in page
    response = approver_client.post(f"{VERSION}approve/", {"approve-reason": ""})
    assert response.status_code == 422
    page = response.content.decode()
    assert page.count("A written reason is required.") == 1  # once, on the field
    assert "reason:" not in page
    assert "This field is required." not in page
    assert status_of() == VersionStatus.VALIDATED
    response = approver_client.post(f"{VERSION}approve/", {"approve-reason": "within policy"})
    assert response.status_code == 302
    version = ModelVersion.objects.get()
    assert version.status == VersionStatus.APPROVED
    last = version.transitions.last()
    assert (last.actor, last.reason) == (approver, "within policy")


def test_an_empty_reason_is_shown_once_on_its_field_in_the_htmx_panel(
    approver_client, owner_client, family, owner, approver
):
    validated(family, owner)
    response = approver_client.post(f"{VERSION}reject/", {"reject-reason": "  "}, **HTMX)
    assert response.status_code == 422
    page = response.content.decode()
    assert page.lstrip().startswith('<section id="actions"')
    assert page.count("A written reason is required.") == 1
    assert 'id="id_reject-reason_error"' in page
    assert 'class="errors"' not in page
    assert status_of() == VersionStatus.VALIDATED

    services.version_approve(
        version=ModelVersion.objects.get(), user=approver, reason="within policy"
    )
    response = owner_client.post(f"{VERSION}retire/", {"retire-reason": ""})
    assert response.status_code == 422
    page = response.content.decode()
    assert page.count("A written reason is required.") == 1
    assert "reason:" not in page


def test_a_verified_approver_rejects_with_a_reason(approver_client, family, owner):
    validated(family, owner)
    response = approver_client.post(f"{VERSION}reject/", {"reject-reason": "bias too high"})
    assert response.status_code == 302
    assert status_of() == VersionStatus.REJECTED


def test_an_approver_without_a_verified_session_is_refused(
    family, owner, approver, make_user, totp_device
):
    validated(family, owner)
    # Approvers owe a second factor before using anything (middleware).
    plain = Client()
    plain.force_login(approver)
    totp_device(approver)
    response = plain.post(f"{VERSION}approve/", {"approve-reason": "ok"})
    assert response.status_code == 302
    assert response["Location"].startswith("/account/2fa/verify/")
    # A model owner granted approve, session not verified: told why, nothing changes.
    colleague = make_user(Role.MODEL_OWNER, username="colleague")
    services.family_grant(
        family=family, to=colleague, actions=[FamilyAction.VIEW, FamilyAction.APPROVE]
    )
    client = Client()
    client.force_login(colleague)
    page = client.get(VERSION).content.decode()
    assert "Verify your session" in page
    assert f'action="{VERSION}approve/"' not in page
    response = client.post(f"{VERSION}approve/", {"approve-reason": "ok"})
    assert response.status_code == 403
    assert "second factor" in response.content.decode()
    assert status_of() == VersionStatus.VALIDATED


def test_the_registrant_is_refused_by_the_four_eyes_rule(family, owner, verified_client):
    services.family_grant(family=family, to=owner, actions=[FamilyAction.APPROVE])
    validated(family, owner)
    client = verified_client(owner)
    page = client.get(VERSION).content.decode()
    assert "four-eyes rule" in page
    response = client.post(f"{VERSION}approve/", {"approve-reason": "mine"})
    assert response.status_code == 403
    assert "Four-eyes rule" in response.content.decode()
    assert status_of() == VersionStatus.VALIDATED


def test_a_user_without_approve_right_is_refused(owner_client, family, owner):
    validated(family, owner)
    response = owner_client.post(f"{VERSION}approve/", {"approve-reason": "ok"})
    assert response.status_code == 403
    assert status_of() == VersionStatus.VALIDATED


def test_deploy_and_retire_through_the_forms(owner_client, family, owner, approver):
    approved(family, owner, approver)
    page = owner_client.get(VERSION).content.decode()
    assert "Deploy to staging" in page
    assert "Deploy to production" in page
    assert owner_client.post(f"{VERSION}deploy/", {"deploy-target": "staging"}).status_code == 302
    assert status_of() == VersionStatus.STAGING
    response = owner_client.post(f"{VERSION}deploy/", {"deploy-target": "production"})
    assert response.status_code == 302
    assert status_of() == VersionStatus.PRODUCTION
    response = owner_client.post(f"{VERSION}deploy/", {"deploy-target": "moon"})
    assert response.status_code == 422
    response = owner_client.post(f"{VERSION}retire/", {"retire-reason": ""})
    assert response.status_code == 422
    assert status_of() == VersionStatus.PRODUCTION
    response = owner_client.post(f"{VERSION}retire/", {"retire-reason": "superseded"})
    assert response.status_code == 302
    assert status_of() == VersionStatus.RETIRED
    page = owner_client.get(VERSION).content.decode()
    assert "superseded" in page
    assert "No action is open to you" in page


def test_actions_on_an_invisible_version_are_404_and_on_a_visible_one_403(
    outsider_client, viewer_client, family, owner
):
    register(family, owner)
    assert outsider_client.post(f"{VERSION}validate/").status_code == 404
    assert viewer_client.post(f"{VERSION}validate/").status_code == 403
    assert viewer_client.post(f"{VERSION}retire/", {"retire-reason": "no"}).status_code == 403
    assert status_of() == VersionStatus.REGISTERED


def test_an_action_refused_by_the_lifecycle_is_shown_with_409(owner_client, family, owner):
    register(family, owner)
    response = owner_client.post(f"{VERSION}deploy/", {"deploy-target": "staging"})
    assert response.status_code == 409
    page = response.content.decode()
    assert "<html" in page
    assert "Only approved versions can be deployed" in page


# --- Approval queue ---------------------------------------------------------------------------


def test_the_approval_queue_lists_validated_versions_for_approvers(
    approver_client, viewer_client, family, owner
):
    register(family, owner, "0.9.0")  # registered only: not awaiting approval
    validated(family, owner, "1.0.0")
    response = approver_client.get("/registry/approvals/")
    assert response.status_code == 200
    page = response.content.decode()
    assert f'href="{VERSION}"' in page
    assert "0.9.0" not in page
    assert "<td>owner</td>" in page  # the registrant
    passed, total = re.search(r'class="badge pass">(\d+)/(\d+)<', page).groups()
    assert passed == total
    assert int(total) > 1
    assert 'href="/registry/approvals/"' in page  # the nav item
    home = approver_client.get("/").content.decode()
    assert "Approvals" in home

    assert viewer_client.get("/registry/approvals/").status_code == 403
    assert 'href="/registry/approvals/"' not in viewer_client.get("/").content.decode()
