"""Admin for decisions (read-only: the record is append-only) and routing."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.inference.models import Decision, RoutingConfig


@admin.register(Decision)
class DecisionAdmin(admin.ModelAdmin):
    list_display = ("created_at", "family", "version_label", "route", "label")
    list_filter = ("family", "route")
    search_fields = ("id", "request_id")
    exclude = ("inputs", "subject_pseudonym", "payload_salt")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RoutingConfig)
class RoutingConfigAdmin(admin.ModelAdmin):
    list_display = ("family", "suspended", "canary_version", "canary_percent", "shadow_version")
