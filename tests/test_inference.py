"""The predict path: validation, routing (canary, kill-switch, jurisdiction), idempotency,
decision records, outcomes, access to decisions."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from apps.inference import policy
from apps.inference.models import Decision, RoutingConfig
from apps.inference.routing import bucket
from apps.registry.models import VersionStatus
from gatehouse import services as platform_services
from gatehouse.errors import PermissionDenied, ValidationFailed
from gatehouse.roles import Role
from tests.registry_models import Registration, register, serve

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("without_consent_check", "isolated_serving"),
]

URL = "/api/v1/models/credit-risk/predict"
ROW = {"income": 40.0, "age": 35, "housing": "rent", "sex": "female"}


@pytest.fixture
def caller(api_key, v1):
    user, raw = api_key()
    return user, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def predict(client, headers, body=None, **extra):
    payload = {"rows": [ROW], "subject": "applicant-7", **(body or {})}
    return client.post(
        URL, json.dumps(payload), content_type="application/json", **headers, **extra
    )


def test_a_prediction_is_served_and_recorded_before_the_reply(client, caller, v1):
    response = predict(client, caller[1])
    assert response.status_code == 200, response.content
    (row,) = response.json()["predictions"]
    assert row["label"] in {"good", "bad"}
    assert abs(sum(row["scores"].values()) - 1) < 1e-4
    assert (row["model_version"], row["route"]) == ("1.0.0", "production")
    decision = Decision.objects.get(pk=row["decision_id"])
    assert decision.artifact_sha256 == v1.artifact_sha256
    assert decision.request_id == response["X-Request-ID"]
    assert decision.subject_pseudonym
    assert "applicant-7" not in json.dumps(decision.inputs)
    assert decision.api_key_id is not None


def test_the_description_tells_a_client_how_to_build_a_request(client, caller):
    body = client.get("/api/v1/models/credit-risk", **caller[1]).json()
    assert body["serving_version"] == "1.0.0"
    assert body["subject_required"] is True
    assert [f["name"] for f in body["features"]] == ["income", "age", "housing", "sex"]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({**ROW, "income": "lots"}, "rows.0.income"),
        ({k: v for k, v in ROW.items() if k != "age"}, "rows.0.age"),
        ({**ROW, "extra": 1}, "rows.0.extra"),
        ({**ROW, "income": 1e9}, "rows.0.income"),
        ({**ROW, "housing": "castle"}, "rows.0.housing"),
        ({**ROW, "age": 30.5}, "rows.0.age"),
    ],
)
def test_bad_rows_get_422_naming_the_field_and_nothing_is_recorded(client, caller, row, field):
    response = predict(client, caller[1], {"rows": [row]})
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]
    assert Decision.objects.count() == 0


def test_nan_and_infinity_are_refused(client, caller):
    body = '{"rows": [{"income": NaN, "age": 30, "housing": "own", "sex": "male"}], "subject": "s"}'
    response = client.post(URL, body, content_type="application/json", **caller[1])
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "rows.0.income"


def test_too_many_rows_get_413(client, caller, family):
    RoutingConfig.objects.update_or_create(family=family, defaults={"max_rows": 2})
    response = predict(client, caller[1], {"rows": [ROW] * 3})
    assert response.status_code == 413
    assert Decision.objects.count() == 0


def test_a_body_over_the_limit_gets_413(client, caller, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = predict(client, caller[1], {"rows": [ROW] * 50})
    assert response.status_code == 413


def test_the_subject_is_required_when_the_family_needs_consent(client, caller):
    response = predict(client, caller[1], {"subject": ""})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "subject"


def test_an_idempotent_retry_returns_the_same_reply_and_records_once(client, caller):
    first = predict(client, caller[1], HTTP_IDEMPOTENCY_KEY="retry-1")
    again = predict(client, caller[1], HTTP_IDEMPOTENCY_KEY="retry-1")
    assert first.json() == again.json()
    assert Decision.objects.count() == 1
    other = predict(client, caller[1], {"subject": "someone else"}, HTTP_IDEMPOTENCY_KEY="retry-1")
    assert other.status_code == 409


def test_the_kill_switch_answers_503_and_records_nothing(client, caller, family, verified_client):
    owner_client = verified_client(family.owner)
    routing = {"suspended": True, "suspended_reason": "incident 42"}
    put = owner_client.put(
        "/api/v1/models/credit-risk/routing", routing, content_type="application/json"
    )
    assert put.status_code == 200, put.content
    response = predict(client, caller[1])
    assert response.status_code == 503
    assert response.json()["code"] == "suspended"
    assert int(response["Retry-After"]) > 0
    assert Decision.objects.count() == 0


def test_a_key_without_predict_and_a_user_without_the_right_are_refused(
    client, api_key, v1, make_user
):
    _, raw = api_key(actions=("view",))
    assert predict(client, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}).status_code == 403
    stranger = make_user(Role.BUSINESS_USER)
    client.force_login(stranger)
    assert predict(client, {}).status_code == 404


def test_canary_traffic_is_split_and_sticky_by_subject(family, approver, v1, caller):
    v2 = serve(family, family.owner, approver, "2.0.0", target="")
    RoutingConfig.objects.update_or_create(
        family=family, defaults={"canary_version": v2, "canary_percent": 30}
    )
    client = Client()
    routes = {}
    for i in range(200):
        body = predict(client, caller[1], {"subject": f"s-{i}"}).json()["predictions"][0]
        routes[f"s-{i}"] = body["route"]
        assert body["model_version"] == ("2.0.0" if body["route"] == "canary" else "1.0.0")
    share = sum(r == "canary" for r in routes.values()) / len(routes)
    assert 0.2 < share < 0.4
    for subject in list(routes)[:20]:  # sticky: the same subject keeps its arm
        again = predict(client, caller[1], {"subject": subject}).json()["predictions"][0]
        assert again["route"] == routes[subject]
    from gatehouse.pseudonyms import pseudonymise

    assert all((bucket(family, pseudonymise(s)) < 30) == (r == "canary") for s, r in routes.items())


def test_only_approved_versions_receive_traffic(family, approver, v1):
    from apps.inference import services

    draft = register(family, family.owner, Registration(version="3.0.0"))
    with pytest.raises(ValidationFailed, match="not an approved version"):
        services.routing_update(
            family=family, user=family.owner, data={"canary_version": "3.0.0", "canary_percent": 50}
        )
    assert draft.status == VersionStatus.REGISTERED


def test_jurisdiction_rules_keep_subjects_on_versions_approved_for_them(client, caller, family):
    RoutingConfig.objects.update_or_create(
        family=family, defaults={"jurisdiction_rules": {"EU": ["1.0.0"], "CH": ["9.9.9"]}}
    )
    assert predict(client, caller[1], {"jurisdiction": "EU"}).status_code == 200
    refused = predict(client, caller[1], {"jurisdiction": "CH"})
    assert refused.status_code == 403
    assert refused.json()["code"] == "jurisdiction_not_served"


def test_policy_checks_run_before_predicting_and_can_refuse(client, caller):
    def refuse(context):
        raise PermissionDenied("no consent", code="consent_required")

    policy.register_check(refuse)
    try:
        response = predict(client, caller[1])
    finally:
        policy.unregister_check(refuse)
    assert response.status_code == 403
    assert response.json()["code"] == "consent_required"
    assert Decision.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_shadow_output_is_recorded_but_never_returned(family, approver, v1, caller):
    from apps.inference import shadow

    v2 = serve(family, family.owner, approver, "2.0.0", target="")
    RoutingConfig.objects.update_or_create(family=family, defaults={"shadow_version": v2})
    futures = []
    real_submit = shadow.submit
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shadow, "submit", lambda **kw: futures.append(real_submit(**kw)))
        response = predict(Client(), caller[1])
    assert response.json()["predictions"][0]["model_version"] == "1.0.0"
    for future in futures:
        future.result(timeout=30)
    routes = sorted(Decision.objects.values_list("route", "version_label"))
    assert routes == [("production", "1.0.0"), ("shadow", "2.0.0")]


# --- Decisions and outcomes ------------------------------------------------------------------


def test_an_outcome_is_recorded_by_whoever_made_the_decision(client, caller, api_key, make_user):
    decision_id = predict(client, caller[1]).json()["predictions"][0]["decision_id"]
    url = f"/api/v1/decisions/{decision_id}/outcome"
    response = client.post(url, {"label": "bad"}, content_type="application/json", **caller[1])
    assert response.status_code == 200
    assert response.json()["outcome"] == "bad"
    assert (
        client.post(
            url, {"label": "maybe"}, content_type="application/json", **caller[1]
        ).status_code
        == 422
    )
    other = make_user(Role.API_CONSUMER)
    raw = platform_services.apikey_create(user=other, name="o", actions=["predict"]).raw
    foreign = client.post(
        url, {"label": "good"}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )
    assert foreign.status_code == 404
    assert client.get("/api/v1/decisions/not-a-uuid", **caller[1]).status_code == 422


def test_the_serving_page_switches_the_kill_switch_and_canary(client, caller, family, approver):
    owner = Client()
    owner.force_login(family.owner)
    assert "credit-risk" in owner.get("/serving/").content.decode()
    page = owner.get("/serving/credit-risk/")
    assert page.status_code == 200
    form = {
        "suspended": "on",
        "suspended_reason": "incident 7",
        "canary_version": "",
        "canary_percent": 0,
        "shadow_version": "",
        "output_mode": "label",
        "top_k": 3,
        "max_rows": 100,
        "jurisdiction_rules": "",
    }
    assert owner.post("/serving/credit-risk/", form).status_code == 302
    assert predict(client, caller[1]).status_code == 503
    form.update(suspended="", jurisdiction_rules="not json")
    assert owner.post("/serving/credit-risk/", form).status_code == 422
    form.update(jurisdiction_rules="")
    owner.post("/serving/credit-risk/", form)
    body = predict(client, caller[1]).json()["predictions"][0]
    assert body["scores"] is None  # label-only output mode
    stranger = Client()
    stranger.force_login(caller[0])
    assert stranger.get("/serving/credit-risk/").status_code in (403, 404)


def test_stored_idempotent_replies_are_forgotten_after_their_ttl(client, caller):
    from datetime import timedelta

    from django.utils import timezone

    from apps.inference import services
    from apps.inference.models import IdempotentReply

    predict(client, caller[1], HTTP_IDEMPOTENCY_KEY="old")
    predict(client, caller[1], HTTP_IDEMPOTENCY_KEY="new")
    IdempotentReply.objects.filter(key="old").update(created_at=timezone.now() - timedelta(days=2))
    assert services.idempotent_replies_purge() == 1
    assert list(IdempotentReply.objects.values_list("key", flat=True)) == ["new"]


def test_reading_a_decision_honours_the_output_mode(client, caller, family):
    decision_id = predict(client, caller[1]).json()["predictions"][0]["decision_id"]
    RoutingConfig.objects.update_or_create(family=family, defaults={"output_mode": "label"})
    body = client.get(f"/api/v1/decisions/{decision_id}", **caller[1]).json()
    assert body["scores"] is None


def test_a_database_outage_answers_503_with_retry_after(client, caller, monkeypatch):
    from django.db import OperationalError

    def gone(_family):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("apps.inference.routing.serving", gone)
    response = predict(client, caller[1])
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"
    assert response["Retry-After"] == "5"


@pytest.mark.parametrize(
    "body",
    [
        "false",
        # A valid request but for U+0000, which PostgreSQL cannot store: refused on every DB.
        json.dumps({"rows": [ROW], "subject": "applicant-7\u0000"}),
        "{not json",
    ],
)
def test_bodies_that_are_not_storable_json_objects_get_422(client, caller, body):
    response = client.post(URL, body, content_type="application/json", **caller[1])
    assert response.status_code == 422, response.content
    assert response.json()["errors"][0]["field"] == "body"
    assert Decision.objects.count() == 0
