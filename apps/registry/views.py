"""Registry pages: families, versions, registration, lifecycle actions and the approval queue.

Views parse, check, call a selector or service and render. Every ``ApplicationError`` becomes a
page (or an htmx partial) with its status code and message, never a server error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q, prefetch_related_objects
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.registry import selectors, services
from apps.registry.forms import DeployForm, ReasonForm, VersionRegistrationForm
from apps.registry.models import ModelFamily, ModelVersion, VersionStatus
from apps.registry.permissions import FamilyAction
from gatehouse import otp
from gatehouse.errors import ApplicationError, OTPRequired, PermissionDenied, ValidationFailed
from gatehouse.roles import Role, has_role

S = VersionStatus
VERSION_TEMPLATE = "registry/version_detail.html"
# Overall metrics where a rise is an improvement; the others (e.g. positive_rate) are neutral.
HIGHER_IS_BETTER = frozenset({"accuracy", "balanced_accuracy", "f1_macro", "roc_auc"})


# --- Helpers ----------------------------------------------------------------------------------


def _error_page(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    template = "registry/error.html"
    if request.htmx:  # type: ignore[attr-defined]
        template += "#error"
    response = render(request, template, {"error": exc}, status=exc.status_code)
    for name, value in exc.headers.items():
        response[name] = value
    return response


def _actions_on(user: Any, family: ModelFamily) -> set[str]:
    return set(selectors.family_actions(user=user, family=family))


def _may_see_grants(user: Any, actions: set[str]) -> bool:
    return bool(actions & {FamilyAction.MANAGE, FamilyAction.APPROVE}) or has_role(user, Role.ADMIN)


def _may_register(user: Any, actions: set[str]) -> bool:
    return FamilyAction.MANAGE in actions and has_role(user, Role.MODEL_OWNER, Role.ADMIN)


def _metric_rows(version: ModelVersion, previous: ModelVersion | None) -> list[dict[str, Any]]:
    """Overall metrics of ``version`` beside those of ``previous`` with the difference."""
    current = (version.metrics or {}).get("overall") or {}
    before = ((previous.metrics or {}).get("overall") or {}) if previous else {}
    rows = []
    for name in [*current, *(n for n in before if n not in current)]:
        value, old = current.get(name), before.get(name)
        diff = (
            value - old if isinstance(value, int | float) and isinstance(old, int | float) else None
        )
        rows.append(
            {
                "name": name,
                "value": value,
                "previous": old,
                "diff": diff,
                "better": name in HIGHER_IS_BETTER,
            }
        )
    return rows


def _signature_rows(signature: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for feature in signature.get("features", []):
        low, high = feature.get("minimum"), feature.get("maximum")
        if feature.get("allowed"):
            domain = ", ".join(feature["allowed"])
        elif low is not None or high is not None:
            domain = f"{'' if low is None else f'{low:g}'} to {'' if high is None else f'{high:g}'}"
        else:
            domain = ""
        rows.append({**feature, "domain": domain.strip()})
    return rows


def _group_tables(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Per protected feature: its groups' metrics and the fairness differences between them."""
    fairness = metrics.get("fairness") or {}
    return [
        {
            "feature": feature,
            "rows": [{"group": group, **values} for group, values in groups.items()],
            "fairness": fairness.get(feature) or {},
        }
        for feature, groups in (metrics.get("by_group") or {}).items()
    ]


def _version_context(
    request: HttpRequest,
    version: ModelVersion,
    *,
    bound: dict[str, Any] | None = None,
    error: ApplicationError | None = None,
    error_on: str = "",
    notice: str = "",
) -> dict[str, Any]:
    """The version page's context. ``error_on`` names the bound form whose fields show all of
    ``error``: if that form is on the page, the error is not repeated above the forms."""
    user: Any = request.user
    gates, transitions = selectors.version_detail(version=version)
    actions = _actions_on(user, version.family)
    previous = selectors.version_previous(version=version)
    manage = FamilyAction.MANAGE in actions
    approve = FamilyAction.APPROVE in actions and version.status == S.VALIDATED
    forms = {
        "approve": ReasonForm(prefix="approve"),
        "reject": ReasonForm(prefix="reject"),
        "retire": ReasonForm(prefix="retire"),
        **(bound or {}),
    }
    may = {
        "validate": manage and version.status == S.REGISTERED,
        "decide": approve,
        "decide_own": approve and version.created_by_id == user.pk,
        "decide_unverified": approve and not otp.is_verified(user),
        "deploy_staging": manage and version.status == S.APPROVED,
        "deploy_production": manage and version.status in (S.APPROVED, S.STAGING),
        "retire": manage and S.RETIRED in services.ALLOWED[version.status],
    }
    deciding = may["decide"] and not may["decide_own"] and not may["decide_unverified"]
    if {"approve": deciding, "reject": deciding, "retire": may["retire"]}.get(error_on):
        error = None
    return {
        "family": version.family,
        "version": version,
        "gates": gates,
        "gates_passed": sum(1 for g in gates if g.passed),
        "gates_detailed": any(g.detail for g in gates),
        "transitions": transitions,
        "previous": previous,
        "metric_rows": _metric_rows(version, previous),
        "signature_rows": _signature_rows(version.signature or {}),
        "packaging": version.status in (S.APPROVED, S.STAGING, S.PRODUCTION),
        "forms": forms,
        "error": error,
        "notice": notice,
        "may": {**may, "anything": any(may.values())},
        # Whether rights allow acting on some version of the family at all: without, the page
        # says that the user's rights, not the version's status, leave nothing to do.
        "may_act_on_family": manage or FamilyAction.APPROVE in actions,
        "rights": [a.value for a in FamilyAction if a in actions],
        "page_url": reverse("registry:version_detail", args=[version.family.slug, version.version]),
        "group_tables": _group_tables(version.metrics or {}),
    }


