"""Prediction pages: the families a user may predict with, the form generated from the serving
signature, the result card, errors next to their fields, refusals as cards, own history."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from apps.inference.models import Decision, RoutingConfig
from apps.registry import services as registry_services
from apps.registry.permissions import FamilyAction
from gatehouse.roles import Role
from tests.factories import ModelFamilyFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("without_consent_check", "isolated_serving"),
]

HOME = "/predict/"
FORM = "/predict/credit-risk/"
HTMX = {"HTTP_HX_REQUEST": "true"}
VALID = {
    "income": "40",
    "age": "35",
    "housing": "rent",
    "sex": "female",
    "request-subject": "applicant-7",
    "request-purpose": "credit_scoring",
}


@pytest.fixture
def business_user(make_user, family):
    user = make_user(Role.BUSINESS_USER, username="clerk")
    registry_services.family_grant(
        family=family, to=user, actions=[FamilyAction.VIEW, FamilyAction.PREDICT]
    )
    return user


@pytest.fixture
def user_client(business_user):
    client = Client()
    client.force_login(business_user)
    return client


def _field(html: str, name: str) -> str:
    """The markup of the field block (label, input, help, errors) of ``name``."""
    match = re.search(
        rf'<div class="field[^"]*">(?:(?!<div class="field).)*?name="{re.escape(name)}".*?'
        rf'(?=<div class="field|</fieldset>)',
        html,
        re.S,
    )
    assert match, f"no field {name}"
    return match.group(0)


def test_the_list_shows_only_the_families_the_user_may_predict_with(
    user_client, business_user, family, v1
):
    view_only = ModelFamilyFactory(slug="digits", name="Digits")
    registry_services.family_grant(family=view_only, to=business_user, actions=[FamilyAction.VIEW])
    ModelFamilyFactory(slug="churn", name="Churn")

    response = user_client.get(HOME)
    assert response.status_code == 200
    html = response.content.decode()
    assert FORM in html
    assert "v1.0.0" in html
    assert "/predict/digits/" not in html
    assert "/predict/churn/" not in html


def test_the_list_says_when_a_family_is_not_serving(user_client, family, v1):
    RoutingConfig.objects.create(family=family, suspended=True, suspended_reason="incident 42")
    html = user_client.get(HOME).content.decode()
    assert "not serving" in html
    assert "incident 42" in html


def test_the_predict_item_is_in_the_navigation_of_business_users(user_client, v1):
    html = user_client.get("/").content.decode()
    assert f'href="{HOME}"' in html


def test_the_form_has_an_input_per_feature_with_its_range_and_choices(user_client, v1):
    response = user_client.get(FORM)
    assert response.status_code == 200
    html = response.content.decode()
    income = _field(html, "income")
    assert 'type="number"' in income
    assert 'min="0"' in income
    assert 'max="200"' in income
    assert 'step="any"' in income
    assert "kEUR" in income
    age = _field(html, "age")
    assert 'min="18"' in age
    assert 'max="90"' in age
    assert 'step="1"' in age
    assert "years" in age
    housing = _field(html, "housing")
    assert "<select" in housing
    assert all(f'value="{v}"' in housing for v in ("own", "rent", "free"))
    sex = _field(html, "sex")
    assert 'value="female"' in sex
    assert 'value="male"' in sex
    subject = _field(html, "request-subject")
    assert "required" in subject
    assert "credit_scoring" in subject
    assert 'value="credit_scoring"' in _field(html, "request-purpose")
    assert 'hx-post="/predict/credit-risk/"' in html


def test_a_feature_that_is_not_a_model_input_is_optional_and_says_why():
    from apps.inference.forms import FeatureForm
    from tests.registry_models import SIGNATURE

    signature = {
        **SIGNATURE,
        "features": [
            {**f, "model_input": False} if f["name"] in ("sex", "age") else f
            for f in SIGNATURE["features"]
        ],
    }
    form = FeatureForm({"income": "40", "housing": "own", "sex": ""}, signature=signature)
    assert not form.fields["sex"].required
    assert not form.fields["age"].required
    assert form.fields["housing"].required
    assert "not used by the model" in form.fields["sex"].help_text
    assert 'value=""' in str(form["sex"])
    assert "Not given" in str(form["sex"])
    assert form.is_valid(), form.errors
    assert form.row() == {"income": 40.0, "housing": "own"}


def test_a_valid_post_returns_a_result_card_and_records_one_decision(
    user_client, business_user, v1
):
    response = user_client.post(FORM, VALID, **HTMX)
    assert response.status_code == 200, response.content
    html = response.content.decode()
    decision = Decision.objects.get()
    assert decision.actor_user == business_user
    assert decision.version == v1
    assert decision.purpose == "credit_scoring"
    assert decision.subject_pseudonym
    assert decision.request_id
    assert decision.request_id == response["X-Request-ID"]
    assert f"Prediction: <strong>{decision.label}</strong>" in html
    assert str(decision.id) in html
    assert "v1.0.0" in html
    assert "production" in html
    assert html.count("<meter") == 2
    assert "%" in html
    assert f"/compliance/decisions/{decision.id}/explanation/" in html  # "Why this result?"
    # The entered values stay in the form (swapped out of band), and the history is refreshed.
    fields = re.search(
        r'<div id="predict-fields" hx-swap-oob="true">.*?</fieldset>\s*</div>', html, re.S
    )
    assert fields
    assert 'value="40"' in fields.group(0)
    assert 'value="applicant-7"' in fields.group(0)
    assert 'value="rent" selected' in fields.group(0)
    history = re.search(
        r'<section id="decision-history"[^>]*hx-swap-oob="true".*?</section>', html, re.S
    )
    assert history
    assert str(decision.id) in history.group(0)


def test_a_full_page_post_works_without_htmx(user_client, v1):
    response = user_client.post(FORM, VALID)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" in html
    assert "Prediction:" in html
    assert 'value="40"' in html
    assert Decision.objects.count() == 1


def test_a_double_submission_records_one_decision(user_client, v1):
    html = user_client.get(FORM).content.decode()
    token = re.search(r'name="request-token" value="([^"]+)"', html).group(1)
    first = user_client.post(FORM, {**VALID, "request-token": token}, **HTMX)
    again = user_client.post(FORM, {**VALID, "request-token": token}, **HTMX)
    assert first.status_code == again.status_code == 200
    assert Decision.objects.count() == 1
    assert str(Decision.objects.get().id) in again.content.decode()
    # After a prediction the form carries a fresh token: a tweak and resubmit is a new request.
    new_token = re.search(r'name="request-token" value="([^"]+)"', first.content.decode())
    assert new_token.group(1) != token


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"income": "-5"}, "income", "Must be at least 0."),
        ({"income": "lots"}, "income", "Enter a number."),
        ({"age": "30.5"}, "age", "Enter a whole number."),
        ({"housing": "castle"}, "housing", "Select a valid choice."),
        ({"request-subject": ""}, "request-subject", "This field is required."),
    ],
)
def test_an_invalid_value_gets_422_with_the_error_next_to_the_field(
    user_client, v1, changes, field, message
):
    response = user_client.post(FORM, {**VALID, **changes}, **HTMX)
    assert response.status_code == 422
    html = response.content.decode()
    block = _field(html, field)
    assert 'class="field invalid"' in block
    assert message in block
    assert Decision.objects.count() == 0
    assert 'value="applicant-7"' in html or field == "request-subject"


def test_service_errors_map_back_to_their_fields(user_client, family, v1, monkeypatch):
    from apps.inference import services
    from gatehouse.errors import ValidationFailed

    def refuse(**_kwargs):
        raise ValidationFailed(
            "Invalid.",
            errors=[
                {"field": "rows.0.age", "message": "must be at most 90"},
                {"field": "subject", "message": "is not known"},
                {"field": "rows", "message": "something else"},
            ],
        )

    monkeypatch.setattr(services, "predict", refuse)
    response = user_client.post(FORM, VALID, **HTMX)
    assert response.status_code == 422
    html = response.content.decode()
    assert "Must be at most 90." in _field(html, "age")
    assert "Is not known." in _field(html, "request-subject")
    assert "rows: Something else." in html


def test_a_suspended_family_shows_the_reason_with_503_and_records_nothing(user_client, family, v1):
    RoutingConfig.objects.create(family=family, suspended=True, suspended_reason="incident 42")
    page = user_client.get(FORM)
    assert page.status_code == 200
    assert "This model is suspended: incident 42." in page.content.decode()

    for extra in (HTMX, {}):
        response = user_client.post(FORM, VALID, **extra)
        assert response.status_code == 503
        assert "This model is suspended: incident 42." in response.content.decode()
        assert int(response["Retry-After"]) > 0
    assert Decision.objects.count() == 0


def test_a_policy_refusal_shows_a_403_card(user_client, v1):
    from apps.inference import policy
    from gatehouse.errors import PermissionDenied

    def no_consent(_context):
        raise PermissionDenied("No consent recorded for this subject.", code="consent_required")

    policy.register_check(no_consent)
    try:
        response = user_client.post(FORM, VALID, **HTMX)
    finally:
        policy.unregister_check(no_consent)
    assert response.status_code == 403
    html = response.content.decode()
    assert "Not allowed" in html
    assert "No consent recorded for this subject." in html
    assert Decision.objects.count() == 0


def test_a_family_without_a_production_version_says_so(user_client, family):
    response = user_client.get(FORM)
    assert response.status_code == 200
    html = response.content.decode()
    assert "no version in production" in html
    assert f'hx-post="{FORM}"' not in html
    posted = user_client.post(FORM, VALID, **HTMX)
    assert posted.status_code == 503
    assert "no version in production" in posted.content.decode()
    assert Decision.objects.count() == 0


def test_a_user_without_predict_rights_gets_404(make_user, family, v1):
    stranger = make_user(Role.BUSINESS_USER, username="stranger")
    viewer = make_user(Role.BUSINESS_USER, username="viewer")
    registry_services.family_grant(family=family, to=viewer, actions=[FamilyAction.VIEW])
    for user in (stranger, viewer):
        client = Client()
        client.force_login(user)
        assert client.get(FORM).status_code == 404
        assert client.post(FORM, VALID, **HTMX).status_code == 404
    assert Decision.objects.count() == 0


def test_the_pages_need_a_sign_in(client, v1):
    assert client.get(HOME).status_code == 302
    assert client.post(FORM, VALID).status_code == 302


def test_the_history_lists_the_users_own_decisions_only(
    user_client, business_user, make_user, family, v1
):
    other = make_user(Role.BUSINESS_USER, username="other")
    registry_services.family_grant(
        family=family, to=other, actions=[FamilyAction.VIEW, FamilyAction.PREDICT]
    )
    other_client = Client()
    other_client.force_login(other)
    assert other_client.post(FORM, VALID, **HTMX).status_code == 200
    assert user_client.post(FORM, VALID, **HTMX).status_code == 200
    mine = Decision.objects.get(actor_user=business_user)
    theirs = Decision.objects.get(actor_user=other)

    for url in (FORM, HOME):
        html = user_client.get(url).content.decode()
        history = re.search(r'<section id="decision-history".*?</section>', html, re.S).group(0)
        assert str(mine.id) in history
        assert str(theirs.id) not in history


def test_the_result_card_says_the_decision_is_logged_and_links_its_receipt(
    user_client, make_user, family, v1
):
    from gatehouse.tlog import signing
    from gatehouse.tlog.sequencer import Sequencer
    from gatehouse.tlog.verify import verify_receipt

    response = user_client.post(FORM, VALID, **HTMX)
    assert response.status_code == 200, response.content
    html = response.content.decode()
    decision = Decision.objects.get()
    receipt_url = f"/predict/decisions/{decision.id}/receipt.json"
    card = re.search(r'<section class="card result".*?</section>', html, re.S).group(0)
    logged = re.search(r'<p class="logged">.*?</p>', card, re.S).group(0)
    assert "Logged" in logged
    assert f'href="{receipt_url}"' in logged
    assert "Download receipt" in logged
    assert "python -m gatehouse.tlog.verify" in card
    assert 'href="/predict/log/public-key.txt"' in card
    history = re.search(r'<section id="decision-history".*?</section>', html, re.S).group(0)
    assert f'href="{receipt_url}"' in history

    # While pending the download is the signed promise alone; the leaf hash is the card's.
    pending = user_client.get(receipt_url)
    assert pending.status_code == 200
    assert pending["Content-Type"] == "application/json"
    assert pending["Content-Disposition"] == f'attachment; filename="receipt-{decision.id}.json"'
    body = pending.json()
    assert body["record_id"] == str(decision.id)
    assert body["status"] == "pending"
    assert body["leaf_hash"][:12] in logged
    keys = signing.verifier_keys()
    assert not verify_receipt(body, keys).integrated

    Sequencer().drain()
    integrated = user_client.get(receipt_url).json()
    assert integrated["status"] == "integrated"
    assert verify_receipt(integrated, keys).integrated
    key_file = user_client.get("/predict/log/public-key.txt")
    assert key_file.status_code == 200
    assert key_file.content.decode().splitlines()[0] == keys[0].text()

    other = make_user(Role.BUSINESS_USER, username="other")
    registry_services.family_grant(
        family=family, to=other, actions=[FamilyAction.VIEW, FamilyAction.PREDICT]
    )
    other_client = Client()
    other_client.force_login(other)
    assert other_client.get(receipt_url).status_code == 404
    assert other_client.get("/predict/decisions/not-a-uuid/receipt.json").status_code == 404
    assert Client().get(receipt_url).status_code == 302  # sign-in first
