"""Prediction pages for business users: the families they may predict with, a form generated from
the serving version's signature, the result card and their own decision history.

Views parse, call a selector or ``services.predict`` and render; every ``ApplicationError``
becomes a message (next to a field, or a card) with its own status code, never a server error.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods

from apps.inference import selectors, services
from apps.inference.forms import FeatureForm, RequestForm, add_service_errors
from apps.inference.models import RoutingConfig
from apps.registry import selectors as registry_selectors
from apps.registry.models import ModelFamily, ModelVersion, VersionStatus
from apps.registry.permissions import FamilyAction
from gatehouse.errors import ApplicationError, Conflict, NotFound, ValidationFailed
from gatehouse.tlog import signing

FORM_TEMPLATE = "inference/predict_form.html"
IDEMPOTENCY_INPUT = "request-token"
PUBLIC_KEY_FILENAME = "gatehouse-log-key.txt"


def _error_page(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    template = "inference/error.html"
    if request.htmx:  # type: ignore[attr-defined]
        template += "#error"
    response = render(request, template, {"error": exc}, status=exc.status_code)
    for name, value in exc.headers.items():
        response[name] = value
    return response


def _family_to_predict(user: Any, slug: str) -> ModelFamily:
    """A family ``user`` may predict with; 404 otherwise (also when they may only view it)."""
    family = (
        registry_selectors.family_list(user=user, action=FamilyAction.PREDICT)
        .filter(slug=slug)
        .first()
    )
    if family is None:
        raise NotFound(f"No model '{slug}' that you may predict with.")
    return family


def _not_serving(family: ModelFamily, version: ModelVersion | None) -> str:
    """Why ``family`` serves no predictions now, or "" when it does (read only: no writes)."""
    config = RoutingConfig.objects.filter(family=family).first()
    if config is not None and config.suspended:
        reason = config.suspended_reason.strip().rstrip(".")
        return f"This model is suspended: {reason}." if reason else "This model is suspended."
    if version is None:
        return "This model has no version in production; it serves no predictions."
    return ""


def _new_token() -> str:
    return str(uuid.uuid4())


def _posted_token(request: HttpRequest) -> str:
    """The form's idempotency token: a double submission replays the first reply instead of
    recording a second decision."""
    raw = request.POST.get(IDEMPOTENCY_INPUT, "")
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return _new_token()


def _result(body: dict[str, Any]) -> dict[str, Any]:
    """The result card of the (single) prediction in a ``services.predict`` reply."""
    prediction = body["predictions"][0]
    scores = prediction.get("scores")
    return {
        **prediction,
        "scores": None
        if scores is None
        else [
            {
                "label": label,
                "value": f"{float(p):.4f}",
                "percent": f"{float(p) * 100:.1f}",
                "predicted": label == prediction["label"],
            }
            for label, p in scores.items()
        ],
    }


def _message(exc: ApplicationError, family: ModelFamily) -> str:
    if exc.error_code == "suspended":
        return _not_serving(family, None) or exc.detail
    if exc.error_code == "no_production_version":
        return _not_serving(family, None)
    return exc.detail


@login_required
@require_GET
def predict_home(request: HttpRequest) -> HttpResponse:
    families = list(registry_selectors.family_list(user=request.user, action=FamilyAction.PREDICT))
    production = dict(
        ModelVersion.objects.filter(
            family__in=families, status=VersionStatus.PRODUCTION
        ).values_list("family_id", "version")
    )
    suspended = {
        c.family_id: c.suspended_reason
        for c in RoutingConfig.objects.filter(family__in=families, suspended=True)
    }
    rows = [
        {
            "family": family,
            "version": production.get(family.pk),
            "suspended": family.pk in suspended,
            "reason": suspended.get(family.pk, ""),
        }
        for family in families
    ]
    return render(
        request,
        "inference/predict_home.html",
        {"rows": rows, "history": selectors.decision_history(user=request.user)},
    )


@login_required
@require_http_methods(["GET", "POST"])
def predict_form(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        family = _family_to_predict(request.user, slug)
    except ApplicationError as exc:
        return _error_page(request, exc)
    version = registry_selectors.production_version(family=family)
    context: dict[str, Any] = {
        "family": family,
        "version": version,
        "not_serving": _not_serving(family, version),
        "result": None,
        "error": None,
        "token": _new_token(),
        "request_id": getattr(request, "request_id", ""),
        "public_key_filename": PUBLIC_KEY_FILENAME,
    }
    if version is None:
        # No signature to build a form from: the page says why, nothing can be submitted (a
        # form posted from before the version left production gets the same answer, as 503).
        if request.method == "GET":
            context["history"] = selectors.decision_history(user=request.user)
            return render(request, FORM_TEMPLATE, context)
        context["error"] = {
            "status": 503,
            "title": "No prediction made",
            "message": context["not_serving"],
        }
        template = FORM_TEMPLATE + ("#outcome" if request.htmx else "")  # type: ignore[attr-defined]
        return render(request, template, context, status=503)
    data = request.POST if request.method == "POST" else None
    features = FeatureForm(data, signature=version.signature)
    request_form = RequestForm(data, consent_purpose=family.consent_purpose)
    status = 200
    headers: dict[str, str] = {}
    if request.method == "POST":
        status, headers = _predict(request, family, features, request_form, context)
    context.update(
        form=features,
        request_form=request_form,
        history=selectors.decision_history(user=request.user),
    )
    template = FORM_TEMPLATE
    if request.htmx and request.method == "POST":  # type: ignore[attr-defined]
        template += "#post-response"
    response = render(request, template, context, status=status)
    for name, value in headers.items():
        response[name] = value
    return response


def _predict(
    request: HttpRequest,
    family: ModelFamily,
    features: FeatureForm,
    request_form: RequestForm,
    context: dict[str, Any],
) -> tuple[int, dict[str, str]]:
    """Serve the posted row; fills ``context`` (result, error, token); (status, headers)."""
    valid = features.is_valid() & request_form.is_valid()  # both, for all their errors
    token = _posted_token(request)
    context["token"] = token
    if not valid:
        return 422, {}
    try:
        _, body = services.predict(
            family=family,
            user=request.user,
            key=None,
            request=services.PredictRequest(
                rows=[features.row()],
                subject=request_form.cleaned_data["subject"].strip(),
                purpose=request_form.cleaned_data["purpose"].strip(),
                idempotency_key=token,
                request_id=getattr(request, "request_id", ""),
            ),
        )
    except ValidationFailed as exc:
        add_service_errors(features, request_form, exc)
        return exc.status_code, {}
    except Conflict as exc:
        # The token was used for other values (an old form resubmitted): a fresh one is given.
        context["token"] = _new_token()
        context["error"] = {
            "status": exc.status_code,
            "title": "Already submitted",
            "message": "This form was already submitted with other values. "
            "Check the values and submit again.",
        }
        return exc.status_code, {}
    except ApplicationError as exc:
        context["error"] = {
            "status": exc.status_code,
            "title": "Not allowed" if exc.status_code == 403 else "No prediction made",
            "message": _message(exc, family),
        }
        return exc.status_code, dict(exc.headers)
    context["result"] = _result(body)
    context["token"] = _new_token()
    return 200, {}


# --- Receipts ------------------------------------------------------------------------------------


def _download(body: str, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"  # a pending receipt gains its proof later
    return response


@login_required
@require_GET
def decision_receipt(request: HttpRequest, decision_id: uuid.UUID) -> HttpResponse:
    """The receipt of a decision the user may see, as a JSON file (the same document as
    ``GET /api/v1/decisions/{id}/receipt``; while pending, the signed promise without the
    proof). 404 for a decision they may not see."""
    try:
        decision = selectors.decision_get(user=request.user, key=None, decision_id=str(decision_id))
        receipt = selectors.decision_receipt(decision=decision)
    except ApplicationError as exc:
        return _error_page(request, exc)
    return _download(
        json.dumps(receipt, cls=DjangoJSONEncoder, indent=2),
        "application/json",
        f"receipt-{decision.id}.json",
    )


@login_required
@require_GET
def log_public_key(request: HttpRequest) -> HttpResponse:
    """The log's verifier keys, one per line (current first), for ``--public-key``."""
    return _download(
        "".join(f"{key.text()}\n" for key in signing.verifier_keys()),
        "text/plain; charset=utf-8",
        PUBLIC_KEY_FILENAME,
    )