def _render_version(
    request: HttpRequest, version: ModelVersion, *, status: int = 200, **kwargs: Any
) -> HttpResponse:
    return render(
        request, VERSION_TEMPLATE, _version_context(request, version, **kwargs), status=status
    )


def _valid(form: Any) -> dict[str, Any]:
    """The cleaned data of ``form``, or ValidationFailed naming its invalid fields."""
    if form.is_valid():
        data: dict[str, Any] = form.cleaned_data
        return data
    errors = [
        {"field": name, "message": str(message), "type": "invalid"}
        for name, messages_ in form.errors.items()
        for message in messages_
    ]
    raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors=errors)


# --- Families ---------------------------------------------------------------------------------


@login_required
@require_GET
def family_list(request: HttpRequest) -> HttpResponse:
    visible = list(
        selectors.family_list(user=request.user).annotate(
            awaiting_approval=Count("versions", filter=Q(versions__status=S.VALIDATED))
        )
    )
    checker = selectors.family_permission_checker(user=request.user, families=visible)
    production = dict(
        ModelVersion.objects.filter(family__in=visible, status=S.PRODUCTION).values_list(
            "family_id", "version"
        )
    )
    families = []
    for family in visible:
        actions = selectors.family_actions(user=request.user, family=family, checker=checker)
        families.append(
            {
                "family": family,
                "actions": actions,
                "production": production.get(family.pk),
                "may_register": _may_register(request.user, set(actions)),
            }
        )
    return render(request, "registry/family_list.html", {"families": families})


