"""Compliance pages: subjects and consent, explanations, review queue, erasure, bias reports.

Views parse, call a selector or service and render; every ``ApplicationError`` becomes a page
(or htmx partial) with its status code and message, never a server error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.compliance import bias, erasure, selectors, services
from apps.compliance.models import BiasReport, ConsentSource, ErasureStatus, ReviewStatus
from apps.inference import selectors as inference_selectors
from apps.registry.models import ModelVersion, VersionStatus
from gatehouse import otp
from gatehouse.errors import ApplicationError, OTPRequired, ValidationFailed

View = Callable[..., HttpResponse]


def _error_page(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    template = "compliance/error.html"
    if request.htmx:  # type: ignore[attr-defined]
        template += "#error"
    response = render(request, template, {"error": exc}, status=exc.status_code)
    for name, value in exc.headers.items():
        response[name] = value
    return response


def _page(view: View) -> View:
    """Signed in; application errors rendered as pages."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except ApplicationError as exc:
            return _error_page(request, exc)

    return wrapper


def _verified(request: HttpRequest) -> None:
    if not otp.is_verified(request.user):
        raise OTPRequired()


# --- Subjects and consent ------------------------------------------------------------------


@_page
@require_GET
def subjects(request: HttpRequest) -> HttpResponse:
    selectors.require_officer(request.user)
    reference = request.GET.get("reference", "").strip()
    context: dict[str, Any] = {"reference": reference, "sources": ConsentSource.choices}
    context["purposes"] = sorted(services.known_purposes())
    if reference:
        try:
            context["export"] = selectors.subject_export(
                user=request.user, reference=reference, receipts=False
            )
        except ApplicationError as exc:
            if exc.status_code != 404:
                raise
            context["not_found"] = True
    template = "compliance/subjects.html"
    if request.htmx:  # type: ignore[attr-defined]
        template += "#subject"
    return render(request, template, context)


@_page
@require_POST
def consent_record(request: HttpRequest) -> HttpResponse:
    selectors.require_officer(request.user)
    reference = request.POST.get("reference", "").strip()
    services.consent_record(
        reference=reference,
        purpose=request.POST.get("purpose", ""),
        granted=request.POST.get("granted") == "true",
        notice_version=request.POST.get("notice_version", ""),
        source=request.POST.get("source", ConsentSource.WEB),
        user=request.user,
    )
    messages.success(request, "Consent recorded.")
    return redirect(f"{reverse('compliance:subjects')}?{urlencode({'reference': reference})}")


@_page
@require_GET
def subject_export(request: HttpRequest) -> HttpResponse:
    """Subject access: JSON download, or a printable page (``?format=html``)."""
    _verified(request)
    reference = request.GET.get("reference", "").strip()
    export = selectors.subject_export(user=request.user, reference=reference)
    if request.GET.get("format") == "html":
        return render(request, "compliance/subject_export.html", {"export": export})
    body = json.dumps(export, cls=DjangoJSONEncoder, indent=2)
    response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = 'attachment; filename="subject-access.json"'
    return response


# --- Explanations --------------------------------------------------------------------------


@_page
@require_GET
def explanation(request: HttpRequest, decision_id: str) -> HttpResponse:
    decision = inference_selectors.decision_get(
        user=request.user, key=None, decision_id=decision_id
    )
    found = services.explanation_for(decision)
    view = selectors.explanation_view(found)
    top = max((abs(v) for v in view["attributions"].values()), default=0.0) or 1.0
    bars = [
        {"feature": name, "value": value, "width": w, "x": 50 if value >= 0 else 50 - w}
        for name, value in view["attributions"].items()
        if (w := round(50 * abs(value) / top, 2)) is not None
    ]
    return render(
        request,
        "compliance/explanation.html",
        {"decision": decision, "explanation": view, "bars": bars},
    )


# --- Reviews -------------------------------------------------------------------------------


@_page
@require_GET
def reviews(request: HttpRequest) -> HttpResponse:
    _verified(request)
    status = request.GET.get("status", ReviewStatus.OPEN)
    if status not in ReviewStatus.values:
        raise ValidationFailed.for_field("status", "is not a review status")
    queue = selectors.review_queue(user=request.user, status=status)
    return render(
        request,
        "compliance/reviews.html",
        {"reviews": queue, "status": status, "statuses": ReviewStatus.values},
    )


