"""Sign-in: passwords, lockout, second factor, sessions, CSRF, navigation and the live socket."""

from __future__ import annotations

import time
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.password_validation import validate_password
from django.contrib.sessions.backends.db import SessionStore
from django.core.exceptions import ValidationError
from django.test import Client
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from gatehouse import otp, services
from gatehouse.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from gatehouse.live import close_user_sockets, push_html
from gatehouse.models import ApiKey
from gatehouse.roles import Role
from tests.conftest import totp_code
from tests.factories import PASSWORD

LOGIN = "/account/login/"
LOGOUT = "/account/logout/"
SETUP = "/account/2fa/"
VERIFY = "/account/2fa/verify/"
OTP_ROLES = [Role.APPROVER, Role.COMPLIANCE_OFFICER, Role.ADMIN]


def login(client: Client, user: Any, password: str = PASSWORD) -> Any:
    return client.post(LOGIN, {"username": user.username, "password": password})


def logged_in_user_id(client: Client) -> str | None:
    return client.session.get(SESSION_KEY)


def wrong_code(device: TOTPDevice) -> str:
    """A six-digit code that no time step within the device's tolerance produces."""
    valid = {totp_code(device, offset_steps=n) for n in range(-3, 4)}
    return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in valid)


def assert_redirects_to(response: Any, path: str) -> None:
    assert response.status_code == 302, response.status_code
    assert response["Location"].split("?")[0] == path


# --- Passwords and lockout ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_wrong_password_shows_the_form_again_and_logs_no_password(client, make_user, caplog):
    user = make_user(Role.BUSINESS_USER, username="alice")
    secret = "not-the-password-Zq81!"
    with caplog.at_level("INFO"):
        response = login(client, user, password=secret)
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert logged_in_user_id(client) is None
    assert_redirects_to(client.get("/"), LOGIN)
    security = [r for r in caplog.records if r.name == "gatehouse.security"]
    assert any("login failed" in r.getMessage() and "alice" in r.getMessage() for r in security)
    assert secret not in caplog.text
    assert all(secret not in r.getMessage() for r in caplog.records)


@pytest.mark.django_db
def test_ten_wrong_passwords_lock_that_username_but_not_a_colleague_on_the_same_address(
    make_user,
):
    victim = make_user(Role.BUSINESS_USER, username="victim")
    colleague = make_user(Role.BUSINESS_USER, username="colleague")
    client = Client(REMOTE_ADDR="10.0.0.7")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, victim, password="wrong password")

    response = login(client, victim)
    assert response.status_code == 429
    assert "Account locked" in response.content.decode()
    assert logged_in_user_id(client) is None

    other = Client(REMOTE_ADDR="10.0.0.7")
    assert_redirects_to(login(other, colleague), "/")
    assert logged_in_user_id(other) == str(colleague.pk)


@pytest.mark.django_db
def test_one_failure_fewer_than_the_limit_does_not_lock(make_user):
    user = make_user(Role.BUSINESS_USER)
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, user, password="wrong password").status_code == 200
    assert_redirects_to(login(client, user), "/")
    assert logged_in_user_id(client) == str(user.pk)


@pytest.mark.django_db
@pytest.mark.parametrize("password", ["password123", "Ab3$xyz"])
def test_common_and_short_passwords_are_refused(password):
    with pytest.raises(ValidationError):
        validate_password(password)


@pytest.mark.django_db
def test_a_long_passphrase_is_accepted():
    passphrase = "the quiet river carries seven paper boats past the old mill at dawn"[:64]
    assert len(passphrase) == 64
    validate_password(passphrase)


@pytest.mark.django_db
def test_a_long_numeric_password_is_accepted_without_composition_rules():
    validate_password("82746193057382916450")


# --- Second factor ------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("role", OTP_ROLES)
def test_a_2fa_role_without_a_device_is_sent_to_enrol(client, make_user, role):
    user = make_user(role)
    assert_redirects_to(login(client, user), SETUP)
    assert_redirects_to(client.get("/"), SETUP)
    assert_redirects_to(client.get("/audit/"), SETUP)
    response = client.get("/api/v1/me")
    assert response.status_code == 403
    assert response.json()["code"] == "otp_required"


