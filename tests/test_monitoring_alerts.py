"""Alerts: the rules (error rate, latency SLO, authentication failures, extraction sweeps),
delivery (e-mail, signed webhook), the live listener, acknowledgement and the alert pages."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core import mail
from django.test import Client
from django.utils import timezone

from apps.inference.models import Decision, Route
from apps.monitoring import alerts
from apps.monitoring.models import LATENCY_BUCKETS_MS, IncidentEvent, MetricMinute, MonitoringPolicy
from apps.registry.models import ModelVersion
from gatehouse import extensions, services
from gatehouse.errors import Conflict, NotFound, OTPRequired
from gatehouse.models import Alert, Notification
from gatehouse.roles import Role
from tests.factories import ModelFamilyFactory

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.monitoring_alert_urls")]


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Failure counters and sent-channel marks live in the cache: with Redis (CI's second pass)
    it outlives each test's database rollback, so every test starts from an empty one."""
    from django.core.cache import cache

    cache.clear()


NOW = timezone.now().replace(second=30, microsecond=0)
N_BUCKETS = len(LATENCY_BUCKETS_MS) + 1


def buckets_with(**at_bound: int) -> list[int]:
    """A latency histogram with ``count`` requests in the bucket of each bound (ms)."""
    counts = [0] * N_BUCKETS
    for bound, count in at_bound.items():
        index = N_BUCKETS - 1 if bound == "inf" else LATENCY_BUCKETS_MS.index(float(bound[1:]))
        counts[index] += count
    return counts


def minute_row(family: Any, *, minutes_ago: int, requests: int, errors: int = 0, **kw: Any) -> Any:
    minute = NOW.replace(second=0) - timedelta(minutes=minutes_ago)
    buckets = kw.pop("buckets", buckets_with(b25=requests))
    return MetricMinute.objects.create(
        family=family,
        minute=minute,
        route=kw.pop("route", Route.PRODUCTION),
        requests=requests,
        errors=errors,
        latency_buckets=buckets,
        **kw,
    )


@pytest.fixture
def fam(family: Any) -> Any:
    return family


# --- Helper --------------------------------------------------------------------------------


def test_percentile_from_buckets_is_the_upper_bound_of_the_bucket_reaching_the_rank():
    bounds = (10.0, 100.0, 1000.0)
    assert alerts.percentile_from_buckets([90, 5, 5, 0], 0.95, bounds) == 100.0
    assert alerts.percentile_from_buckets([90, 5, 4, 1], 0.95, bounds) == 100.0
    assert alerts.percentile_from_buckets([90, 4, 5, 1], 0.95, bounds) == 1000.0
    assert alerts.percentile_from_buckets([0, 0, 0, 3], 0.5, bounds) == math.inf
    assert alerts.percentile_from_buckets([1, 0, 0, 0], 1.0, bounds) == 10.0
    assert alerts.percentile_from_buckets([0, 0, 0, 0], 0.95, bounds) is None
    with pytest.raises(ValueError, match="q must be"):
        alerts.percentile_from_buckets([1], 0, bounds)


# --- Error rate ----------------------------------------------------------------------------


def test_it_alerts_when_the_error_rate_over_five_minutes_exceeds_the_policy(fam):
    for m in range(5):
        minute_row(fam, minutes_ago=m, requests=10, errors=1 if m < 4 else 0)  # 4/50 = 8 %
    raised = alerts.evaluate_rules(now=NOW)
    assert [(a.kind, a.severity, a.subject) for a in raised] == [
        ("error_rate", "critical", "family:credit-risk")
    ]
    assert "8.0%" in raised[0].title


def test_the_error_rate_rule_stays_quiet_below_the_threshold_or_minimum_traffic(fam):
    other = ModelFamilyFactory(slug="digits")
    minute_row(fam, minutes_ago=0, requests=100, errors=5)  # exactly 5 %: not above
    minute_row(other, minutes_ago=0, requests=19, errors=19)  # under min_requests (20)
    minute_row(fam, minutes_ago=6, requests=100, errors=100)  # outside the window
    minute_row(fam, minutes_ago=0, requests=50, errors=50, route=Route.SHADOW)  # not served
    assert alerts.error_rate_alerts(now=NOW) == []


