"""Registry pages."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.registry import selectors


@login_required
@require_GET
def family_list(request: HttpRequest) -> HttpResponse:
    visible = list(selectors.family_list(user=request.user))
    checker = selectors.family_permission_checker(user=request.user, families=visible)
    families = [
        (family, selectors.family_actions(user=request.user, family=family, checker=checker))
        for family in visible
    ]
    return render(request, "registry/family_list.html", {"families": families})