@pytest.mark.django_db
@pytest.mark.parametrize("role", OTP_ROLES)
def test_a_2fa_role_must_verify_before_using_pages_and_the_api(
    client, make_user, totp_device, role
):
    user = make_user(role)
    device = totp_device(user)
    assert_redirects_to(login(client, user), VERIFY)
    assert_redirects_to(client.get("/"), VERIFY)
    assert_redirects_to(client.get("/audit/"), VERIFY)
    response = client.get("/api/v1/me")
    assert response.status_code == 403
    assert response.json()["code"] == "otp_required"

    before = client.session.session_key
    assert_redirects_to(client.post(VERIFY, {"token": totp_code(device), "next": "/"}), "/")
    assert client.session.session_key != before
    assert not SessionStore().exists(before)

    assert client.get("/").status_code == 200
    me = client.get("/api/v1/me")
    assert me.status_code == 200
    assert me.json()["otp_verified"] is True
    expected_audit = 403 if role == Role.APPROVER else 200
    assert client.get("/audit/").status_code == expected_audit


@pytest.mark.django_db
def test_a_business_user_needs_no_second_factor(client, make_user):
    user = make_user(Role.BUSINESS_USER)
    assert_redirects_to(login(client, user), "/")
    assert client.get("/").status_code == 200
    me = client.get("/api/v1/me")
    assert me.status_code == 200
    assert me.json()["otp_verified"] is False


@pytest.mark.django_db
def test_a_business_user_who_enrolled_must_still_give_the_code(client, make_user, totp_device):
    user = make_user(Role.BUSINESS_USER)
    device = totp_device(user)
    assert_redirects_to(login(client, user), VERIFY)
    assert_redirects_to(client.get("/"), VERIFY)
    assert client.get("/api/v1/me").status_code == 403
    assert_redirects_to(client.post(VERIFY, {"token": totp_code(device)}), "/")
    assert client.get("/").status_code == 200


@pytest.mark.django_db
def test_a_totp_code_is_accepted_only_once(client, make_user, totp_device):
    user = make_user(Role.APPROVER)
    device = totp_device(user)
    code = totp_code(device)
    login(client, user)
    assert_redirects_to(client.post(VERIFY, {"token": code}), "/")
    assert client.get("/").status_code == 200

    client.post(LOGOUT)
    assert logged_in_user_id(client) is None
    login(client, user)
    response = client.post(VERIFY, {"token": code})
    assert response.status_code == 200
    assert "not valid, or was used already" in response.content.decode()
    assert_redirects_to(client.get("/"), VERIFY)
    assert client.get("/api/v1/me").status_code == 403

    # The refusal was the replay, not the device: the next code still works.
    device.refresh_from_db()
    device.throttle_reset()
    assert_redirects_to(client.post(VERIFY, {"token": totp_code(device, offset_steps=1)}), "/")
    assert client.get("/").status_code == 200


@pytest.mark.django_db
def test_a_backup_code_works_once_only(client, make_user):
    user = make_user(Role.COMPLIANCE_OFFICER)
    codes = otp.backup_codes_create(user)
    assert len(codes) == otp.BACKUP_CODE_COUNT
    assert_redirects_to(login(client, user), VERIFY)
    assert_redirects_to(client.post(VERIFY, {"token": codes[0]}), "/")
    assert client.get("/audit/").status_code == 200
    assert StaticToken.objects.filter(device__user=user).count() == otp.BACKUP_CODE_COUNT - 1

    client.post(LOGOUT)
    login(client, user)
    response = client.post(VERIFY, {"token": codes[0]})
    assert response.status_code == 200
    assert "not valid, or was used already" in response.content.decode()
    assert_redirects_to(client.get("/audit/"), VERIFY)


@pytest.mark.django_db
def test_enrolment_shows_a_qr_code_and_the_secret_then_confirms_with_backup_codes(
    client, make_user
):
    user = make_user(Role.ADMIN)
    login(client, user)
    page = client.get(SETUP)
    assert page.status_code == 200
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    html = page.content.decode()
    assert "<svg" in html
    assert otp.secret_base32(device) in html

    response = client.post(SETUP, {"token": totp_code(device)})
    assert response.status_code == 200
    device.refresh_from_db()
    assert device.confirmed
    tokens = list(StaticToken.objects.filter(device__user=user).values_list("token", flat=True))
    assert len(tokens) == 10
    html = response.content.decode()
    assert all(f"<code>{token}</code>" in html for token in tokens)
    assert client.get("/").status_code == 200
    assert client.get("/audit/").status_code == 200