def test_the_error_rate_rule_uses_the_family_policy(fam):
    MonitoringPolicy.objects.create(family=fam, error_rate_max=0.5, min_requests=5)
    minute_row(fam, minutes_ago=0, requests=10, errors=4)
    assert alerts.error_rate_alerts(now=NOW) == []
    minute_row(fam, minutes_ago=1, requests=10, errors=9)  # 13/20
    assert len(alerts.error_rate_alerts(now=NOW)) == 1


def test_an_open_alert_is_not_raised_again_until_acknowledged(fam, make_user):
    minute_row(fam, minutes_ago=0, requests=40, errors=20)
    first = alerts.error_rate_alerts(now=NOW)
    assert len(first) == 1
    assert alerts.error_rate_alerts(now=NOW) == []
    Alert.objects.filter(pk=first[0].pk).update(acknowledged_at=timezone.now())
    assert len(alerts.error_rate_alerts(now=NOW)) == 1


# --- Latency -------------------------------------------------------------------------------


def test_it_alerts_when_p95_latency_breaches_the_slo(fam):
    # 100 requests: 90 at <= 25 ms, 10 at <= 1000 ms -> p95 is in the 1000 ms bucket.
    minute_row(fam, minutes_ago=1, requests=100, buckets=buckets_with(b25=90, b1000=10))
    raised = alerts.latency_alerts(now=NOW)
    assert [(a.kind, a.subject) for a in raised] == [("latency_slo", "family:credit-risk")]
    assert "1000 ms" in raised[0].title
    assert "500 ms" in raised[0].detail
    assert alerts.latency_alerts(now=NOW) == []  # deduplicated


def test_the_latency_rule_stays_quiet_within_the_slo_or_with_little_traffic(fam):
    minute_row(fam, minutes_ago=0, requests=100, buckets=buckets_with(b25=96, b5000=4))
    other = ModelFamilyFactory(slug="digits")
    minute_row(other, minutes_ago=0, requests=10, buckets=buckets_with(inf=10))
    assert alerts.latency_alerts(now=NOW) == []


def test_a_p95_beyond_the_last_bound_is_reported_as_above_it(fam):
    minute_row(fam, minutes_ago=0, requests=30, buckets=buckets_with(inf=30))
    (alert,) = alerts.latency_alerts(now=NOW)
    assert "> 5000 ms" in alert.title


# --- Authentication failures ---------------------------------------------------------------


