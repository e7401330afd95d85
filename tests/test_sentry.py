"""Sentry reports crashes without passwords, keys, cookies or who the user is; off without a DSN."""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest
import sentry_sdk
from django.conf import settings as django_settings
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from gatehouse import urls as base_urls


def view_that_raises(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("page-crash-marker")


# URLconf of the page crash test: the real one plus /boom/.
handler500 = base_urls.handler500
urlpatterns = [path("boom/", view_that_raises), *base_urls.urlpatterns]

USERNAME = "jane.doe"
DSN = "https://public@example.invalid/1"


class MemoryTransport(Transport):
    """Keeps envelopes in memory instead of sending them."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def events(self) -> list[dict[str, Any]]:
        return [e for e in (env.get_event() for env in self.envelopes) if e is not None]

    def serialized(self) -> str:
        return b"\n".join(env.serialize() for env in self.envelopes).decode("utf-8", "replace")


@pytest.fixture
def sentry_events():
    from gatehouse.sentry import init_sentry

    transport = MemoryTransport()
    init_sentry(dsn=DSN, environment="test", transport=transport)
    assert sentry_sdk.get_client().is_active()
    yield transport
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)
    assert not sentry_sdk.get_client().is_active()


@pytest.fixture
def jane(make_user):
    from gatehouse.roles import Role

    return make_user(Role.API_CONSUMER, username=USERNAME, email="jane.doe@example.org")


def _secrets_in(text: str, *values: str) -> list[str]:
    return [v for v in values if v in text]


def _exception_values(event: dict[str, Any]) -> list[str]:
    return [v.get("value", "") for v in event.get("exception", {}).get("values", [])]


def _wsgi(
    method: str,
    path_info: str,
    *,
    query: str = "",
    body: str = "",
    headers: dict[str, str] | None = None,
) -> str:
    """One request through Django's real WSGI handler, where Sentry attaches the request data."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body.encode())),
        "wsgi.input": io.BytesIO(body.encode()),
        **{f"HTTP_{name.upper().replace('-', '_')}": v for name, v in (headers or {}).items()},
    }
    setup_testing_defaults(environ)
    environ["SERVER_NAME"] = environ["HTTP_HOST"] = "testserver"
    status: list[str] = []

    def start_response(line: str, response_headers: list[Any], exc_info: Any = None) -> None:
        status.append(line)

    # As django.test.Client does: keep the test's database connection open across the request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        result = WSGIHandler()(environ, start_response)
        b"".join(result)
        result.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return status[0]


def _session_cookie_of(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


@pytest.mark.django_db
def test_an_api_crash_is_reported_without_personal_data_or_secrets(
    sentry_events, jane, api_key, monkeypatch
):
    from apps.registry import selectors

    def broken(**kwargs):
        raise RuntimeError("api-crash-marker")

    _, raw_key = api_key(user=jane)
    monkeypatch.setattr(selectors, "family_list", broken)
    password = "pw-" + secrets.token_hex(12)
    cookie = "cookie-" + secrets.token_hex(12)
    status = _wsgi(
        "GET",
        "/api/v1/registry/families",
        query=urlencode({"password": password, "email": jane.email}),
        headers={
            "Authorization": f"Bearer {raw_key}",
            "X-Api-Key": raw_key,
            "Cookie": f"{django_settings.SESSION_COOKIE_NAME}={cookie}",
        },
    )
    assert status.startswith("500")
    sentry_sdk.flush()

    events = sentry_events.events()
    assert any("api-crash-marker" in v for e in events for v in _exception_values(e))
    # The report says which request failed, not who made it or with what.
    assert any(
        e.get("request", {}).get("url", "").endswith("/api/v1/registry/families") for e in events
    )
    text = sentry_events.serialized()
    assert _secrets_in(text, password, raw_key, raw_key[3:], USERNAME, jane.email, cookie) == []
    for event in events:
        assert "user" not in event
        request = event.get("request", {})
        assert "cookies" not in request
        assert "data" not in request
        assert "query_string" not in request


@pytest.mark.django_db
@pytest.mark.urls("tests.test_sentry")
def test_a_page_crash_is_reported_without_the_form_the_session_or_the_user(sentry_events, jane):
    password = "pw-" + secrets.token_hex(12)
    bogus_key = "gh_secret" + secrets.token_hex(16)
    session_cookie = _session_cookie_of(jane)
    csrf = secrets.token_hex(16)
    status = _wsgi(
        "POST",
        "/boom/",
        body=urlencode({"username": USERNAME, "password": password, "note": "free text"}),
        headers={
            "Authorization": f"Bearer {bogus_key}",
            "Cookie": f"{django_settings.SESSION_COOKIE_NAME}={session_cookie}; csrftoken={csrf}",
            "X-CSRFToken": csrf,
            "X-Forwarded-For": "203.0.113.7",
        },
    )
    assert status.startswith("500")
    sentry_sdk.flush()

    events = sentry_events.events()
    crashes = [e for e in events if any("page-crash-marker" in v for v in _exception_values(e))]
    assert crashes
    assert crashes[0]["request"]["method"] == "POST"
    text = sentry_events.serialized()
    leaked = _secrets_in(
        text,
        password,
        bogus_key,
        USERNAME,
        jane.email,
        session_cookie,
        csrf,
        "free text",
        "203.0.113.7",
    )
    assert leaked == []
    for event in events:
        assert "user" not in event
        headers = {k.lower(): v for k, v in event.get("request", {}).get("headers", {}).items()}
        assert headers.get("authorization", "[Filtered]") == "[Filtered]"
        assert headers.get("cookie", "[Filtered]") == "[Filtered]"


@pytest.mark.django_db
def test_nothing_is_reported_once_sentry_is_closed(jane, api_key, monkeypatch):
    from gatehouse.sentry import init_sentry

    transport = MemoryTransport()
    init_sentry(dsn=DSN, environment="test", transport=transport)
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)
    sentry_sdk.capture_message("after close")
    assert transport.envelopes == []


_PRINT_SENTRY_STATE = """
import json
import django
django.setup()
import sentry_sdk
client = sentry_sdk.get_client()
options = client.options if client.is_active() else {}
print(json.dumps({
    "active": client.is_active(),
    "send_default_pii": options.get("send_default_pii"),
    "environment": options.get("environment"),
}))
"""


def _sentry_state(tmp_path: Path, **env: str) -> dict[str, Any]:
    kept = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR"}}
    result = subprocess.run(
        [sys.executable, "-c", _PRINT_SENTRY_STATE],
        cwd=django_settings.BASE_DIR,
        env={
            **kept,
            "DJANGO_SETTINGS_MODULE": "gatehouse.settings",
            "GATEHOUSE_VAR_DIR": str(tmp_path),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_without_a_dsn_sentry_stays_off(tmp_path):
    assert _sentry_state(tmp_path)["active"] is False


@pytest.mark.slow
def test_with_a_dsn_sentry_is_on_without_default_pii(tmp_path):
    state = _sentry_state(tmp_path, SENTRY_DSN=DSN)
    assert state == {"active": True, "send_default_pii": False, "environment": "development"}
