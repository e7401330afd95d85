"""Second-factor enrolment and verification (django-otp TOTP + single-use backup codes)."""

from __future__ import annotations

import logging
from typing import Any

import segno
from django.http import HttpRequest
from django_otp import devices_for_user, match_token
from django_otp import login as otp_login
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

security_log = logging.getLogger("gatehouse.security")

OTP_PENDING_KEY = "_gatehouse_otp_pending"
BACKUP_CODE_COUNT = 10


def is_verified(user: Any) -> bool:
    """Whether the request's user passed a second factor in this session (django-otp)."""
    check = getattr(user, "is_verified", None)
    return bool(check()) if callable(check) else False


def otp_pending(request: HttpRequest) -> bool:
    """Whether the signed-in user still owes a second factor in this session."""
    from gatehouse.roles import user_requires_otp

    user = request.user
    return (
        user.is_authenticated
        and not is_verified(user)
        and (user_requires_otp(user) or bool(request.session.get(OTP_PENDING_KEY)))
    )


def has_confirmed_device(user: Any) -> bool:
    return any(True for _ in devices_for_user(user, confirmed=True))


def pending_totp_device(user: Any) -> TOTPDevice:
    """The unconfirmed authenticator being enrolled (one at a time)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)
    return device


def qr_svg(device: TOTPDevice) -> str:
    return segno.make(device.config_url, error="m").svg_inline(scale=5, dark="#111", light="#fff")


def secret_base32(device: TOTPDevice) -> str:
    from base64 import b32encode

    return b32encode(device.bin_key).decode("ascii")


def backup_codes_create(user: Any) -> list[str]:
    """Replace the user's backup codes with ``BACKUP_CODE_COUNT`` new single-use ones."""
    device, _ = StaticDevice.objects.get_or_create(
        user=user, name="backup", defaults={"confirmed": True}
    )
    device.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(BACKUP_CODE_COUNT)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=c) for c in codes)
    security_log.info("backup codes issued user_id=%s", user.pk)
    return codes


def verify_session(request: HttpRequest, token: str) -> str | None:
    """Check ``token`` against the user's devices; on success mark the session verified.

    Returns None on success, else the message to show. TOTP codes are refused a second time
    (django-otp keeps the last used time step), backup codes are deleted when used, and
    failures are throttled per device (each failure doubles the wait).
    """
    user = request.user
    device = match_token(user, token.strip().replace(" ", ""))
    if device is not None:
        _login(request, device)
        return None
    security_log.warning("otp failed user_id=%s", user.pk)
    message = "This code is not valid, or was used already."
    wait = _throttle_wait_s(user)
    if wait:
        message += (
            f" After a failed code, checks pause for {wait} s (longer after each "
            "failure); an unused code stays valid."
        )
    return message


def _throttle_wait_s(user: Any) -> int:
    from django.utils import timezone

    waits = []
    for device in devices_for_user(user, confirmed=True):
        allowed, data = device.verify_is_allowed()
        locked_until = (data or {}).get("locked_until") if not allowed else None
        if locked_until:
            waits.append(max(1, int((locked_until - timezone.now()).total_seconds()) + 1))
    return min(waits) if waits else 0


def confirm_enrolment(request: HttpRequest, device: TOTPDevice, token: str) -> bool:
    if not device.verify_token(token.strip().replace(" ", "")):
        security_log.warning("otp enrolment code refused user_id=%s", request.user.pk)
        return False
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    security_log.info("otp device enrolled user_id=%s", request.user.pk)
    _login(request, device)
    return True


def _login(request: HttpRequest, device: Any) -> None:
    otp_login(request, device)
    request.session.pop(OTP_PENDING_KEY, None)
    request.session.cycle_key()  # a new session id once the second factor is given
    security_log.info("otp verified user_id=%s device=%s", request.user.pk, type(device).__name__)