@login_required
@require_GET
def family_detail(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        family = selectors.family_get(user=request.user, slug=slug)
    except ApplicationError as exc:
        return _error_page(request, exc)
    actions = _actions_on(request.user, family)
    versions = selectors.version_list(family=family).annotate(
        gates_total=Count("gates"), gates_passed=Count("gates", filter=Q(gates__passed=True))
    )
    return render(
        request,
        "registry/family_detail.html",
        {
            "family": family,
            "actions": [a.value for a in FamilyAction if a in actions],
            "versions": versions,
            "production_history": selectors.production_history(family=family),
            "holders": selectors.family_permission_holders(family=family)
            if _may_see_grants(request.user, actions)
            else None,
            "may_register": _may_register(request.user, actions),
            "may_approve": FamilyAction.APPROVE in actions,
        },
    )


# --- Versions ---------------------------------------------------------------------------------


@login_required
@require_GET
def version_detail(request: HttpRequest, slug: str, version: str) -> HttpResponse:
    try:
        found = selectors.version_get(user=request.user, slug=slug, version=version)
    except ApplicationError as exc:
        return _error_page(request, exc)
    return _render_version(request, found)


@login_required
@require_http_methods(["GET", "POST"])
def version_register(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        if not has_role(request.user, Role.MODEL_OWNER, Role.ADMIN):
            raise PermissionDenied("Only model owners may register versions.")
        family = selectors.family_get(user=request.user, slug=slug, action=FamilyAction.MANAGE)
    except ApplicationError as exc:
        return _error_page(request, exc)
    form = VersionRegistrationForm(request.POST or None, request.FILES or None)
    status = 200
    if request.method == "POST":
        form.is_valid()
        metadata = form.metadata()  # checked even when the files are missing: one round
        if metadata is not None:
            try:
                created = services.version_register(
                    family=family,
                    user=request.user,
                    metadata=metadata,
                    artifact=form.cleaned_data["artifact"],
                    validation=form.cleaned_data["validation"],
                )
            except ApplicationError as exc:
                form.add_service_errors(exc)
                status = exc.status_code
            else:
                messages.success(request, f"Version {created.version} registered and measured.")
                return redirect(
                    "registry:version_detail", slug=family.slug, version=created.version
                )
        else:
            status = 422
    return render(
        request, "registry/version_register.html", {"family": family, "form": form}, status=status
    )


def _act(
    request: HttpRequest,
    slug: str,
    number: str,
    action: FamilyAction,
    perform: Callable[[ModelVersion], str],
    form_key: str = "",
    form: Any = None,
) -> HttpResponse:
    """Run one lifecycle action on a version and answer with the version page (or, for htmx,
    the version partial; on an error the actions panel with the error's status code)."""
    try:
        version = selectors.version_get(user=request.user, slug=slug, version=number)
    except ApplicationError as exc:
        return _error_page(request, exc)
    bound = {form_key: form} if form_key else {}
    try:
        selectors.family_get(user=request.user, slug=slug, action=action)
        notice = perform(version)
    except ApplicationError as exc:
        shown = form is not None and _attach(form, exc)
        context: dict[str, Any] = {
            "bound": bound,
            "error": exc,
            "error_on": form_key if shown else "",
        }
        if request.htmx:  # type: ignore[attr-defined]
            response = render(
                request,
                f"{VERSION_TEMPLATE}#actions",
                _version_context(request, version, **context),
                status=exc.status_code,
            )
            response["HX-Retarget"] = "#actions"
            response["HX-Reswap"] = "outerHTML"
            return response
        return _render_version(request, version, status=exc.status_code, **context)
    if request.htmx:  # type: ignore[attr-defined]
        version.refresh_from_db()
        return render(
            request,
            f"{VERSION_TEMPLATE}#version-detail",
            _version_context(request, version, notice=notice),
        )
    messages.success(request, notice)
    return redirect("registry:version_detail", slug=slug, version=number)


def _attach(form: Any, exc: ApplicationError) -> bool:
    """Show a field error on the bound form too (so that its input keeps its message); True
    when every error of ``exc`` is so shown on a visible field of the form."""
    shown = bool(exc.errors)
    for error in exc.errors:
        name = str(error.get("field") or "")
        if name not in form.fields or form.fields[name].widget.is_hidden:
            shown = False
            continue
        if name not in form.errors:
            form.add_error(name, str(error.get("message") or exc.detail))
    return shown


@login_required
@require_POST
def version_validate(request: HttpRequest, slug: str, version: str) -> HttpResponse:
    def perform(found: ModelVersion) -> str:
        results = services.version_validate(version=found, user=request.user)
        failed = [r.gate for r in results if not r.passed]
        if failed:
            return f"{len(failed)} of {len(results)} gates failed ({', '.join(failed)}); " + (
                "the version stays registered."
            )
        return f"All {len(results)} gates passed; the version is validated."

    return _act(request, slug, version, FamilyAction.MANAGE, perform)


def _decide(request: HttpRequest, slug: str, version: str, *, approve: bool) -> HttpResponse:
    prefix = "approve" if approve else "reject"
    form = ReasonForm(request.POST, prefix=prefix)

    def perform(found: ModelVersion) -> str:
        # The registrant hears of the four-eyes rule from the service, not of a second factor.
        if found.created_by_id != request.user.pk and not otp.is_verified(request.user):
            raise OTPRequired(
                "Approving or rejecting needs a session verified with a second factor: "
                "verify your session under 2FA, then decide."
            )
        reason = form.cleaned_data["reason"] if form.is_valid() else ""
        if approve:
            services.version_approve(version=found, user=request.user, reason=reason)
            return f"Version {found.version} approved; its TorchServe archive is being built."
        services.version_reject(version=found, user=request.user, reason=reason)
        return f"Version {found.version} rejected."

    return _act(request, slug, version, FamilyAction.APPROVE, perform, prefix, form)


@login_required
@require_POST
def version_approve(request: HttpRequest, slug: str, version: str) -> HttpResponse:
    return _decide(request, slug, version, approve=True)


@login_required
@require_POST
def version_reject(request: HttpRequest, slug: str, version: str) -> HttpResponse:
    return _decide(request, slug, version, approve=False)


@login_required
@require_POST
def version_deploy(request: HttpRequest, slug: str, version: str) -> HttpResponse:
    form = DeployForm(request.POST, prefix="deploy")

    def perform(found: ModelVersion) -> str:
        data = _valid(form)
        services.version_deploy(version=found, user=request.user, target=data["target"])
        return f"Version {found.version} deployed to {data['target']}."

    return _act(request, slug, version, FamilyAction.MANAGE, perform, "deploy", form)


@login_required
@require_POST
def version_retire(request: HttpRequest, slug: str, version: str) -> HttpResponse:
    form = ReasonForm(request.POST, prefix="retire")

    def perform(found: ModelVersion) -> str:
        data = _valid(form)
        services.version_retire(version=found, user=request.user, reason=data["reason"])
        return f"Version {found.version} retired."

    return _act(request, slug, version, FamilyAction.MANAGE, perform, "retire", form)


# --- Approval queue ---------------------------------------------------------------------------


@login_required
@require_GET
def approval_queue(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    if not has_role(user, Role.APPROVER, Role.ADMIN) and not (
        selectors.family_list(user=user, action=FamilyAction.APPROVE).exists()
    ):
        return _error_page(
            request, PermissionDenied("The approval queue is for approvers of model families.")
        )
    versions = selectors.approval_queue(user=user)
    prefetch_related_objects(versions, "gates")
    pending = [
        {
            "version": version,
            "gates_total": len(version.gates.all()),
            "gates_passed": sum(1 for g in version.gates.all() if g.passed),
        }
        for version in versions
    ]
    return render(request, "registry/approval_queue.html", {"pending": pending})
