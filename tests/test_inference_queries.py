"""The predict path's query budget, and the freshness of what it reuses between requests.

The API key with its owner, the family, the caller's rights on it and the routing are built
once per process and reused while the rows they come from are unchanged
(``gatehouse.freshness``). These tests pin the number of queries per request, and check that
every change of those rows, including ones made behind the ORM's back (a queryset
``update()``), applies to the very next request.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from apps.inference.models import Decision, RoutingConfig
from apps.registry.models import ModelFamily, ModelVersion, VersionStatus
from apps.registry.permissions import FamilyAction
from gatehouse.models import ApiKey
from tests.test_inference import ROW, URL

pytestmark = pytest.mark.django_db

BODY = json.dumps({"rows": [ROW], "subject": "applicant-7"})

# Without extension points: API key with its owner (1), the rate-limit counters' upsert (1,
# gatehouse.ratelimit), family row (1), rights on it (1), routing row (1), servable versions
# (1); then the decision inside its transaction: savepoint or BEGIN, the decision insert, its
# log leaf insert (no shared row: gatehouse.tlog), release or COMMIT (4). With the hash chain
# (head read and update): 11; before the memos: 13.
PREDICT_QUERIES = 10


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path, monkeypatch):
    from apps.inference import policy
    from apps.inference.backends import reset_backends

    # The inference path alone: what later apps register into its extension points (consent
    # checks, hooks on recorded decisions) adds its own queries, counted in their tests.
    monkeypatch.setattr(policy, "_checks", [])
    monkeypatch.setattr(policy, "_recorded", [], raising=False)
    settings.ARTIFACT_STORE_DIR = tmp_path / "artifacts"
    settings.RATE_LIMIT_STORAGE = "database"  # the counted upsert, with or without REDIS_URL
    monkeypatch.setattr("apps.registry.services._enqueue_packaging", lambda _id: None)
    reset_backends()
    yield
    reset_backends()


@pytest.fixture
def caller(api_key, family, make_user):
    from apps.registry import services as registry_services
    from gatehouse.roles import Role
    from tests.registry_models import serve

    approver = make_user(Role.APPROVER, username="approver")
    registry_services.family_grant(family=family, to=approver, actions=[FamilyAction.APPROVE])
    serve(family, family.owner, approver, "1.0.0")
    user, raw = api_key()
    return user, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def post(client, caller):
    return client.post(URL, BODY, content_type="application/json", **caller[1])


def test_a_served_prediction_runs_a_fixed_number_of_queries(client, caller):
    # The first request builds the memos and stamps the key's last use (once a minute), which
    # changes the key's row: the second builds the key's memo again.
    for _ in range(2):
        assert post(client, caller).status_code == 200
    with CaptureQueriesContext(connection) as ctx:
        response = post(client, caller)
    assert response.status_code == 200, response.content
    assert len(ctx.captured_queries) == PREDICT_QUERIES, "\n".join(
        q["sql"][:120] for q in ctx.captured_queries
    )


def test_the_kill_switch_applies_to_the_next_request_even_behind_the_orms_back(
    client, caller, family
):
    assert post(client, caller).status_code == 200
    RoutingConfig.objects.update_or_create(family=family, defaults={})
    RoutingConfig.objects.filter(family=family).update(suspended=True)  # no save(), no signal
    response = post(client, caller)
    assert response.status_code == 503
    assert response.json()["code"] == "suspended"
    RoutingConfig.objects.filter(family=family).update(suspended=False)
    assert post(client, caller).status_code == 200


def test_a_retired_production_version_stops_serving_on_the_next_request(client, caller, family):
    assert post(client, caller).status_code == 200
    ModelVersion.objects.filter(family=family).update(status=VersionStatus.RETIRED)
    response = post(client, caller)
    assert response.status_code == 503
    assert response.json()["code"] == "no_production_version"


def test_a_revoked_right_applies_to_the_next_request(client, caller, family):
    user = caller[0]
    assert post(client, caller).status_code == 200
    remove_perm(FamilyAction.PREDICT.perm, user, family)
    assert post(client, caller).status_code == 403
    assign_perm(FamilyAction.PREDICT.perm, user, family)
    assert post(client, caller).status_code == 200
    remove_perm(FamilyAction.VIEW.perm, user, family)
    assert post(client, caller).status_code == 404


def test_a_revoked_or_expired_key_or_a_deactivated_owner_is_refused_on_the_next_request(
    client, caller
):
    user = caller[0]
    assert post(client, caller).status_code == 200
    user.__class__.objects.filter(pk=user.pk).update(is_active=False)
    assert post(client, caller).status_code == 401
    user.__class__.objects.filter(pk=user.pk).update(is_active=True)
    assert post(client, caller).status_code == 200
    ApiKey.objects.filter(user=user).update(expires_at=timezone.now())
    assert post(client, caller).status_code == 401
    ApiKey.objects.filter(user=user).update(expires_at=timezone.now() + timedelta(days=1))
    assert post(client, caller).status_code == 200
    ApiKey.objects.filter(user=user).update(revoked_at=timezone.now())
    assert post(client, caller).status_code == 401


def test_each_request_gets_its_own_key_and_user_objects(api_key):
    from gatehouse.auth import key_from_raw

    _, raw = api_key()
    first, second = key_from_raw(raw), key_from_raw(raw)
    assert first is not None
    assert second is not None
    assert first is not second
    assert first.user is not second.user
    first.actions.append("manage")
    first.user.has_perm(FamilyAction.PREDICT.perm)  # fills the user's permission cache
    assert "manage" not in second.actions
    assert not hasattr(second.user, "_perm_cache")


def test_a_change_of_the_family_applies_to_the_next_request(client, caller, family):
    assert post(client, caller).status_code == 200
    ModelFamily.objects.filter(pk=family.pk).update(slug="credit-risk-old")
    assert post(client, caller).status_code == 404
    assert Decision.objects.count() == 1
