"""Reads of the platform, always scoped to the caller."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from auditlog.models import LogEntry
from django.db.models import QuerySet

from gatehouse.models import ApiKey, Notification
from gatehouse.roles import Role, has_role


def apikey_list(*, user: Any) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(user=user).order_by("-created_at")


def notification_list(*, user: Any, limit: int = 10) -> list[Notification]:
    return list(Notification.objects.filter(user=user)[:limit])


def notification_unread_count(*, user: Any) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).count()


def audit_entry_list(
    *,
    user: Any,
    actor: str = "",
    model: str = "",
    object_id: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[LogEntry]:
    """The audit trail, for admins and compliance officers only; filters are optional."""
    if not has_role(user, Role.ADMIN, Role.COMPLIANCE_OFFICER):
        return LogEntry.objects.none()
    entries = LogEntry.objects.select_related("actor", "content_type").order_by("-timestamp")
    if actor:
        entries = entries.filter(actor__username__iexact=actor)
    if model:
        entries = entries.filter(content_type__model=model.lower())
    if object_id:
        entries = entries.filter(object_pk=object_id)
    if since:
        entries = entries.filter(timestamp__gte=since)
    if until:
        entries = entries.filter(timestamp__lte=until)
    return entries
