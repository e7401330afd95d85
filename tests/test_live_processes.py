"""Live updates across real processes: a Celery worker's push reaches a browser's websocket."""

from __future__ import annotations

import json
import time

import pytest
from django.conf import settings
from django.test import Client
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from gatehouse.models import ApiKey, Notification
from gatehouse.roles import Role
from gatehouse.tasks import warn_expiring_api_keys
from tests.processes import asgi_server, celery_worker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.real_layer,
    pytest.mark.django_db(transaction=True),
]


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.session.session_key}"


def test_a_task_in_a_real_worker_updates_the_page_over_a_real_websocket(
    tmp_path, make_user, api_key
):
    user, _ = api_key(expires_days=2)
    cookie = _session_cookie(user)
    with asgi_server(tmp_path) as host, celery_worker(tmp_path) as queue:
        headers = {"Cookie": cookie, "Origin": f"http://{host}"}
        with connect(f"ws://{host}/ws/live/", additional_headers=headers, open_timeout=10) as ws:
            time.sleep(0.5)  # the consumer joins its group after the handshake
            started = time.monotonic()
            result = warn_expiring_api_keys.apply_async(queue=queue)
            html = ws.recv(timeout=30)
            elapsed = time.monotonic() - started
        assert result.get(timeout=30) == 1
    note = Notification.objects.get(user=user)
    assert "expires on" in note.text
    assert 'id="notifications"' in html
    assert "hx-swap-oob" in html
    assert f"{ApiKey.objects.get().prefix}" in html
    print(f"\nworker -> browser live update in {elapsed:.2f} s")
    assert elapsed < 10


def test_the_real_server_refuses_a_socket_from_a_foreign_origin(tmp_path, make_user):
    cookie = _session_cookie(make_user(Role.BUSINESS_USER))
    with asgi_server(tmp_path) as host:
        headers = {"Cookie": cookie, "Origin": "http://evil.example"}
        with pytest.raises(InvalidStatus) as excinfo:
            connect(f"ws://{host}/ws/live/", additional_headers=headers, open_timeout=10)
        assert excinfo.value.response.status_code == 403


def test_the_real_server_serves_pages_static_files_and_health(tmp_path, make_user):
    import urllib.request

    with asgi_server(tmp_path) as host:
        with urllib.request.urlopen(f"http://{host}/health", timeout=10) as response:
            assert json.load(response)["status"] == "ok"
        with urllib.request.urlopen(
            f"http://{host}/static/django_htmx/htmx-2.min.js", timeout=10
        ) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"http://{host}/account/login/", timeout=10) as response:
            assert b"Sign in" in response.read()