def bad_key(client: Client, raw: str = "gh_stolen0000000000") -> int:
    return client.post("/api/v1/keys/1/revoke", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code


def test_repeated_bad_api_keys_raise_an_alert_naming_the_prefix_at_the_threshold(settings):
    settings.AUTH_FAILURE_ALERT_COUNT = 3
    first_address = Client(REMOTE_ADDR="198.51.100.1")
    assert bad_key(first_address) == 401
    assert bad_key(Client(REMOTE_ADDR="198.51.100.2")) == 401
    assert not Alert.objects.filter(kind="auth_failures").exists()
    bad_key(Client(REMOTE_ADDR="198.51.100.3"))  # third failure of the prefix
    alert = Alert.objects.get(kind="auth_failures")
    assert alert.subject == "key:gh_stolen"
    for _ in range(5):  # still failing: no second alert while it is open
        bad_key(Client(REMOTE_ADDR="198.51.100.4"))
    assert Alert.objects.filter(subject="key:gh_stolen").count() == 1


def test_repeated_failures_from_one_address_alert_without_showing_the_address(settings, make_user):
    settings.AUTH_FAILURE_ALERT_COUNT = 4
    client = Client(REMOTE_ADDR="203.0.113.9")
    user = make_user(Role.BUSINESS_USER, username="someone")
    client.post("/account/login/", {"username": user.username, "password": "wrong"})
    bad_key(client, "gh_aaaaaa111")
    bad_key(client, "not-a-key-secret")  # counted by address only
    assert not Alert.objects.filter(kind="auth_failures").exists()
    client.post("/account/login/", {"username": "nobody", "password": "wrong"})
    (alert,) = Alert.objects.filter(kind="auth_failures")
    assert alert.subject.startswith("address:")
    text = f"{alert.title} {alert.detail} {alert.subject}"
    assert "203.0.113.9" not in text
    assert "not-a-key" not in text
    assert "someone" not in text


def test_failures_outside_the_window_do_not_count(settings):
    from gatehouse.auth import auth_failure_record

    settings.AUTH_FAILURE_ALERT_COUNT = 3
    settings.AUTH_FAILURE_WINDOW_S = 100
    t0 = 1_000_000.0
    assert auth_failure_record(prefix="gh_slow00", now=t0) == 0
    assert auth_failure_record(prefix="gh_slow00", now=t0 + 60) == 0
    assert auth_failure_record(prefix="gh_slow00", now=t0 + 150) == 0  # the first has expired
    assert auth_failure_record(prefix="gh_slow00", now=t0 + 155) == 1


# --- Extraction sweeps ---------------------------------------------------------------------


@pytest.fixture
def version(fam: Any) -> Any:
    return ModelVersion.objects.create(
        family=fam,
        version="1.0.0",
        framework="torchscript",
        artifact_sha256="0" * 64,
        artifact_size=1,
        signature={"features": []},
        created_by=fam.owner,
    )


@pytest.fixture
def key(api_key: Any) -> Any:
    from gatehouse.models import ApiKey

    _, raw = api_key()
    return ApiKey.objects.get(prefix=raw[:9])


def record(version: Any, key: Any, rows: list[dict[str, Any]], *, ago: timedelta) -> None:
    Decision.objects.bulk_create(
        Decision(
            created_at=NOW - ago + timedelta(seconds=i),
            request_id=f"r{i}",
            family=version.family,
            version=version,
            version_label=version.version,
            artifact_sha256="0" * 64,
            route=Route.PRODUCTION,
            api_key=key,
            label="good",
            scores={"good": 1.0},
            latency_ms=1.0,
            inputs=row,
            payload_digest="d",
        )
        for i, row in enumerate(rows)
    )


def applicants(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)  # noqa: S311 (test data)
    return [
        {
            "income": round(rng.uniform(5, 120), 2),
            "age": rng.randint(18, 90),
            "housing": rng.choice(["own", "rent", "free"]),
            "sex": rng.choice(["female", "male"]),
        }
        for _ in range(n)
    ]


def one_at_a_time(n: int) -> list[dict[str, Any]]:
    base = {"income": 40.0, "age": 35, "housing": "rent", "sex": "female"}
    return [{**base, "income": 5.0 + 2.5 * i} for i in range(n)]


def lattice() -> list[dict[str, Any]]:
    # 8 incomes x 8 ages, shuffled so that consecutive rows differ in both features.
    points = [
        {"income": 10.0 * i, "age": 20 + 5 * j, "housing": "own", "sex": "male"}
        for i in range(8)
        for j in range(8)
    ]
    random.Random(3).shuffle(points)  # noqa: S311 (test data)
    return points


def test_it_alerts_on_a_key_that_varies_one_feature_at_a_time(version, key):
    record(version, key, one_at_a_time(60), ago=timedelta(minutes=5))
    (alert,) = alerts.evaluate_rules(now=NOW)
    assert alert.kind == "extraction_sweep"
    assert alert.subject == f"key:{key.prefix}"
    assert "one_feature_at_a_time" in alert.detail
    assert "40.0" not in alert.detail  # names no input values
    assert alerts.sweep_alerts(now=NOW) == []  # deduplicated


def test_it_alerts_on_a_key_probing_a_regular_grid(version, key):
    record(version, key, lattice(), ago=timedelta(minutes=5))
    (alert,) = alerts.sweep_alerts(now=NOW)
    assert "regular_grid" in alert.detail


def test_the_sweep_rule_stays_quiet_on_ordinary_traffic_and_small_or_old_samples(version, key):
    record(version, key, applicants(200, seed=7), ago=timedelta(minutes=9))
    assert alerts.sweep_alerts(now=NOW) == []
    Decision.objects.all().delete()
    record(version, key, one_at_a_time(49), ago=timedelta(minutes=5))  # fewer than 50
    assert alerts.sweep_alerts(now=NOW) == []
    Decision.objects.all().delete()
    record(version, key, one_at_a_time(60), ago=timedelta(minutes=30))  # outside the window
    assert alerts.sweep_alerts(now=NOW) == []


def test_a_client_rescoring_the_same_few_rows_is_not_a_grid():
    rows = applicants(3, seed=1) * 20
    assert alerts.sweep_pattern(rows) is None


# --- Delivery ------------------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    status = 204
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook(settings: Any) -> Iterator[type[_Receiver]]:
    handler = type("Receiver", (_Receiver,), {"received": [], "status": 204})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_address[1]}/hook"
    settings.ALERT_WEBHOOK_SECRET = "s3cret"
    yield handler
    server.shutdown()
    server.server_close()