@_page
@require_http_methods(["GET", "POST"])
def review_detail(request: HttpRequest, review_id: int) -> HttpResponse:
    _verified(request)
    review = selectors.review_get(user=request.user, review_id=review_id)
    error = None
    if request.method == "POST":
        try:
            services.review_decide(
                review_id=review.pk,
                user=request.user,
                final_label=request.POST.get("final_label", ""),
                reason=request.POST.get("reason", ""),
            )
            messages.success(request, "Review recorded.")
            return redirect("compliance:reviews")
        except ValidationFailed as exc:
            error = exc
    decision = review.decision
    found = services.explanation_for(decision) if decision.inputs else None
    return render(
        request,
        "compliance/review_detail.html",
        {
            "review": review,
            "decision": decision,
            "explanation": selectors.explanation_view(found) if found else None,
            "labels": decision.version.signature["output"]["labels"],
            "error": error,
        },
        status=422 if error else 200,
    )


# --- Erasure -------------------------------------------------------------------------------


@_page
@require_http_methods(["GET", "POST"])
def erasures(request: HttpRequest) -> HttpResponse:
    error = None
    if request.method == "POST":
        try:
            erasure.erasure_create(
                reference=request.POST.get("reference", ""),
                user=request.user,
                channel=request.POST.get("channel", ""),
                note=request.POST.get("note", ""),
            )
            messages.success(request, "Erasure request registered; a second officer decides it.")
            return redirect("compliance:erasures")
        except ApplicationError as exc:
            if exc.status_code == 403:
                raise
            error = exc
    now = timezone.now()
    requests = list(selectors.erasure_list(user=request.user)[:200])
    for item in requests:
        item.days_left = (item.deadline - now).days  # type: ignore[attr-defined]
    return render(
        request,
        "compliance/erasures.html",
        {
            "requests": requests,
            "error": error,
            "open": (ErasureStatus.PENDING, ErasureStatus.APPROVED),
        },
        status=error.status_code if error else 200,
    )


@_page
@require_POST
def erasure_decide(request: HttpRequest, request_id: str, verdict: str) -> HttpResponse:
    _verified(request)
    erasure.erasure_decide(
        request_id=request_id,
        user=request.user,
        approve=verdict == "approve",
        reason=request.POST.get("reason", ""),
    )
    messages.success(
        request, "Erasure approved; it runs now." if verdict == "approve" else "Rejected."
    )
    return redirect("compliance:erasures")


@_page
@require_GET
def erasure_certificate(request: HttpRequest, request_id: str) -> HttpResponse:
    found = selectors.erasure_get(user=request.user, key=None, request_id=request_id)
    body = json.dumps(erasure.certificate(found), indent=2)
    response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="erasure-certificate-{found.pk}.json"'
    return response


# --- Bias ----------------------------------------------------------------------------------


@_page
@require_http_methods(["GET", "POST"])
def bias_reports(request: HttpRequest) -> HttpResponse:
    reports = selectors.bias_reports(user=request.user)
    if request.method == "POST":
        _verified(request)
        version = (
            ModelVersion.objects.select_related("family")
            .filter(pk=request.POST.get("version") or 0)
            .first()
        )
        if version is None:
            raise ValidationFailed.for_field("version", "Choose a version.")
        report = bias.report_create(
            version=version, source=request.POST.get("source", ""), user=request.user
        )
        return redirect("compliance:bias_report", report_id=report.pk)
    versions = ModelVersion.objects.select_related("family").filter(
        status__in=[VersionStatus.PRODUCTION, VersionStatus.APPROVED, VersionStatus.STAGING]
    )
    return render(
        request,
        "compliance/bias_reports.html",
        {"reports": reports[:100], "versions": versions, "sources": BiasReport.Source.choices},
    )


@_page
@require_GET
def bias_report(request: HttpRequest, report_id: str) -> HttpResponse:
    report = selectors.bias_report_get(user=request.user, report_id=report_id)
    if request.GET.get("format") == "csv":
        response = HttpResponse(bias.report_csv(report), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="bias-{report.pk}.csv"'
        return response
    return render(request, "compliance/bias_report.html", {"report": report})
