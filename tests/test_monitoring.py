"""Monitoring: per-process counters flushed into per-minute rows, the dashboard and /metrics
reading the same numbers, the live topic over the websocket, and incident controls."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from apps.inference import services as inference_services
from apps.inference.models import Decision
from apps.monitoring import metrics, selectors
from apps.monitoring.models import IncidentEvent, MetricMinute
from apps.registry.models import VersionStatus
from gatehouse.roles import Role
from tests.registry_models import serve

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_serving")]

URL = "/api/v1/models/credit-risk/predict"
ROW = {"income": 40.0, "age": 35, "housing": "rent", "sex": "female"}


@pytest.fixture(autouse=True)
def _isolated(isolated_serving, settings, monkeypatch):
    settings.METRICS_FLUSH_S = 0  # no flusher thread: the tests flush
    settings.METRICS_TOKEN = "scrape-token"
    metrics.recorder.reset()


@pytest.fixture
def caller(api_key, v1, grant_consent):
    grant_consent("applicant-7")
    user, raw = api_key()
    return user, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def predict(client, caller, subject="applicant-7"):
    body = {"rows": [ROW], "subject": subject}
    return client.post(URL, json.dumps(body), content_type="application/json", **caller[1])


def _traffic(client, caller, django_capture_on_commit_callbacks, served=3, refused=2):
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(served):
            assert predict(client, caller).status_code == 200
        for i in range(refused):
            assert predict(client, caller, subject=f"no-consent-{i}").status_code == 403
    return metrics.recorder.flush()


def test_served_and_refused_requests_are_counted_per_minute_without_a_query_per_request(
    client, caller, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    _traffic(client, caller, django_capture_on_commit_callbacks)
    served = MetricMinute.objects.get(route="production")
    assert (served.requests, served.rows, served.errors) == (3, 3, 0)
    assert sum(served.latency_buckets) == 3
    assert sum(served.score_bins) == 3
    assert sum(served.labels.values()) == 3
    failed = MetricMinute.objects.get(route="")
    assert (failed.requests, failed.refusals, failed.errors) == (2, 2, 0)
    # Counting touches memory only: a served request writes no metric row by itself.
    with django_capture_on_commit_callbacks(execute=True), django_assert_max_num_queries(40) as ctx:
        predict(client, caller)
    assert not any("monitoring_metricminute" in q["sql"] for q in ctx.captured_queries)


def test_flushes_from_several_processes_add_up(client, caller, django_capture_on_commit_callbacks):
    _traffic(client, caller, django_capture_on_commit_callbacks, served=2, refused=0)
    other = metrics.Recorder()  # another process's counters for the same minute
    other.served(list(Decision.objects.all()))
    other.flush()
    assert MetricMinute.objects.get(route="production").requests == 4


def test_a_backend_failure_counts_as_an_error(client, caller, monkeypatch):
    from apps.inference.backends.base import BackendUnavailable

    def down(*_args, **_kwargs):
        raise BackendUnavailable("down")

    monkeypatch.setattr("apps.inference.backends.local.LocalBackend.predict", down)
    assert predict(client, caller).status_code == 503
    metrics.recorder.flush()
    assert MetricMinute.objects.get(route="").errors == 1


def test_the_dashboard_and_metrics_agree(
    client, caller, django_capture_on_commit_callbacks, family
):
    _traffic(client, caller, django_capture_on_commit_callbacks)
    (stats,) = selectors.family_stats([family])
    scrape = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token")
    assert scrape.status_code == 200
    text = scrape.content.decode()

    def sample(name: str, route: str) -> float:
        pattern = rf'^{name}\{{family="credit-risk",route="{route}",version="[^"]*"\}} (\S+)$'
        match = re.search(pattern, text, re.M)
        assert match, f"{name} {route} missing in:\n{text}"
        return float(match.group(1))

    assert (
        sample("gatehouse_predict_requests_total", "production") == stats.split["production"] == 3
    )
    assert sample("gatehouse_predict_refusals_total", "") == stats.refusals == 2
    assert sample("gatehouse_predict_latency_ms_count", "production") == 3
    assert sum(stats.series) == 5  # served + refused requests, per minute


def test_metrics_need_the_token_or_an_admin_session(make_user, verified_client):
    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    owner = Client()
    owner.force_login(make_user(Role.MODEL_OWNER))
    assert owner.get("/metrics").status_code == 401
    assert verified_client(make_user(Role.ADMIN)).get("/metrics").status_code == 200


def test_latency_percentiles_come_from_the_histogram():
    # 90 fast (<= 5 ms), 9 at <= 100 ms, 1 slow (<= 1000 ms)
    buckets = [90, 0, 0, 0, 9, 0, 0, 1, 0, 0, 0]
    assert selectors.percentile(buckets, 0.5) == 5
    assert selectors.percentile(buckets, 0.95) == 100
    assert selectors.percentile(buckets, 0.995) == 1000
    assert selectors.percentile([0] * 11, 0.5) is None


# --- Dashboard -----------------------------------------------------------------------------------


def test_the_dashboard_shows_each_visible_family(
    client, caller, family, django_capture_on_commit_callbacks
):
    _traffic(client, caller, django_capture_on_commit_callbacks)
    browser = Client()
    browser.force_login(family.owner)
    page = browser.get("/monitoring/").content.decode()
    assert 'id="dashboard"' in page
    assert "credit-risk" in page
    assert 'data-kpi="refusals">2<' in page
    assert "production 3" in page
    assert 'id="dashboard-charts"' in page


def test_business_users_do_not_get_the_dashboard(make_user):
    browser = Client()
    browser.force_login(make_user(Role.BUSINESS_USER))
    assert browser.get("/monitoring/").status_code == 403


def test_a_family_the_user_may_not_see_is_not_rendered(make_user, v1):
    other_owner = make_user(Role.MODEL_OWNER)
    html = selectors_render(other_owner)
    assert "credit-risk" not in html


def selectors_render(user: Any) -> str:
    from apps.monitoring.views import render_dashboard

    return render_dashboard(user)


# --- Live topic over the websocket ------------------------------------------------------------


def _socket(session_key: str):
    from channels.testing import WebsocketCommunicator
    from django.conf import settings

    from gatehouse.asgi import application

    headers = [
        (b"origin", b"http://127.0.0.1"),
        (b"host", b"127.0.0.1"),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_key}".encode()),
    ]
    return WebsocketCommunicator(application, "/ws/live/", headers=headers)


@pytest.mark.django_db(transaction=True)
async def test_a_subscribed_socket_gets_the_dashboard_rendered_for_its_user(make_user):
    from gatehouse.live import publish_topic

    def login(role: Role) -> str:
        client = Client()
        client.force_login(make_user(role))
        return client.session.session_key

    owner_key = await database_sync_to_async(login)(Role.MODEL_OWNER)
    owner = _socket(owner_key)
    assert (await owner.connect())[0]
    await owner.send_to(text_data=json.dumps({"subscribe": "monitoring"}))
    first = await owner.receive_from(timeout=5)
    assert 'id="dashboard"' in first
    assert 'hx-swap-oob="true"' in first
    await database_sync_to_async(publish_topic)("monitoring")
    again = await owner.receive_from(timeout=5)
    assert 'id="dashboard"' in again
    # A business user may not subscribe: nothing is sent to them.
    clerk = _socket(await database_sync_to_async(login)(Role.BUSINESS_USER))
    assert (await clerk.connect())[0]
    await clerk.send_to(text_data=json.dumps({"subscribe": "monitoring"}))
    await database_sync_to_async(publish_topic)("monitoring")
    assert await clerk.receive_nothing(timeout=1)
    await owner.disconnect()
    await clerk.disconnect()


# --- Incident controls ---------------------------------------------------------------------------


def test_the_kill_switch_on_the_dashboard_stops_the_next_prediction(
    client, caller, family, verified_client
):
    owner = verified_client(family.owner)
    response = owner.post(
        f"/monitoring/families/{family.slug}/kill-switch/",
        {"suspend": "true", "reason": "bad outputs"},
    )
    assert response.status_code == 302
    refused = predict(client, caller)
    assert refused.status_code == 503
    assert refused["Retry-After"]
    event = IncidentEvent.objects.get()
    assert (event.kind, event.actor) == ("kill_switch", family.owner)
    from auditlog.models import LogEntry

    assert LogEntry.objects.filter(object_repr=f"routing of {family.slug}").exists()
    owner.post(f"/monitoring/families/{family.slug}/kill-switch/", {"suspend": "false"})
    assert predict(client, caller).status_code == 200


def test_incident_controls_need_2fa_and_manage_rights(family, make_user, v1, verified_client):
    unverified = Client()
    unverified.force_login(family.owner)
    assert (
        unverified.post(
            f"/monitoring/families/{family.slug}/kill-switch/", {"suspend": "true", "reason": "x"}
        ).status_code
        == 403
    )
    compliance = verified_client(make_user(Role.COMPLIANCE_OFFICER))  # sees it, may not act
    assert compliance.post(f"/monitoring/families/{family.slug}/rollback/").status_code in (
        403,
        404,
    )
    assert not IncidentEvent.objects.exists()


def test_one_click_rollback_serves_the_previous_version_again(
    family, approver, v1, verified_client
):
    v2 = serve(family, family.owner, approver, "2.0.0")
    assert selectors.rollback_target(family) == "1.0.0"
    owner = verified_client(family.owner)
    assert owner.post(f"/monitoring/families/{family.slug}/rollback/").status_code == 302
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.status, v2.status) == (VersionStatus.PRODUCTION, VersionStatus.APPROVED)
    assert IncidentEvent.objects.get(kind="rollback").detail.endswith("v2.0.0 -> v1.0.0")


def test_the_canary_share_changes_without_a_restart(family, approver, v1, verified_client):
    from apps.inference.routing import routing_for

    v2 = serve(family, family.owner, approver, "2.0.0", target="")
    inference_services.routing_update(
        family=family, user=family.owner, data={"canary_version": v2.version, "canary_percent": 10}
    )
    owner = verified_client(family.owner)
    bad = owner.post(f"/monitoring/families/{family.slug}/canary/", {"canary_percent": "150"})
    assert bad.status_code == 422
    owner.post(f"/monitoring/families/{family.slug}/canary/", {"canary_percent": "50"})
    config = routing_for(family)
    assert (config.canary_percent, config.canary_version.version) == (50, "2.0.0")