@pytest.mark.django_db
def test_enrolment_refuses_a_wrong_code(client, make_user):
    user = make_user(Role.APPROVER)
    login(client, user)
    client.get(SETUP)
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    response = client.post(SETUP, {"token": wrong_code(device)})
    assert response.status_code == 200
    assert "This code does not match" in response.content.decode()
    device.refresh_from_db()
    assert not device.confirmed
    assert not StaticToken.objects.filter(device__user=user).exists()
    assert_redirects_to(client.get("/"), SETUP)


# --- Sessions and CSRF --------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_session_id_changes_at_login(make_user):
    user = make_user(Role.BUSINESS_USER)
    client = Client()
    session = client.session
    session["planted"] = "by someone else"
    session.save()
    before = session.session_key
    assert client.cookies[settings.SESSION_COOKIE_NAME].value == before

    assert_redirects_to(login(client, user), "/")
    after = client.session.session_key
    assert after != before
    assert not SessionStore().exists(before)
    assert logged_in_user_id(client) == str(user.pk)


@pytest.mark.django_db
def test_a_page_post_without_a_csrf_token_is_refused(make_user):
    user = make_user(Role.BUSINESS_USER)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    form = {"name": "job", "actions": ["view"], "expires_days": 30}
    assert client.post("/account/api-keys/", form).status_code == 403
    assert not ApiKey.objects.exists()

    client.get("/account/api-keys/")
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    response = client.post("/account/api-keys/", {**form, "csrfmiddlewaretoken": token})
    assert response.status_code == 200
    assert ApiKey.objects.filter(user=user).count() == 1


@pytest.mark.django_db
def test_an_api_post_with_the_session_but_no_csrf_token_is_refused(make_user):
    user = make_user(Role.BUSINESS_USER)
    key = services.apikey_create(user=user, name="job", actions=["view"]).key
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(f"/api/v1/keys/{key.pk}/revoke")
    assert response.status_code in {401, 403}
    key.refresh_from_db()
    assert key.revoked_at is None

    client.get("/account/api-keys/")
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    response = client.post(f"/api/v1/keys/{key.pk}/revoke", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is not None


# --- Navigation ---------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "sees_audit", "sees_admin"),
    [
        (Role.BUSINESS_USER, False, False),
        (Role.API_CONSUMER, False, False),
        (Role.MODEL_OWNER, False, False),
        (Role.APPROVER, False, False),
        (Role.COMPLIANCE_OFFICER, True, False),
        (Role.ADMIN, True, True),
    ],
)
def test_the_home_page_offers_what_the_role_may_use(
    make_user, verified_client, role, sees_audit, sees_admin
):
    client = verified_client(make_user(role))
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Models" in html
    assert "API keys" in html
    assert ("Audit trail" in html) is sees_audit
    assert ("Administration" in html) is sees_admin


@pytest.mark.django_db
def test_the_audit_trail_shows_role_grants(make_user, verified_client):
    make_user(Role.APPROVER, username="granted")
    client = verified_client(make_user(Role.COMPLIANCE_OFFICER))
    response = client.get("/audit/")
    assert response.status_code == 200
    assert "groups: add approver" in response.content.decode()


# --- Live websocket -----------------------------------------------------------------------------


def _session_key_for(user: Any, verified_client: Any = None) -> str:
    """A session of ``user``: password only, or with the second factor when given the fixture."""
    if verified_client is not None:
        return verified_client(user).session.session_key
    client = Client()
    client.force_login(user)
    return client.session.session_key


def _socket(session_key: str = "", origin: bytes = b"http://127.0.0.1") -> WebsocketCommunicator:
    from gatehouse.asgi import application

    headers = [(b"origin", origin), (b"host", b"127.0.0.1")]
    if session_key:
        cookie = f"{settings.SESSION_COOKIE_NAME}={session_key}".encode()
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, "/ws/live/", headers=headers)


@database_sync_to_async
def _user_with_session(make_user: Any, role: Role, verified_client: Any = None) -> tuple[Any, str]:
    user = make_user(role)
    return user, _session_key_for(user, verified_client)


def live_db(test: Any) -> Any:
    return pytest.mark.django_db(transaction=True)(test)


@live_db
async def test_an_anonymous_socket_is_closed():
    communicator = _socket()
    connected, code = await communicator.connect()
    assert not connected
    assert code == CLOSE_UNAUTHENTICATED
    await communicator.disconnect()


@live_db
async def test_a_socket_from_a_foreign_origin_is_refused(make_user):
    _, session_key = await _user_with_session(make_user, Role.BUSINESS_USER)
    communicator = _socket(session_key, origin=b"http://evil.example")
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


