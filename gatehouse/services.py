"""Writes of the platform: API keys, notifications, user access."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NotRequired, TypedDict, Unpack

from django.conf import settings
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from gatehouse import live
from gatehouse.auth import display_prefix, generate_key, hash_key
from gatehouse.errors import NotFound, PermissionDenied, ValidationFailed
from gatehouse.extensions import alert_raised, family_choices_for
from gatehouse.models import Alert, ApiKey, ApiKeyAction, Notification

security_log = logging.getLogger("gatehouse.security")


@dataclass(frozen=True)
class CreatedApiKey:
    key: ApiKey
    raw: str  # shown once, never stored


def apikey_create(
    *,
    user: Any,
    name: str,
    actions: Iterable[str],
    families: Iterable[str] = (),
    expires_days: int | None = None,
    created_by: Any | None = None,
) -> CreatedApiKey:
    name = name.strip()
    if not name:
        raise ValidationFailed.for_field("name", "A name is required.", code="required")
    actions = sorted(set(actions))
    unknown = [a for a in actions if a not in ApiKeyAction.values]
    if not actions or unknown:
        raise ValidationFailed.for_field(
            "actions",
            f"Choose one or more of {', '.join(ApiKeyAction.values)}"
            + (f"; unknown: {', '.join(unknown)}." if unknown else "."),
        )
    families = sorted(set(families))
    allowed = {slug for slug, _ in family_choices_for(user)}
    foreign = [f for f in families if f not in allowed]
    if foreign:
        raise ValidationFailed.for_field(
            "families", f"Not a model family this user may use: {', '.join(foreign)}."
        )
    days = settings.API_KEY_DEFAULT_EXPIRY_DAYS if expires_days is None else expires_days
    if not 1 <= days <= settings.API_KEY_MAX_EXPIRY_DAYS:
        raise ValidationFailed.for_field(
            "expires_days", f"Must be between 1 and {settings.API_KEY_MAX_EXPIRY_DAYS} days."
        )
    raw = generate_key()
    key = ApiKey.objects.create(
        user=user,
        name=name,
        prefix=display_prefix(raw),
        key_hash=hash_key(raw),
        families=families,
        actions=actions,
        expires_at=timezone.now() + timedelta(days=days),
        created_by=created_by or user,
    )
    security_log.info("api key created id=%s prefix=%s user_id=%s", key.pk, key.prefix, user.pk)
    return CreatedApiKey(key=key, raw=raw)


def apikey_revoke(*, key_id: int, by: Any) -> ApiKey:
    """Revoke a key; the very next request with it fails. Owners revoke theirs, admins any."""
    key = ApiKey.objects.filter(pk=key_id).first()
    if key is None or (key.user_id != by.pk and not by.has_perm("gatehouse.change_apikey")):
        raise NotFound("No such API key.")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.revoked_by = by
        key.save(update_fields=["revoked_at", "revoked_by"])
        security_log.info("api key revoked id=%s prefix=%s by=%s", key.pk, key.prefix, by.pk)
    return key


def notification_create(
    *,
    user: Any,
    text: str,
    link: str = "",
    level: str = Notification.Level.INFO,
    dedupe_key: str = "",
) -> Notification | None:
    """Store a notification and push it live; None if one with ``dedupe_key`` exists already."""
    try:
        with transaction.atomic():
            note = Notification.objects.create(
                user=user, text=text, link=link, level=level, dedupe_key=dedupe_key
            )
    except IntegrityError:
        return None
    from gatehouse.selectors import notification_unread_count

    html = render_to_string(
        "gatehouse/partials/notification_live.html",
        {"note": note, "unread_count": notification_unread_count(user=user), "oob": True},
    )
    live.push_html(user.pk, html, event="notification")
    return note


def apikeys_warn_expiring(*, within_days: int = 7) -> int:
    """Notify owners once of each active key that expires within ``within_days``."""
    now = timezone.now()
    keys = ApiKey.objects.select_related("user").filter(
        revoked_at__isnull=True,
        expires_at__gt=now,
        expires_at__lte=now + timedelta(days=within_days),
        user__is_active=True,
    )
    sent = 0
    for key in keys:
        note = notification_create(
            user=key.user,
            level=Notification.Level.WARNING,
            text=f"API key '{key.name}' ({key.prefix}...) expires on "
            f"{key.expires_at:%Y-%m-%d %H:%M} UTC.",
            link="/account/api-keys/",
            dedupe_key=f"apikey-expiry:{key.pk}",
        )
        sent += note is not None
    return sent


def notifications_mark_read(*, user: Any) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).update(
        read_at=timezone.now()
    )


def user_deactivate(*, user: Any, by: Any) -> None:
    """End a user's access: no login, keys stop working, open websockets are closed."""
    if not by.has_perm("auth.change_user"):
        raise PermissionDenied()
    user.is_active = False
    user.save(update_fields=["is_active"])  # closes the user's websockets (gatehouse.signals)
    security_log.info("user deactivated user_id=%s by=%s", user.pk, by.pk)


class AlertFields(TypedDict):
    """An alert's fields, as ``alert_raise`` and ``alert_raise_once`` take them (keywords)."""

    kind: str
    severity: str
    title: str
    detail: NotRequired[str]
    subject: NotRequired[str]
    family: NotRequired[str]  # a model family's slug: only those who may view it see the alert


def alert_raise(**fields: Unpack[AlertFields]) -> Alert:
    """Record an alert for operators (the monitoring app shows and routes it)."""
    alert = Alert.objects.create(**fields)
    security_log.warning("alert raised kind=%s subject=%s", alert.kind, alert.subject)
    # Listeners (delivery, live push) see only committed alerts.
    transaction.on_commit(lambda: alert_raised(alert))
    return alert


def alert_raise_once(**fields: Unpack[AlertFields]) -> Alert | None:
    """``alert_raise`` unless an unacknowledged alert of the same kind and subject exists
    (then None): a condition that persists is reported once until someone acknowledges it."""
    subject = fields.get("subject", "")
    still_open = Alert.objects.filter(
        kind=fields["kind"], subject=subject, acknowledged_at__isnull=True
    )
    if still_open.exists():
        return None
    return alert_raise(**fields)