# --- Batch scoring ------------------------------------------------------------------------------

BATCH_TEMPLATE = "inference/batch_page.html"


@login_required
@require_http_methods(["GET", "POST"])
def batch_page(request: HttpRequest, slug: str) -> HttpResponse:
    """Upload a CSV to score in the background, and follow one's jobs (live progress)."""
    from django.conf import settings
    from django.contrib import messages
    from django.shortcuts import redirect

    from apps.inference import batch
    from apps.inference.batch_forms import BatchUploadForm
    from apps.registry import encoding

    try:
        family = _family_to_predict(request.user, slug)
    except ApplicationError as exc:
        return _error_page(request, exc)
    version = registry_selectors.production_version(family=family)
    form = BatchUploadForm(
        request.POST if request.method == "POST" else None,
        request.FILES if request.method == "POST" else None,
        consent_purpose=family.consent_purpose,
    )
    status, headers, error = 200, {}, None
    if request.method == "POST":
        status = 422
        if form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                job = batch.batch_submit(
                    family=family,
                    user=request.user,
                    key=None,
                    file=upload,
                    filename=upload.name or "",
                    purpose=form.cleaned_data["purpose"],
                    subject_column=form.cleaned_data["subject_column"],
                    request_id=getattr(request, "request_id", ""),
                )
            except ApplicationError as exc:
                status = exc.status_code
                if status in (413, 422):
                    form.add_service_errors(exc)
                else:
                    headers = dict(exc.headers)
                    error = {"title": "Not accepted", "message": _message(exc, family)}
            else:
                messages.success(
                    request, f"Batch accepted: {job.total_rows} rows are being scored."
                )
                return redirect("inference:batch_page", slug=family.slug)
    signature = version.signature if version else {"features": []}
    inputs = [f["name"] for f in encoding.model_inputs(signature)]
    context = {
        "family": family,
        "version": version,
        "not_serving": _not_serving(family, version),
        "form": form,
        "error": error,
        "jobs": batch.batch_job_list(user=request.user, family=family),
        "required_columns": inputs,
        "optional_columns": [f["name"] for f in signature["features"] if f["name"] not in inputs],
        "max_rows": getattr(settings, "BATCH_MAX_ROWS", 100_000),
        "max_mb": getattr(settings, "BATCH_MAX_BYTES", 20 * 1024 * 1024) // (1024 * 1024),
    }
    response = render(request, BATCH_TEMPLATE, context, status=status)
    for name, value in headers.items():
        response[name] = value
    return response
