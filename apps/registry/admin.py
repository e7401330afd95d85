"""Admin for model families, with per-object permission management (django-guardian)."""

from django.contrib import admin
from guardian.admin import GuardedModelAdmin

from apps.registry.models import ModelFamily


@admin.register(ModelFamily)
class ModelFamilyAdmin(GuardedModelAdmin):
    list_display = ("slug", "name", "owner", "created_at")
    search_fields = ("slug", "name")
    readonly_fields = ("created_at",)
