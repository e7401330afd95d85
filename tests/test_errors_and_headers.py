"""Request ids, error responses without internals, security headers and production settings."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path

from gatehouse import urls as base_urls
from gatehouse.roles import Role
from tests.factories import PASSWORD


def view_that_raises(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("secret-html-detail")


# URLconf of the tests that need a crashing page: the real one plus /boom/.
handler500 = base_urls.handler500
urlpatterns = [path("boom/", view_that_raises), *base_urls.urlpatterns]

BASE_DIR = Path(django_settings.BASE_DIR)
UUID_HEX = re.compile(r"^[0-9a-f]{32}$")
# Only what a Python process needs: nothing of the developer's or the CI's configuration leaks in.
_KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def _csp(response: HttpResponse) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k in _KEPT_ENV}
    return subprocess.run(
        args,
        cwd=BASE_DIR,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    from gatehouse.tlog.verify import SignerKey

    return {
        "GATEHOUSE_ENV": "production",
        "ALLOWED_HOSTS": "gatehouse.example.org",
        "GATEHOUSE_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SETTINGS_MODULE": "gatehouse.settings",
        "LOG_SIGNING_KEY": SignerKey.generate("gatehouse.example.org/decisions").text(),
        **extra,
    }


# --- Request ids ---------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/account/login/", 200),
        ("/api/v1/me", 401),
        ("/no-such-page/", 404),
        ("/health", 200),
        ("/", 302),
    ],
)
def test_every_response_carries_a_request_id(client, url, status):
    response = client.get(url)
    assert response.status_code == status
    assert UUID_HEX.match(response["X-Request-ID"])


@pytest.mark.django_db
def test_two_requests_get_different_ids(client):
    first = client.get("/health")["X-Request-ID"]
    second = client.get("/health")["X-Request-ID"]
    assert first != second


@pytest.mark.django_db
def test_a_safe_incoming_request_id_is_echoed(client):
    response = client.get("/api/v1/me", HTTP_X_REQUEST_ID="lb-7f3a.9c21_ab")
    assert response["X-Request-ID"] == "lb-7f3a.9c21_ab"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "incoming",
    [
        "abcdefgh\r\nSet-Cookie: evil=1",
        "abcdefgh\nX-Injected: 1",
        "a" * 65,
        "short",
        "has space in it",
        "<script>alert(1)</script>",
    ],
)
def test_an_unsafe_incoming_request_id_is_replaced(client, incoming):
    response = client.get("/health", HTTP_X_REQUEST_ID=incoming)
    assert response["X-Request-ID"] != incoming
    assert UUID_HEX.match(response["X-Request-ID"])
    assert "evil" not in response.cookies


# --- Crashes -------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.urls("tests.test_errors_and_headers")
def test_a_crashing_page_shows_the_request_id_and_no_internals():
    client = Client(raise_request_exception=False)
    response = client.get("/boom/", HTTP_X_REQUEST_ID="crash-report-0001")
    assert response.status_code == 500
    html = response.content.decode()
    assert response["X-Request-ID"] == "crash-report-0001"
    assert "crash-report-0001" in html
    assert "Traceback" not in html
    assert "secret-html-detail" not in html
    assert "RuntimeError" not in html
    assert "view_that_raises" not in html


@pytest.mark.django_db
def test_a_crashing_api_endpoint_answers_a_generic_500_with_the_request_id(make_user, monkeypatch):
    from apps.registry import selectors

    def broken(**kwargs):
        raise RuntimeError("secret-sql-detail")

    monkeypatch.setattr(selectors, "family_list", broken)
    client = Client(raise_request_exception=False)
    client.force_login(make_user(Role.BUSINESS_USER))
    response = client.get("/api/v1/registry/families")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == "server_error"
    assert body["request_id"] == response["X-Request-ID"]
    assert UUID_HEX.match(body["request_id"])
    text = response.content.decode()
    assert "secret-sql-detail" not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text


# --- API error shape -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_api_call_without_credentials_gets_401_in_the_error_shape(client):
    response = client.get("/api/v1/registry/families")
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"detail", "code", "errors"}
    assert body["code"] == "not_authenticated"
    assert body["errors"] == []
    assert body["detail"]


@pytest.mark.django_db
def test_an_unknown_family_gets_404_in_the_error_shape(make_user):
    client = Client()
    client.force_login(make_user(Role.BUSINESS_USER))
    response = client.get("/api/v1/registry/families/no-such-family")
    assert response.status_code == 404
    body = response.json()
    assert set(body) == {"detail", "code", "errors"}
    assert body["code"] == "not_found"
    assert "no-such-family" in body["detail"]


@pytest.mark.django_db
def test_an_invalid_path_parameter_gets_422_naming_the_field(make_user):
    client = Client()
    client.force_login(make_user(Role.API_CONSUMER))
    response = client.post("/api/v1/keys/notanint/revoke")
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid"
    assert body["errors"][0]["field"] == "key_id"
    assert body["errors"][0]["message"]
    assert "key_id" in body["detail"]


# --- Security headers ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/account/login/", "/api/v1/me", "/health"])
def test_security_headers_are_set_on_pages_and_the_api(client, url):
    response = client.get(url)
    csp = _csp(response)
    assert csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["default-src"] == ["'self'"]
    assert "'unsafe-inline'" not in csp["script-src"]
    assert "'unsafe-eval'" not in csp["script-src"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_the_session_cookie_is_httponly_and_samesite_lax_after_login(make_user):
    user = make_user(Role.BUSINESS_USER)
    client = Client()
    response = client.post("/account/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302
    cookie = response.cookies[django_settings.SESSION_COOKIE_NAME]
    assert cookie.value
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"


# --- Public and protected paths ------------------------------------------------------------------


@pytest.mark.django_db
def test_health_is_public(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["/", "/account/api-keys/", "/audit/", "/registry/families/", "/account/2fa/"]
)
def test_pages_send_anonymous_users_to_the_login_page(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/account/login/")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/v1/me"),
        ("get", "/api/v1/keys"),
        ("post", "/api/v1/keys/1/revoke"),
        ("get", "/api/v1/registry/families"),
        ("get", "/api/v1/registry/families/credit-risk"),
    ],
)
def test_api_endpoints_answer_401_to_anonymous_callers(client, method, url):
    response = getattr(client, method)(url)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


# --- Production settings -------------------------------------------------------------------------


@pytest.mark.slow
def test_production_settings_pass_the_deploy_check(tmp_path):
    env = _production_env(tmp_path, SECRET_KEY=secrets.token_urlsafe(48))
    result = _run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], **env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.slow
def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = _run([sys.executable, "manage.py", "check", "--deploy"], **_production_env(tmp_path))
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert not (tmp_path / "var" / "secret_key").exists()


@pytest.mark.slow
def test_production_refuses_to_start_without_a_log_signing_key(tmp_path):
    env = _production_env(tmp_path, SECRET_KEY=secrets.token_urlsafe(48), LOG_SIGNING_KEY="")
    result = _run([sys.executable, "manage.py", "check", "--deploy"], **env)
    assert result.returncode != 0
    assert "LOG_SIGNING_KEY" in result.stderr
    assert not (tmp_path / "var" / "log-signing-key").exists()


@pytest.mark.slow
def test_production_reads_the_secret_key_from_a_file(tmp_path):
    key = secrets.token_urlsafe(48)
    key_file = tmp_path / "secret_key.txt"
    key_file.write_text(key + "\n", encoding="utf-8")
    env = _production_env(tmp_path, SECRET_KEY_FILE=str(key_file))
    check = _run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], **env
    )
    assert check.returncode == 0, check.stdout + check.stderr
    code = (
        "import django; django.setup(); from django.conf import settings as s; print(s.SECRET_KEY)"
    )
    shown = _run([sys.executable, "-c", code], **env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == key


_PRINT_PRODUCTION_SETTINGS = """
import json
import django
django.setup()
from django.conf import settings
from django.test import Client
docs = Client(HTTP_HOST="gatehouse.example.org").get("/api/v1/docs", secure=True)
print(json.dumps({
    "API_DOCS_PUBLIC": settings.API_DOCS_PUBLIC,
    "DEBUG": settings.DEBUG,
    "SESSION_COOKIE_SECURE": settings.SESSION_COOKIE_SECURE,
    "CSRF_COOKIE_SECURE": settings.CSRF_COOKIE_SECURE,
    "SECURE_HSTS_SECONDS": settings.SECURE_HSTS_SECONDS,
    "SECURE_SSL_REDIRECT": settings.SECURE_SSL_REDIRECT,
    "docs_status": docs.status_code,
    "docs_location": docs.get("Location", ""),
}))
"""


@pytest.mark.slow
def test_production_hardens_cookies_transport_and_hides_the_api_docs(tmp_path):
    env = _production_env(tmp_path, SECRET_KEY=secrets.token_urlsafe(48))
    result = _run([sys.executable, "-c", _PRINT_PRODUCTION_SETTINGS], **env)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["API_DOCS_PUBLIC"] is False
    assert values["DEBUG"] is False
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["SECURE_HSTS_SECONDS"] >= 31536000
    assert values["SECURE_SSL_REDIRECT"] is True
    # Anonymous callers are sent to the staff login instead of seeing the docs.
    assert values["docs_status"] == 302
    assert "/admin/login/" in values["docs_location"]


def test_the_api_docs_are_public_outside_production():
    assert django_settings.API_DOCS_PUBLIC is True


@pytest.mark.parametrize(
    ("url", "status", "field"),
    [
        ("/api/v1/models/credit%00risk", 422, "path"),
        ("/api/v1/reviews?status=open%00", 422, "query"),
        ("/registry/families/x%00/", 400, None),
    ],
)
def test_nul_characters_in_paths_and_queries_are_refused_before_any_view(
    client, url, status, field
):
    response = client.get(url)
    assert response.status_code == status
    if field:
        assert response.json()["errors"][0]["field"] == field
