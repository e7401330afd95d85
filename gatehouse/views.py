"""Platform pages: home, sign-in with a second factor, API keys, audit trail, health, errors."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from gatehouse import otp, selectors, services
from gatehouse.errors import ApplicationError, server_error_body
from gatehouse.extensions import health_checks, nav_for
from gatehouse.forms import ApiKeyForm, AuditFilterForm, OTPTokenForm, PasswordConfirmForm
from gatehouse.roles import Role, has_role, roles_of, user_requires_otp

logger = logging.getLogger(__name__)


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    roles = roles_of(request.user)
    items = [i for i in nav_for(request.user, roles) if i.url_name != "home"]
    return render(
        request,
        "gatehouse/home.html",
        {
            "roles": sorted(r.label for r in roles),
            "items": items,
            "notifications": selectors.notification_list(user=request.user),
        },
    )


class LoginView(auth_views.LoginView):
    template_name = "gatehouse/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        user = form.get_user()
        if otp.has_confirmed_device(user):
            self.request.session[otp.OTP_PENDING_KEY] = True
            return redirect(f"{_url('otp_verify')}?next={self.get_success_url()}")
        if user_requires_otp(user):
            return redirect("otp_setup")
        return response


def _url(name: str) -> str:
    from django.urls import reverse

    return reverse(name)


def _safe_next(request: HttpRequest) -> str:
    from django.utils.http import url_has_allowed_host_and_scheme

    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return _url("home")


@login_required
@require_http_methods(["GET", "POST"])
def otp_verify(request: HttpRequest) -> HttpResponse:
    if not otp.has_confirmed_device(request.user):
        return redirect("otp_setup")
    form = OTPTokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        problem = otp.verify_session(request, form.cleaned_data["token"])
        if problem is None:
            return redirect(_safe_next(request))
        form.add_error("token", problem)
    return render(request, "gatehouse/otp_verify.html", {"form": form, "next": _safe_next(request)})


@login_required
@require_http_methods(["GET", "POST"])
def otp_setup(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    if otp.has_confirmed_device(user):
        return _otp_manage(request)
    device = otp.pending_totp_device(user)
    form = OTPTokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if otp.confirm_enrolment(request, device, form.cleaned_data["token"]):
            codes = otp.backup_codes_create(user)
            return render(request, "gatehouse/otp_backup_codes.html", {"codes": codes})
        form.add_error("token", "This code does not match. Check the time on your phone.")
    return render(
        request,
        "gatehouse/otp_setup.html",
        {
            "form": form,
            "qr_svg": otp.qr_svg(device),
            "secret": otp.secret_base32(device),
        },
    )


def _otp_manage(request: HttpRequest) -> HttpResponse:
    """With 2FA active: new backup codes, after the password is entered again."""
    form = PasswordConfirmForm(request.POST or None, user=request.user)
    if request.method == "POST" and otp.is_verified(request.user) and form.is_valid():
        codes = otp.backup_codes_create(request.user)
        return render(request, "gatehouse/otp_backup_codes.html", {"codes": codes})
    return render(request, "gatehouse/otp_manage.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None, user=request.user)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            created = services.apikey_create(user=request.user, **form.cleaned_data)
        except ApplicationError as exc:
            for error in exc.errors or [{"field": None, "message": exc.detail}]:
                field = error.get("field")
                form.add_error(field if field in form.fields else None, error["message"])
        else:
            form = ApiKeyForm(user=request.user)
    context = {"form": form, "created": created, "keys": selectors.apikey_list(user=request.user)}
    template = "gatehouse/api_keys.html"
    if request.htmx:  # type: ignore[attr-defined]
        template += "#keys-panel"
    return render(request, template, context, status=422 if form.errors else 200)


@login_required
@require_POST
def api_key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    try:
        key = services.apikey_revoke(key_id=key_id, by=request.user)
    except ApplicationError as exc:
        return HttpResponse(exc.detail, status=exc.status_code)
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "gatehouse/api_keys.html#key-row", {"key": key})
    messages.success(request, f"Key {key.prefix}... revoked.")
    return redirect("api_keys")


@login_required
@require_POST
def notifications_read(request: HttpRequest) -> HttpResponse:
    services.notifications_mark_read(user=request.user)
    return render(request, "gatehouse/partials/notification_badge.html", {"unread_count": 0})


@login_required
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    if not has_role(request.user, Role.ADMIN, Role.COMPLIANCE_OFFICER):
        return render(request, "403.html", status=403)
    form = AuditFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    entries = selectors.audit_entry_list(
        user=request.user, **{k: v for k, v in filters.items() if v}
    )
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    template = "gatehouse/audit_log.html"
    if request.htmx:  # type: ignore[attr-defined]
        template += "#audit-table"
    return render(request, template, {"form": form, "page": page})


# Seconds a health probe may wait for the broker (each probe opens one short connection).
HEALTH_BROKER_TIMEOUT_S = 2


def _broker_status() -> str:
    from gatehouse.celery import app

    with app.connection_for_write(connect_timeout=HEALTH_BROKER_TIMEOUT_S) as conn:
        conn.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=HEALTH_BROKER_TIMEOUT_S
        )
    return "ok"


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Public health: database, cache and Celery broker (required), then the components apps
    register (``extensions.register_health_check``, e.g. the inference backend). 200 when every
    required component is up, 503 otherwise. ``?probe=live`` answers 200 without touching any
    dependency (liveness: the process serves requests). Names no versions, hosts or errors."""
    if request.GET.get("probe") == "live":
        return JsonResponse({"status": "ok"})
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception:
        logger.exception("health: database check failed")
        checks["database"] = "error"
    try:
        cache.set("gatehouse:health", "1", 5)
        checks["cache"] = "ok" if cache.get("gatehouse:health") == "1" else "error"
    except Exception:
        logger.exception("health: cache check failed")
        checks["cache"] = "error"
    try:
        checks["broker"] = _broker_status()
    except Exception:
        logger.exception("health: broker check failed")
        checks["broker"] = "error"
    healthy = all(v == "ok" for v in checks.values())
    degraded = False
    for component in health_checks():
        try:
            state = component.check()
        except Exception:
            logger.exception("health: %s check failed", component.name)
            state = "down"
        state = state if state in {"ok", "degraded"} else "down"
        checks[component.name] = state
        if state != "ok":
            degraded = True
            healthy = healthy and (state == "degraded" or not component.required)
    status = ("degraded" if degraded else "ok") if healthy else "error"
    return JsonResponse({"status": status, "checks": checks}, status=200 if healthy else 503)


def server_error(request: HttpRequest) -> HttpResponseBase:
    """Generic 500 page with the request id; never a traceback."""
    request_id = getattr(request, "request_id", "")
    if request.path.startswith("/api/"):
        return JsonResponse(server_error_body(request_id), status=500)
    return render(request, "500.html", {"request_id": request_id}, status=500)
