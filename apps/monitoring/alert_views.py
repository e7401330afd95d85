"""Alert pages: the list of active and recently acknowledged alerts, and acknowledgement (htmx).

Every ``ApplicationError`` becomes a page, or for htmx the alert list with the message, with its
status code; never a server error.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.monitoring import alerts
from gatehouse.errors import ApplicationError, NotFound

PARTIAL = "monitoring/partials/alert_list.html"
ACTIVE_LIMIT = 200
RECENT_LIMIT = 50


def _error_page(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    template = "compliance/error.html"
    if request.htmx:  # type: ignore[attr-defined]
        template += "#error"
    response = render(request, template, {"error": exc}, status=exc.status_code)
    for name, value in exc.headers.items():
        response[name] = value
    return response


def _active(request: HttpRequest) -> list[Any]:
    return list(alerts.alerts_visible(user=request.user)[:ACTIVE_LIMIT])


@login_required
@require_GET
def alert_list(request: HttpRequest) -> HttpResponse:
    """The alerts page; for htmx (polling fallback) only the active list."""
    if not alerts.can_see_alerts(request.user):
        return _error_page(request, NotFound("No such page."))
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, PARTIAL, {"alerts": _active(request)})
    recent = list(alerts.alerts_recently_acknowledged(user=request.user)[:RECENT_LIMIT])
    return render(request, "monitoring/alerts.html", {"alerts": _active(request), "recent": recent})


@login_required
@require_POST
def alert_acknowledge(request: HttpRequest, alert_id: int) -> HttpResponse:
    """Acknowledge one alert; htmx gets the refreshed active list (with the error, if any)."""
    try:
        alerts.alert_acknowledge(alert_id=alert_id, user=request.user)
    except ApplicationError as exc:
        if not request.htmx:  # type: ignore[attr-defined]
            return _error_page(request, exc)
        response = render(
            request, PARTIAL, {"alerts": _active(request), "error": exc}, status=exc.status_code
        )
        for name, value in exc.headers.items():
            response[name] = value
        return response
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, PARTIAL, {"alerts": _active(request)})
    return redirect("monitoring:alerts")
