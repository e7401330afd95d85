"""Template context every page needs: navigation for the user's roles, unread notifications."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from gatehouse import selectors
from gatehouse.extensions import nav_for
from gatehouse.otp import otp_pending
from gatehouse.roles import roles_of


def platform(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    if otp_pending(request):
        # Until the second factor is given, the page offers nothing but giving it (or leaving).
        return {"otp_pending": True}
    roles = roles_of(user)
    return {
        "otp_pending": False,
        "nav_items": nav_for(user, roles),
        "user_roles": sorted(r.label for r in roles),
        "unread_count": selectors.notification_unread_count(user=user),
    }