def an_alert() -> Alert:
    return services.alert_raise(
        kind="error_rate",
        severity="critical",
        title="credit-risk: error rate 9.0%",
        detail="9 errors in 100 requests.",
        subject="family:credit-risk",
        family="credit-risk",
    )


def test_delivery_sends_mail_and_a_signed_webhook(settings, webhook):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ALERT_EMAILS = ["ops@example.org", "oncall@example.org"]
    alert = an_alert()
    assert alerts.deliver(alert.pk) == {"email": 2, "webhook": 204}
    (message,) = mail.outbox
    assert message.to == ["ops@example.org", "oncall@example.org"]
    assert "credit-risk: error rate 9.0%" in message.subject
    assert "critical" in message.subject
    ((headers, body),) = webhook.received
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Gatehouse-Signature"] == f"sha256={expected}"
    payload = json.loads(body)
    assert payload == {
        "id": alert.pk,
        "kind": "error_rate",
        "severity": "critical",
        "title": "credit-risk: error rate 9.0%",
        "detail": "9 errors in 100 requests.",
        "subject": "family:credit-risk",
        "created_at": alert.created_at.isoformat(),
    }


def test_nothing_is_sent_when_no_channel_is_configured(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ALERT_EMAILS = []
    settings.ALERT_WEBHOOK_URL = ""
    assert alerts.deliver(an_alert().pk) == {}
    assert mail.outbox == []


def test_a_failing_webhook_raises_an_oserror_and_the_retry_does_not_mail_twice(settings, webhook):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ALERT_EMAILS = ["ops@example.org"]
    webhook.status = 500
    alert = an_alert()
    with pytest.raises(alerts.DeliveryFailed, match="answered 500"):
        alerts.deliver(alert.pk)
    webhook.status = 200
    assert alerts.deliver(alert.pk) == {"webhook": 200}
    assert len(mail.outbox) == 1
    assert len(webhook.received) == 2


def test_an_unreachable_webhook_raises_an_oserror(settings):
    settings.ALERT_EMAILS = []
    settings.ALERT_WEBHOOK_URL = "http://127.0.0.1:9/unreachable"
    settings.ALERT_WEBHOOK_SECRET = "x"
    with pytest.raises(alerts.DeliveryFailed, match="ConnectError"):
        alerts.deliver(an_alert().pk)


def test_the_delivery_task_retries_on_oserror():
    from apps.monitoring.tasks import deliver_alert

    assert OSError in deliver_alert.autoretry_for
    assert issubclass(alerts.DeliveryFailed, OSError)


# --- Listener ------------------------------------------------------------------------------


@pytest.fixture
def listening() -> Iterator[None]:
    alerts.connect()
    yield
    extensions.unregister_alert_listener(alerts.on_alert_raised)


def test_a_committed_alert_is_enqueued_and_pushed_to_those_who_may_see_it(
    settings, make_user, fam, monkeypatch, listening, django_capture_on_commit_callbacks
):
    settings.ALERT_EMAILS = ["ops@example.org"]
    enqueued: list[int] = []
    monkeypatch.setattr("apps.monitoring.tasks.deliver_alert.delay", enqueued.append)
    pushed: list[tuple[int, str]] = []
    monkeypatch.setattr(
        "gatehouse.live.push_html", lambda uid, html, event="": pushed.append((uid, html))
    )
    admin = make_user(Role.ADMIN, username="ada")
    officer = make_user(Role.COMPLIANCE_OFFICER, username="cleo")
    clerk = make_user(Role.BUSINESS_USER, username="bob")
    stranger = make_user(Role.MODEL_OWNER, username="olga")  # owns no family: not this alert
    with django_capture_on_commit_callbacks(execute=True):
        alert = an_alert()
    assert enqueued == [alert.pk]
    notified = set(
        Notification.objects.filter(dedupe_key=f"alert:{alert.pk}").values_list(
            "user__username", flat=True
        )
    )
    assert notified == {"ada", "cleo", fam.owner.username}
    viewers = (admin.pk, officer.pk, fam.owner.pk)
    rows = [html for uid, html in pushed if uid in viewers and "alert-rows" in html]
    assert len(rows) == 3
    assert alert.title in rows[0]
    assert all(uid not in (clerk.pk, stranger.pk) for uid, _ in pushed)


def test_nothing_is_enqueued_before_commit_or_without_channels(
    settings, monkeypatch, listening, django_capture_on_commit_callbacks
):
    settings.ALERT_EMAILS = []
    settings.ALERT_WEBHOOK_URL = ""
    enqueued: list[int] = []
    monkeypatch.setattr("apps.monitoring.tasks.deliver_alert.delay", enqueued.append)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        an_alert()
    assert enqueued == []
    assert len(callbacks) == 1
    callbacks[0]()
    assert enqueued == []


# --- Acknowledgement -----------------------------------------------------------------------


def Verified(user: Any, verified: bool = True) -> Any:
    """``user`` as django-otp's middleware leaves it on a request (verified or not)."""
    user.is_verified = lambda: verified
    return user


def test_acknowledging_is_audited_and_recorded_as_an_incident_event(make_user, fam):
    officer = make_user(Role.COMPLIANCE_OFFICER, username="cleo")
    alert = an_alert()
    done = alerts.alert_acknowledge(alert_id=alert.pk, user=Verified(officer))
    done.refresh_from_db()
    assert done.acknowledged_by == officer
    assert done.acknowledged_at is not None
    entry = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(Alert), object_pk=str(alert.pk)
    ).latest("timestamp")
    assert entry.action == LogEntry.Action.UPDATE
    assert entry.actor == officer
    assert "acknowledged_at" in entry.changes_dict
    event = IncidentEvent.objects.get(kind="alert_acknowledged")
    assert event.actor == officer
    assert event.family == fam
    assert alert.title in event.detail


