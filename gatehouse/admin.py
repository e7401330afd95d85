"""Admin for API keys: list, filter and revoke; the secret is never stored or shown."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from gatehouse.models import ApiKey, Notification


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "prefix",
        "user",
        "actions",
        "families",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )
    list_filter = ("revoked_at", "expires_at")
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = (
        "user",
        "prefix",
        "families",
        "actions",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "last_used_at",
    )
    exclude = ("key_hash",)
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are created by their owner (shown once) or by create_api_key

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        # One save per key (not QuerySet.update) so that each revocation is audited.
        for key in queryset.filter(revoked_at__isnull=True):
            key.revoked_at = timezone.now()
            key.revoked_by = request.user  # type: ignore[assignment]
            key.save(update_fields=["revoked_at", "revoked_by"])


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("user", "level", "text", "created_at", "read_at")
    list_filter = ("level",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
