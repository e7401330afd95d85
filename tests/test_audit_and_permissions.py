"""The audit trail of access decisions, the audit page, and per-object permissions on families."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from guardian.models import GroupObjectPermission, UserObjectPermission

from apps.registry import selectors as registry_selectors
from apps.registry import services as registry_services
from apps.registry.permissions import FamilyAction
from gatehouse import errors, services
from gatehouse.models import ApiKey
from gatehouse.roles import Role
from tests.conftest import bearer
from tests.factories import ModelFamilyFactory

pytestmark = pytest.mark.django_db

_ROW = re.compile(r"<tr><td>[^<]*</td><td>([^<]*)</td>\s*<td>[^<]*</td><td>(\w+) #")


def _entries_for(model: type, **filters: Any) -> Any:
    return LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(model), **filters
    ).order_by("timestamp", "pk")


def _audit_rows(html: str) -> list[tuple[str, str]]:
    """(actor, object type) of each row of the audit table."""
    table = html.split('id="audit-table"', 1)[1]
    return _ROW.findall(table)


def _logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- What is audited -----------------------------------------------------------------------------


def test_creating_and_revoking_a_key_in_the_ui_is_audited_with_the_actor(make_user):
    user = make_user(Role.API_CONSUMER, username="alice")
    client = _logged_in(user)
    response = client.post(
        "/account/api-keys/", {"name": "nightly job", "actions": ["view"], "expires_days": 30}
    )
    assert response.status_code == 200
    key = ApiKey.objects.get()
    assert client.post(f"/account/api-keys/{key.pk}/revoke/").status_code == 302

    created, revoked = _entries_for(ApiKey, object_pk=str(key.pk))
    assert created.action == LogEntry.Action.CREATE
    assert revoked.action == LogEntry.Action.UPDATE
    assert created.actor == user
    assert revoked.actor == user
    assert created.changes["name"] == ["None", "nightly job"]
    assert "revoked_at" in revoked.changes
    for entry in (created, revoked):
        assert "key_hash" not in entry.changes
        assert key.key_hash not in json.dumps(entry.changes)
        assert key.key_hash not in entry.changes_text
        assert key.key_hash not in json.dumps(entry.serialized_data)


def test_keys_made_outside_a_request_are_audited_without_an_actor(make_user):
    user = make_user(Role.API_CONSUMER)
    created = services.apikey_create(user=user, name="cli", actions=["view"])
    services.apikey_revoke(key_id=created.key.pk, by=user)
    entries = list(_entries_for(ApiKey, object_pk=str(created.key.pk)))
    assert [e.action for e in entries] == [LogEntry.Action.CREATE, LogEntry.Action.UPDATE]
    assert all(e.actor is None for e in entries)
    assert all("key_hash" not in e.changes for e in entries)
    assert all(created.raw not in json.dumps(e.changes) for e in entries)


def test_granting_a_family_permission_to_a_user_is_audited(make_user, family):
    user = make_user(Role.BUSINESS_USER)
    before = _entries_for(UserObjectPermission).count()
    registry_services.family_grant(family=family, to=user, actions=[FamilyAction.PREDICT])
    entries = _entries_for(UserObjectPermission)
    assert entries.count() == before + 1
    entry = entries.last()
    assert entry.action == LogEntry.Action.CREATE
    assert entry.changes["object_pk"][1] == str(family.pk)
    assert entry.changes["user"][1] == str(user.pk)


def test_revoking_a_family_permission_is_audited(make_user, family):
    user = make_user(Role.BUSINESS_USER)
    registry_services.family_grant(family=family, to=user, actions=[FamilyAction.PREDICT])
    registry_services.family_revoke(family=family, to=user, actions=[FamilyAction.PREDICT])
    assert _entries_for(UserObjectPermission).last().action == LogEntry.Action.DELETE


def test_granting_a_family_permission_to_a_group_is_audited(family):
    group = Group.objects.get(name=Role.BUSINESS_USER.value)
    registry_services.family_grant(family=family, to=group, actions=[FamilyAction.VIEW])
    entry = _entries_for(GroupObjectPermission).get()
    assert entry.action == LogEntry.Action.CREATE
    assert entry.changes["group"][1] == str(group.pk)


def test_adding_a_user_to_a_role_group_is_audited(make_user):
    user = make_user(Role.BUSINESS_USER)
    user.groups.add(Group.objects.get(name=Role.APPROVER.value))
    entry = _entries_for(type(user), object_pk=str(user.pk)).last()
    assert entry.changes["groups"]["type"] == "m2m"
    assert entry.changes["groups"]["operation"] == "add"
    assert entry.changes["groups"]["objects"] == [Role.APPROVER.value]


def test_removing_a_user_from_a_role_group_is_audited(make_user):
    user = make_user(Role.APPROVER)
    user.groups.remove(Group.objects.get(name=Role.APPROVER.value))
    entry = _entries_for(type(user), object_pk=str(user.pk)).last()
    assert entry.changes["groups"]["operation"] == "delete"
    assert entry.changes["groups"]["objects"] == [Role.APPROVER.value]


# --- The audit page ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ADMIN, Role.COMPLIANCE_OFFICER])
def test_admins_and_compliance_officers_with_a_second_factor_read_the_audit_trail(
    make_user, verified_client, role
):
    services.apikey_create(user=make_user(Role.API_CONSUMER), name="k", actions=["view"])
    response = verified_client(make_user(role)).get("/audit/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" in html
    assert ("system", "apikey") in _audit_rows(html)


def test_a_superuser_reads_the_audit_trail(make_user, verified_client):
    admin = make_user(is_superuser=True, is_staff=True)
    assert verified_client(admin).get("/audit/").status_code == 200


def test_a_business_user_may_not_read_the_audit_trail(make_user):
    services.apikey_create(user=make_user(Role.API_CONSUMER), name="k", actions=["view"])
    response = _logged_in(make_user(Role.BUSINESS_USER)).get("/audit/")
    assert response.status_code == 403
    assert "apikey #" not in response.content.decode()


def test_a_compliance_officer_without_a_second_factor_is_sent_to_2fa(make_user):
    response = _logged_in(make_user(Role.COMPLIANCE_OFFICER)).get("/audit/")
    assert response.status_code == 302
    assert response["Location"].startswith("/account/2fa/")


@pytest.fixture
def audit_history(make_user, family):
    """Keys made in the UI by alice and bob, and a permission granted outside a request."""
    for name in ("alice", "bob"):
        client = _logged_in(make_user(Role.API_CONSUMER, username=name))
        response = client.post(
            "/account/api-keys/", {"name": f"{name}'s key", "actions": ["view"], "expires_days": 7}
        )
        assert response.status_code == 200
    registry_services.family_grant(
        family=family, to=make_user(Role.BUSINESS_USER), actions=[FamilyAction.VIEW]
    )


def test_the_audit_trail_filters_by_actor(make_user, verified_client, audit_history):
    client = verified_client(make_user(Role.COMPLIANCE_OFFICER))
    rows = _audit_rows(client.get("/audit/", {"actor": "alice"}).content.decode())
    assert rows == [("alice", "apikey")]
    everything = _audit_rows(client.get("/audit/").content.decode())
    assert {("alice", "apikey"), ("bob", "apikey"), ("system", "userobjectpermission")} <= set(
        everything
    )


def test_the_audit_trail_filters_by_object_type(make_user, verified_client, audit_history):
    client = verified_client(make_user(Role.COMPLIANCE_OFFICER))
    rows = _audit_rows(client.get("/audit/", {"model": "ApiKey"}).content.decode())
    assert sorted(rows) == [("alice", "apikey"), ("bob", "apikey")]
    rows = _audit_rows(client.get("/audit/", {"model": "userobjectpermission"}).content.decode())
    assert rows
    assert {model for _, model in rows} == {"userobjectpermission"}


def test_an_htmx_request_gets_only_the_audit_table(make_user, verified_client, audit_history):
    client = verified_client(make_user(Role.ADMIN))
    response = client.get("/audit/", {"actor": "bob"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html
    assert "<form" not in html
    assert html.strip().startswith('<div id="audit-table">')
    assert _audit_rows(html) == [("bob", "apikey")]


# --- Per-object permissions on model families ----------------------------------------------------


@pytest.fixture
def viewer_of_a(make_user, family, other_family):
    """A business user granted view on ``credit-risk`` (A) but nothing on ``digits`` (B)."""
    user = make_user(Role.BUSINESS_USER)
    registry_services.family_grant(family=family, to=user, actions=[FamilyAction.VIEW])
    return user


def test_a_user_sees_only_the_families_granted_to_them_in_the_ui(viewer_of_a):
    html = _logged_in(viewer_of_a).get("/registry/families/").content.decode()
    assert "<code>credit-risk</code>" in html
    assert "<code>digits</code>" not in html


def test_a_user_sees_only_the_families_granted_to_them_in_the_api(viewer_of_a):
    client = _logged_in(viewer_of_a)
    listing = client.get("/api/v1/registry/families").json()
    assert [(f["slug"], f["actions"]) for f in listing] == [("credit-risk", ["view"])]
    assert client.get("/api/v1/registry/families/credit-risk").status_code == 200
    hidden = client.get("/api/v1/registry/families/digits")
    assert hidden.status_code == 404
    assert hidden.json()["code"] == "not_found"


def test_a_user_with_no_grants_sees_no_family(make_user, family, other_family):
    client = _logged_in(make_user(Role.BUSINESS_USER))
    assert client.get("/api/v1/registry/families").json() == []
    html = client.get("/registry/families/").content.decode()
    assert "No model family has been shared with you." in html
    assert client.get("/api/v1/registry/families/credit-risk").status_code == 404


def test_a_grant_to_a_role_group_reaches_its_members(make_user, family, other_family):
    user = make_user(Role.BUSINESS_USER)
    group = Group.objects.get(name=Role.BUSINESS_USER.value)
    registry_services.family_grant(
        family=other_family, to=group, actions=[FamilyAction.VIEW, FamilyAction.PREDICT]
    )
    listing = _logged_in(user).get("/api/v1/registry/families").json()
    assert [(f["slug"], f["actions"]) for f in listing] == [("digits", ["view", "predict"])]


def test_a_superuser_sees_every_family_with_every_action(
    make_user, verified_client, family, other_family
):
    client = verified_client(make_user(is_superuser=True, is_staff=True))
    listing = client.get("/api/v1/registry/families").json()
    assert [f["slug"] for f in listing] == ["credit-risk", "digits"]
    assert all(f["actions"] == [a.value for a in FamilyAction] for f in listing)
    html = client.get("/registry/families/").content.decode()
    assert "<code>credit-risk</code>" in html
    assert "<code>digits</code>" in html


def test_a_revoked_grant_hides_the_family_again(viewer_of_a, family):
    registry_services.family_revoke(family=family, to=viewer_of_a, actions=[FamilyAction.VIEW])
    assert _logged_in(viewer_of_a).get("/api/v1/registry/families").json() == []


def test_seeing_a_family_without_predict_rights_is_a_403_not_a_404(viewer_of_a, family):
    with pytest.raises(errors.PermissionDenied) as excinfo:
        registry_selectors.family_get(
            user=viewer_of_a, slug="credit-risk", action=FamilyAction.PREDICT
        )
    assert excinfo.value.status_code == 403
    assert "predict" in excinfo.value.detail
    with pytest.raises(errors.NotFound):
        registry_selectors.family_get(user=viewer_of_a, slug="digits", action=FamilyAction.PREDICT)
    registry_services.family_grant(family=family, to=viewer_of_a, actions=[FamilyAction.PREDICT])
    found = registry_selectors.family_get(
        user=viewer_of_a, slug="credit-risk", action=FamilyAction.PREDICT
    )
    assert found == family


def test_an_inactive_user_sees_no_family(viewer_of_a):
    viewer_of_a.is_active = False
    viewer_of_a.save()
    assert list(registry_selectors.family_list(user=viewer_of_a)) == []


# --- Query counts --------------------------------------------------------------------------------


def _grant_families(user: Any, count: int) -> None:
    for family in ModelFamilyFactory.create_batch(count):
        registry_services.family_grant(
            family=family, to=user, actions=[FamilyAction.VIEW, FamilyAction.PREDICT]
        )


def _queries_for(client: Client, url: str, **extra: Any) -> tuple[int, Any]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, **extra)
    assert response.status_code == 200
    return len(ctx.captured_queries), response


@pytest.mark.parametrize("with_key", [False, True], ids=["session", "api_key"])
def test_listing_families_over_the_api_takes_as_many_queries_for_10_families_as_for_2(
    make_user, django_assert_max_num_queries, with_key
):
    counts = []
    for size in (2, 10):
        user = make_user(Role.API_CONSUMER)
        _grant_families(user, size)
        if with_key:
            raw = services.apikey_create(user=user, name="k", actions=["view", "predict"]).raw
            client, extra = Client(), bearer(raw)
        else:
            client, extra = _logged_in(user), {}
        _queries_for(client, "/api/v1/registry/families", **extra)  # warm the caches
        count, response = _queries_for(client, "/api/v1/registry/families", **extra)
        assert len(response.json()) == size
        assert all(f["actions"] == ["view", "predict"] for f in response.json())
        counts.append(count)
    assert counts[0] == counts[1]
    with django_assert_max_num_queries(10):
        client.get("/api/v1/registry/families", **extra)


def test_listing_families_in_the_ui_takes_as_many_queries_for_10_families_as_for_2(make_user):
    counts = []
    for size in (2, 10):
        user = make_user(Role.BUSINESS_USER)
        _grant_families(user, size)
        client = _logged_in(user)
        _queries_for(client, "/registry/families/")
        count, response = _queries_for(client, "/registry/families/")
        assert response.content.decode().count("<code>family-") == size
        counts.append(count)
    assert counts[0] == counts[1]
