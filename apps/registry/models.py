"""The model registry: model families (and, with the registry issue, their versions)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ModelFamily(models.Model):
    """A named model serving one purpose (e.g. ``credit-risk``); the unit of access control.

    Permissions are granted per family with django-guardian: view, predict, manage, approve.
    """

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_families"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]
        verbose_name_plural = "model families"
        permissions = [
            ("predict_modelfamily", "Can request predictions from the model family"),
            ("manage_modelfamily", "Can register and configure versions of the model family"),
            ("approve_modelfamily", "Can approve versions of the model family"),
        ]

    def __str__(self) -> str:
        return self.slug