@live_db
async def test_a_business_user_receives_live_pushes(make_user, django_capture_on_commit_callbacks):
    user, session_key = await _user_with_session(make_user, Role.BUSINESS_USER)
    communicator = _socket(session_key)
    connected, _ = await communicator.connect()
    assert connected

    def push() -> None:
        with django_capture_on_commit_callbacks(execute=True):
            push_html(user.pk, '<li id="note-1" hx-swap-oob="afterbegin">hello</li>')

    await database_sync_to_async(push)()
    assert await communicator.receive_from(timeout=2) == (
        '<li id="note-1" hx-swap-oob="afterbegin">hello</li>'
    )
    await communicator.disconnect()


@live_db
async def test_a_push_for_another_user_is_not_delivered(make_user):
    user, session_key = await _user_with_session(make_user, Role.BUSINESS_USER)
    other, _ = await _user_with_session(make_user, Role.BUSINESS_USER)
    communicator = _socket(session_key)
    assert (await communicator.connect())[0]
    await database_sync_to_async(push_html)(other.pk, "<p>not for you</p>")
    assert await communicator.receive_nothing(timeout=0.3)
    await database_sync_to_async(push_html)(user.pk, "<p>for you</p>")
    assert await communicator.receive_from(timeout=2) == "<p>for you</p>"
    await communicator.disconnect()


@live_db
async def test_an_approver_without_a_verified_session_is_refused(make_user):
    _, session_key = await _user_with_session(make_user, Role.APPROVER)
    communicator = _socket(session_key)
    connected, code = await communicator.connect()
    assert not connected
    assert code == CLOSE_FORBIDDEN
    await communicator.disconnect()


@live_db
async def test_an_approver_with_a_verified_session_connects(make_user, verified_client):
    _, session_key = await _user_with_session(make_user, Role.APPROVER, verified_client)
    communicator = _socket(session_key)
    connected, _ = await communicator.connect()
    assert connected
    await communicator.disconnect()


@live_db
async def test_closing_a_users_sockets_closes_the_open_socket(make_user):
    user, session_key = await _user_with_session(make_user, Role.BUSINESS_USER)
    communicator = _socket(session_key)
    assert (await communicator.connect())[0]
    await database_sync_to_async(close_user_sockets)(user.pk)
    message = await communicator.receive_output(timeout=2)
    assert message == {"type": "websocket.close", "code": CLOSE_FORBIDDEN}
    await communicator.disconnect()


@live_db
async def test_deactivating_a_user_anywhere_closes_their_open_socket(make_user):
    user, session_key = await _user_with_session(make_user, Role.BUSINESS_USER)
    communicator = _socket(session_key)
    assert (await communicator.connect())[0]
    user.is_active = False
    await database_sync_to_async(user.save)()
    message = await communicator.receive_output(timeout=2)
    assert message == {"type": "websocket.close", "code": CLOSE_FORBIDDEN}
    await communicator.disconnect()


@live_db
async def test_a_session_past_its_idle_timeout_cannot_open_a_socket(make_user):
    from gatehouse.middleware import LAST_SEEN_KEY

    _, session_key = await _user_with_session(make_user, Role.BUSINESS_USER)

    @database_sync_to_async
    def age_session() -> None:
        session = SessionStore(session_key=session_key)
        session[LAST_SEEN_KEY] = int(time.time()) - settings.SESSION_IDLE_TIMEOUT_S - 1
        session.save()

    await age_session()
    connected, code = await _socket(session_key).connect()
    assert not connected
    assert code == CLOSE_FORBIDDEN


@pytest.mark.django_db
def test_a_user_owing_a_second_factor_sees_no_navigation_and_no_socket(
    client, make_user, totp_device
):
    user = make_user(Role.APPROVER)
    totp_device(user)
    login(client, user)
    page = client.get(VERIFY).content.decode()
    assert "second factor required" in page
    assert "ws-connect" not in page
    assert 'aria-label="Main"' not in page


@pytest.mark.django_db
def test_a_throttled_check_says_that_an_unused_code_stays_valid(client, make_user):
    user = make_user(Role.COMPLIANCE_OFFICER)
    codes = otp.backup_codes_create(user)
    login(client, user)
    client.post(VERIFY, {"token": "wrongcode"})
    page = client.post(VERIFY, {"token": codes[0]}).content.decode()
    assert "an unused code stays valid" in page
    from django_otp.plugins.otp_static.models import StaticDevice

    StaticDevice.objects.get(user=user).throttle_reset()
    assert_redirects_to(client.post(VERIFY, {"token": codes[0]}), "/")
