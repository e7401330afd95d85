"""API keys: hashed storage, scope, expiry, revocation on the next request, query-string refusal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from gatehouse import services
from gatehouse.auth import hash_key
from gatehouse.models import ApiKey
from gatehouse.roles import Role
from tests.conftest import bearer

pytestmark = pytest.mark.django_db


def test_the_key_is_stored_only_as_its_hash(api_key):
    _, raw = api_key()
    stored = ApiKey.objects.get()
    assert stored.key_hash == hash_key(raw)
    assert raw not in {str(v) for v in stored.__dict__.values()}
    assert len(raw) >= 3 + 43  # gh_ + 256 bits in URL-safe base64


def test_a_valid_key_authenticates_and_records_its_last_use(client, api_key):
    user, raw = api_key()
    response = client.get("/api/v1/me", **bearer(raw))
    assert response.status_code == 200
    assert response.json()["username"] == user.username
    assert ApiKey.objects.get().last_used_at is not None


def test_revocation_takes_effect_on_the_very_next_request(client, api_key):
    user, raw = api_key()
    assert client.get("/api/v1/me", **bearer(raw)).status_code == 200
    services.apikey_revoke(key_id=ApiKey.objects.get().pk, by=user)
    response = client.get("/api/v1/me", **bearer(raw))
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_an_expired_key_is_refused(client, api_key):
    _, raw = api_key()
    ApiKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/v1/me", **bearer(raw)).status_code == 401


def test_a_key_of_a_deactivated_user_is_refused(client, api_key):
    user, raw = api_key()
    user.is_active = False
    user.save()
    assert client.get("/api/v1/me", **bearer(raw)).status_code == 401


def test_an_unknown_key_is_refused_and_the_log_has_no_secret(client, caplog):
    raw = "gh_" + "x" * 43
    with caplog.at_level("WARNING", logger="gatehouse.security"):
        assert client.get("/api/v1/me", **bearer(raw)).status_code == 401
    assert "api key refused" in caplog.text
    assert raw not in caplog.text


def test_a_key_in_the_query_string_is_refused(client, api_key):
    _, raw = api_key()
    response = client.get(f"/api/v1/me?api_key={raw}")
    assert response.status_code == 401
    assert response.json()["code"] == "key_in_query"


def test_a_key_only_sees_the_families_in_its_scope(client, api_key, family, other_family):
    from apps.registry.permissions import FamilyAction
    from apps.registry.services import family_grant

    user, raw_all = api_key()
    family_grant(family=other_family, to=user, actions=[FamilyAction.VIEW])
    _, raw_one = api_key(user=user, families=("credit-risk",))
    all_slugs = [
        f["slug"] for f in client.get("/api/v1/registry/families", **bearer(raw_all)).json()
    ]
    one_slugs = [
        f["slug"] for f in client.get("/api/v1/registry/families", **bearer(raw_one)).json()
    ]
    assert all_slugs == ["credit-risk", "digits"]
    assert one_slugs == ["credit-risk"]
    assert client.get("/api/v1/registry/families/digits", **bearer(raw_one)).status_code == 404


def test_a_key_cannot_be_scoped_to_a_family_its_owner_may_not_use(make_user, family):
    from gatehouse.errors import ValidationFailed

    stranger = make_user(Role.API_CONSUMER)
    with pytest.raises(ValidationFailed) as excinfo:
        services.apikey_create(
            user=stranger, name="x", actions=["predict"], families=["credit-risk"]
        )
    assert excinfo.value.errors[0]["field"] == "families"


def test_a_user_cannot_revoke_someone_elses_key(client, api_key, make_user):
    _, raw = api_key()
    other = make_user(Role.API_CONSUMER)
    from gatehouse.errors import NotFound

    with pytest.raises(NotFound):
        services.apikey_revoke(key_id=ApiKey.objects.get().pk, by=other)
    assert client.get("/api/v1/me", **bearer(raw)).status_code == 200


def test_the_command_prints_the_key_once_and_it_works(client, api_key, capsys):
    user, _ = api_key()
    call_command(
        "create_api_key",
        "--user",
        user.username,
        "--families",
        "credit-risk",
        "--actions",
        "predict",
        "--expires-days",
        "7",
    )
    raw = capsys.readouterr().out.strip()
    assert raw.startswith("gh_")
    me = client.get("/api/v1/me", **bearer(raw)).json()
    assert me["api_key_actions"] == ["predict"]
    assert me["api_key_families"] == ["credit-risk"]


def test_keys_are_created_in_the_ui_and_shown_once(make_user, family):
    from django.test import Client

    from apps.registry.permissions import FamilyAction
    from apps.registry.services import family_grant

    user = make_user(Role.API_CONSUMER)
    family_grant(family=family, to=user, actions=[FamilyAction.VIEW, FamilyAction.PREDICT])
    client = Client()
    client.force_login(user)
    response = client.post(
        "/account/api-keys/",
        {
            "name": "scoring job",
            "actions": ["view", "predict"],
            "families": ["credit-risk"],
            "expires_days": 30,
        },
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    html = response.content.decode()
    key = ApiKey.objects.get()
    assert "copy it now" in html
    raw = html.split('id="new-key">')[1].split("<")[0]
    assert hash_key(raw) == key.key_hash
    listing = client.get("/account/api-keys/").content.decode()
    assert raw not in listing
    assert key.prefix in listing


def test_the_ui_names_the_bad_field(make_user):
    from django.test import Client

    client = Client()
    client.force_login(make_user(Role.API_CONSUMER))
    response = client.post("/account/api-keys/", {"name": "", "actions": [], "expires_days": 9999})
    assert response.status_code == 422
    assert ApiKey.objects.count() == 0


def test_a_key_without_the_view_action_cannot_list_families(client, api_key):
    _, raw = api_key(actions=("predict",))
    response = client.get("/api/v1/registry/families", **bearer(raw))
    assert response.status_code == 403
    assert response.json()["code"] == "key_scope"


def test_a_key_cannot_list_keys_and_can_revoke_only_itself(client, api_key):
    user, raw = api_key()
    _, other_raw = api_key(user=user)
    own, other = ApiKey.objects.order_by("created_at")
    assert client.get("/api/v1/keys", **bearer(raw)).status_code == 403
    assert client.post(f"/api/v1/keys/{other.pk}/revoke", **bearer(raw)).status_code == 403
    assert client.get("/api/v1/me", **bearer(other_raw)).status_code == 200
    assert client.post(f"/api/v1/keys/{own.pk}/revoke", **bearer(raw)).status_code == 200
    assert client.get("/api/v1/me", **bearer(raw)).status_code == 401


def test_model_level_grants_show_up_as_actions(client, make_user, family):
    from django.contrib.auth.models import Permission

    user = make_user(Role.BUSINESS_USER)
    for codename in ("view_modelfamily", "predict_modelfamily"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(user)
    (listed,) = client.get("/api/v1/registry/families").json()
    assert listed["actions"] == ["view", "predict"]


def test_a_bad_key_on_a_post_gets_401_not_a_csrf_error(client, api_key):
    response = client.post("/api/v1/keys/1/revoke", HTTP_AUTHORIZATION="Bearer gh_wrong")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
