"""Demo users, one per role, with printed logins (and backup codes for 2FA roles)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from gatehouse import extensions, otp
from gatehouse.roles import OTP_ROLES, Role

DEMO_USERNAMES: dict[Role, str] = {
    Role.BUSINESS_USER: "alice",
    Role.API_CONSUMER: "bob",
    Role.MODEL_OWNER: "olivia",
    Role.APPROVER: "arthur",
    Role.COMPLIANCE_OFFICER: "carla",
    Role.ADMIN: "admin",
}


@dataclass
class DemoLogin:
    role: Role
    username: str
    password: str
    backup_codes: list[str] = field(default_factory=list)
    totp_secret: str = ""


@transaction.atomic
def seed_demo(*, reset: bool = False, password: str | None = None) -> list[DemoLogin]:
    """Create (or with ``reset``, re-key) one demo user per role; returns logins to print once.

    Users that exist already are left as they are unless ``reset``: their passwords were
    printed when they were created.
    """
    user_model = get_user_model()
    password = password or os.environ.get("DEMO_PASSWORD") or None
    logins: list[DemoLogin] = []
    users: dict[Role, Any] = {}
    for role, username in DEMO_USERNAMES.items():
        user = user_model.objects.filter(username=username).first()
        created = user is None
        if user is None:
            user = user_model.objects.create_user(
                username=username, email=f"{username}@example.org"
            )
        users[role] = user
        user.groups.add(Group.objects.get(name=role.value))
        if role is Role.ADMIN and not user.is_superuser:
            user.is_staff = user.is_superuser = True
            user.save(update_fields=["is_staff", "is_superuser"])
        if not (created or reset):
            continue
        login = DemoLogin(
            role=role, username=username, password=password or secrets.token_urlsafe(12)
        )
        user.set_password(login.password)
        user.save(update_fields=["password"])
        if role in OTP_ROLES:
            TOTPDevice.objects.filter(user=user).delete()
            device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
            login.totp_secret = otp.secret_base32(device)
            login.backup_codes = otp.backup_codes_create(user)
        logins.append(login)
    for step in extensions.registry.demo_steps:
        step(users)
    return logins