def test_acknowledging_needs_a_role_a_second_factor_and_an_open_alert(make_user, fam):
    alert = an_alert()
    with pytest.raises(NotFound):
        alerts.alert_acknowledge(alert_id=alert.pk, user=Verified(make_user(Role.API_CONSUMER)))
    with pytest.raises(NotFound):  # a model owner who may not view the alert's family
        alerts.alert_acknowledge(alert_id=alert.pk, user=Verified(make_user(Role.MODEL_OWNER)))
    owner = fam.owner
    with pytest.raises(OTPRequired):
        alerts.alert_acknowledge(alert_id=alert.pk, user=Verified(owner, verified=False))
    with pytest.raises(NotFound):
        alerts.alert_acknowledge(alert_id=alert.pk + 1000, user=Verified(owner))
    alerts.alert_acknowledge(alert_id=alert.pk, user=Verified(owner))
    with pytest.raises(Conflict):
        alerts.alert_acknowledge(alert_id=alert.pk, user=Verified(owner))


def test_only_alert_roles_see_alerts(make_user, fam):
    alert = an_alert()
    assert list(alerts.alerts_visible(user=make_user(Role.ADMIN))) == [alert]
    assert list(alerts.alerts_visible(user=fam.owner)) == [alert]
    assert list(alerts.alerts_visible(user=make_user(Role.BUSINESS_USER))) == []
    assert list(alerts.alerts_visible(user=make_user(Role.APPROVER))) == []
    Alert.objects.update(acknowledged_at=timezone.now())
    assert list(alerts.alerts_visible(user=make_user(Role.ADMIN, username="x"))) == []
    assert (
        len(alerts.alerts_visible(user=make_user(Role.ADMIN, username="y"), active_only=False)) == 1
    )


