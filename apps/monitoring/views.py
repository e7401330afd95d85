"""Monitoring pages: the live dashboard (rendered per user, pushed over the websocket, polled
when the socket is down), incident controls, and ``/metrics`` for Prometheus."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from apps.monitoring import metrics_export, selectors, services
from apps.registry.models import ModelFamily
from gatehouse.errors import ApplicationError, NotFound, PermissionDenied
from gatehouse.otp import is_verified
from gatehouse.roles import Role, has_role

View = Callable[..., HttpResponse]
DASHBOARD_ROLES = frozenset({Role.ADMIN, Role.MODEL_OWNER, Role.COMPLIANCE_OFFICER, Role.APPROVER})


def _page(view: View) -> View:
    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except ApplicationError as exc:
            response = render(
                request, "monitoring/error.html", {"error": exc}, status=exc.status_code
            )
            for name, value in exc.headers.items():
                response[name] = value
            return response

    return wrapper


def _require_viewer(user: Any) -> None:
    if not has_role(user, *DASHBOARD_ROLES):
        raise PermissionDenied("The dashboard is for operators, owners and compliance officers.")


def dashboard_context(user: Any) -> dict[str, Any]:
    from apps.monitoring import drift

    families = selectors.visible_families(user)
    stats = selectors.family_stats(families, user=user)
    snapshots = drift.latest_snapshots(families)
    for item in stats:
        item.drift = snapshots.get(item.family.pk)
    context: dict[str, Any] = {
        "stats": stats,
        "events": selectors.events(families),
        "generated_at": timezone.now(),
        "charts": {
            s.family.slug: {"labels": s.labels, "series": s.series, "scores": s.score_bins}
            for s in stats
        },
    }
    context.update(_compliance_context(user, families, stats))
    context.update(_alerts_context(user))
    return context


def _compliance_context(user: Any, families: list[ModelFamily], stats: list[Any]) -> dict[str, Any]:
    from apps.compliance.models import ErasureRequest, ErasureStatus, Review, ReviewStatus

    open_reviews: dict[int, int] = {}
    for family_id in Review.objects.filter(
        status=ReviewStatus.OPEN, family__in=families
    ).values_list("family_id", flat=True):
        open_reviews[family_id] = open_reviews.get(family_id, 0) + 1
    for item in stats:
        item.open_reviews = open_reviews.get(item.family.pk, 0)
    erasures: list[Any] = []
    if has_role(user, Role.COMPLIANCE_OFFICER, Role.ADMIN):
        now = timezone.now()
        erasures = list(
            ErasureRequest.objects.filter(
                status__in=[ErasureStatus.PENDING, ErasureStatus.APPROVED]
            ).order_by("deadline")[:10]
        )
        for item in erasures:
            item.days_left = (item.deadline - now).days
    return {
        "erasures": erasures,
        "show_erasures": has_role(user, Role.COMPLIANCE_OFFICER, Role.ADMIN),
    }


def _alerts_context(user: Any) -> dict[str, Any]:
    from apps.monitoring import alerts

    return {"alerts": list(alerts.alerts_visible(user=user, active_only=True)[:20])}


def render_dashboard(user: Any) -> str:
    """The dashboard partial for ``user`` (the live topic's renderer): only what they may see."""
    if not getattr(user, "is_authenticated", False) or not has_role(user, *DASHBOARD_ROLES):
        return ""
    return render_to_string(
        "monitoring/partials/dashboard.html", {**dashboard_context(user), "oob": True, "user": user}
    )


@_page
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    _require_viewer(request.user)
    template = "monitoring/dashboard.html"
    if request.htmx:  # type: ignore[attr-defined]
        template = "monitoring/partials/dashboard.html"  # polled while the socket is down
    return render(request, template, dashboard_context(request.user))


def _family(request: HttpRequest, slug: str) -> ModelFamily:
    family = next((f for f in selectors.visible_families(request.user) if f.slug == slug), None)
    if family is None:
        raise NotFound(f"No model family '{slug}'.")
    return family


@_page
@require_POST
def kill_switch(request: HttpRequest, slug: str) -> HttpResponse:
    family = _family(request, slug)
    services.kill_switch(
        family=family,
        user=request.user,
        suspend=request.POST.get("suspend") == "true",
        reason=request.POST.get("reason", ""),
    )
    return _after_control(request)


@_page
@require_POST
def rollback(request: HttpRequest, slug: str) -> HttpResponse:
    services.rollback(family=_family(request, slug), user=request.user)
    return _after_control(request)


@_page
@require_POST
def canary(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        percent = int(request.POST.get("canary_percent", ""))
    except ValueError:
        percent = -1
    services.canary_set(family=_family(request, slug), user=request.user, percent=percent)
    return _after_control(request)


def _after_control(request: HttpRequest) -> HttpResponse:
    if request.htmx:  # type: ignore[attr-defined]
        return render(
            request, "monitoring/partials/dashboard.html", dashboard_context(request.user)
        )
    return redirect("monitoring:dashboard")


@require_GET
def prometheus(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of the rolled-up metrics: a bearer ``METRICS_TOKEN``, or an
    administrator's 2FA-verified session. Anyone else: 401."""
    token = settings.METRICS_TOKEN or ""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    by_token = bool(token) and hmac.compare_digest(header.encode(), f"Bearer {token}".encode())
    user = request.user
    by_session = (
        getattr(user, "is_authenticated", False)
        and has_role(user, Role.ADMIN)
        and is_verified(user)
    )
    if not (by_token or by_session):
        response = HttpResponse("authentication required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics_export.exposition()
    return HttpResponse(body, content_type=content_type)
