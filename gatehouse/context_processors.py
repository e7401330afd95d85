"""Template context every page needs: navigation for the user's roles, unread notifications."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from gatehouse import selectors
from gatehouse.extensions import nav_for
from gatehouse.roles import roles_of


def platform(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    roles = roles_of(user)
    return {
        "nav_items": nav_for(user, roles),
        "user_roles": sorted(r.label for r in roles),
        "unread_count": selectors.notification_unread_count(user=user),
    }