def test_model_owners_see_only_the_alerts_of_families_they_may_view(make_user, fam):
    ours = an_alert()
    theirs = services.alert_raise(
        kind="drift", severity="warning", title="fraud v1: drift", family="fraud"
    )
    platform = services.alert_raise(
        kind="auth_failures", severity="warning", title="bad keys", subject="key:gh_x"
    )
    stranger = make_user(Role.MODEL_OWNER, username="olga")
    assert list(alerts.alerts_visible(user=stranger)) == []
    assert list(alerts.alerts_visible(user=fam.owner)) == [ours]
    for who in (make_user(Role.ADMIN), make_user(Role.COMPLIANCE_OFFICER, username="cleo")):
        assert set(alerts.alerts_visible(user=who)) == {ours, theirs, platform}
    for alert in (theirs, platform):
        with pytest.raises(NotFound):
            alerts.alert_acknowledge(alert_id=alert.pk, user=Verified(fam.owner))
    client = Client()
    client.force_login(stranger)
    page = client.get(PAGE)
    assert page.status_code == 200
    assert ours.title not in page.content.decode()
    assert alerts.alert_visible_to(fam.owner, ours)
    assert not alerts.alert_visible_to(stranger, ours)


# --- Pages ---------------------------------------------------------------------------------

PAGE = "/monitoring/alerts/"


def ack_url(alert: Alert) -> str:
    return f"/monitoring/alerts/{alert.pk}/ack/"


def test_the_alert_page_lists_active_and_recently_acknowledged_alerts(make_user, verified_client):
    admin = make_user(Role.ADMIN, username="ada")
    open_alert, done = an_alert(), an_alert()
    Alert.objects.filter(pk=done.pk).update(
        acknowledged_at=timezone.now(), acknowledged_by=admin, title="old one"
    )
    response = verified_client(admin).get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    assert f'id="alert-{open_alert.pk}"' in html
    assert ack_url(open_alert) in html
    assert "old one" in html
    assert ack_url(done) not in html


def test_the_alert_page_is_not_found_for_other_roles(make_user):
    client = Client()
    client.force_login(make_user(Role.BUSINESS_USER))
    assert client.get(PAGE).status_code == 404


def test_acknowledging_over_htmx_returns_the_updated_list(make_user, fam, verified_client):
    owner = fam.owner
    keep, ack = an_alert(), an_alert()
    client = verified_client(owner)
    response = client.post(ack_url(ack), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="alert-list"' in html
    assert "<h1" not in html
    assert f'id="alert-{keep.pk}"' in html
    assert f'id="alert-{ack.pk}"' not in html
    entry = LogEntry.objects.get_for_object(Alert.objects.get(pk=ack.pk)).latest("timestamp")
    assert entry.actor == owner
    assert entry.action == LogEntry.Action.UPDATE
    again = client.post(ack_url(ack), HTTP_HX_REQUEST="true")
    assert again.status_code == 409
    assert "acknowledged already" in again.content.decode()
    Alert.objects.filter(pk=keep.pk).update(acknowledged_at=timezone.now())
    response = client.post(ack_url(keep))  # without htmx: back to the page
    assert response.status_code == 409


def test_acknowledging_without_a_second_factor_is_refused(make_user, fam):
    owner = fam.owner
    alert = an_alert()
    client = Client()
    client.force_login(owner)
    response = client.post(ack_url(alert))
    assert response.status_code == 403
    assert Alert.objects.get(pk=alert.pk).acknowledged_at is None


def test_acknowledging_without_htmx_redirects_to_the_page(make_user, verified_client):
    admin = make_user(Role.ADMIN, username="ada")
    alert = an_alert()
    response = verified_client(admin).post(ack_url(alert))
    assert response.status_code == 302
    assert response["Location"] == PAGE


def test_acknowledging_needs_the_csrf_token(make_user, verified_client):
    admin = make_user(Role.ADMIN, username="ada")
    client = verified_client(admin)
    client.handler.enforce_csrf_checks = True
    assert client.post(ack_url(an_alert())).status_code == 403
