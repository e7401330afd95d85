"""The serving page of a family: kill-switch, canary, shadow, output mode, jurisdiction rules."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from apps.inference import routing, services
from apps.inference.models import OutputMode, RoutingConfig
from apps.inference.routing import SERVABLE
from apps.registry import selectors as registry_selectors
from apps.registry.models import ModelFamily, ModelVersion
from apps.registry.permissions import FamilyAction
from gatehouse.errors import ApplicationError


class RoutingForm(forms.Form):
    suspended = forms.BooleanField(
        required=False,
        label="Suspend (kill-switch)",
        help_text="Every prediction answers 503 at once; nothing is recorded as served.",
    )
    suspended_reason = forms.CharField(required=False, max_length=300, label="Reason")
    canary_version = forms.ChoiceField(required=False, label="Canary version")
    canary_percent = forms.IntegerField(
        min_value=0,
        max_value=100,
        initial=0,
        label="Canary traffic (%)",
        help_text="Sticky by data subject: the same subject always gets the same arm.",
    )
    shadow_version = forms.ChoiceField(
        required=False,
        label="Shadow version",
        help_text="Gets a copy of each request after the reply; its output is recorded, "
        "never returned.",
    )
    output_mode = forms.ChoiceField(choices=OutputMode.choices, label="What callers see")
    top_k = forms.IntegerField(min_value=1, max_value=100, initial=3, label="k (for top-k)")
    max_rows = forms.IntegerField(min_value=1, max_value=10000, label="Rows per request")
    jurisdiction_rules = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Jurisdiction rules (JSON)",
        help_text='Versions allowed per jurisdiction, e.g. {"EU": ["1.0.0", "2.0.0"]}.',
    )

    def __init__(self, *args: Any, versions: list[ModelVersion], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "none")] + [(v.version, f"{v.version} ({v.status})") for v in versions]
        self.fields["canary_version"].choices = choices  # type: ignore[attr-defined]
        self.fields["shadow_version"].choices = choices  # type: ignore[attr-defined]

    def clean_jurisdiction_rules(self) -> dict[str, list[str]]:
        text = self.cleaned_data["jurisdiction_rules"].strip() or "{}"
        try:
            rules = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg}.") from exc
        if not isinstance(rules, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
            for k, v in rules.items()
        ):
            raise forms.ValidationError("Give an object of jurisdiction -> list of versions.")
        return rules


def _initial(config: RoutingConfig) -> dict[str, Any]:
    return {
        "suspended": config.suspended,
        "suspended_reason": config.suspended_reason,
        "canary_version": config.canary_version.version if config.canary_version else "",
        "canary_percent": config.canary_percent,
        "shadow_version": config.shadow_version.version if config.shadow_version else "",
        "output_mode": config.output_mode,
        "top_k": config.top_k,
        "max_rows": config.max_rows,
        "jurisdiction_rules": json.dumps(config.jurisdiction_rules)
        if config.jurisdiction_rules
        else "",
    }


@login_required
@require_http_methods(["GET", "POST"])
def routing_page(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        family: ModelFamily = registry_selectors.family_get(
            user=request.user, slug=slug, action=FamilyAction.MANAGE
        )
    except ApplicationError as exc:
        return render(request, "inference/error.html", {"error": exc}, status=exc.status_code)
    config = routing.routing_for(family)
    versions = list(family.versions.filter(status__in=SERVABLE).order_by("-created_at"))
    form = RoutingForm(request.POST or None, initial=_initial(config), versions=versions)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                services.routing_update(family=family, user=request.user, data=form.cleaned_data)
            except ApplicationError as exc:
                for error in exc.errors or [{"field": None, "message": exc.detail}]:
                    field = error.get("field")
                    form.add_error(field if field in form.fields else None, error["message"])
                status = exc.status_code
            else:
                messages.success(request, f"Serving of {family.name} updated.")
                return redirect("serving:routing", slug=family.slug)
        else:
            status = 422
    production = registry_selectors.production_version(family=family)
    return render(
        request,
        "inference/routing.html",
        {
            "family": family,
            "form": form,
            "config": config,
            "production": production,
        },
        status=status,
    )


@login_required
@require_http_methods(["GET"])
def serving_list(request: HttpRequest) -> HttpResponse:
    """The families the user manages, with how each is served now."""
    families = list(registry_selectors.family_list(user=request.user, action=FamilyAction.MANAGE))
    configs = {
        c.family_id: c
        for c in RoutingConfig.objects.filter(family__in=families).select_related(
            "canary_version", "shadow_version"
        )
    }
    production = dict(
        ModelVersion.objects.filter(family__in=families, status="production").values_list(
            "family_id", "version"
        )
    )
    rows = [
        {"family": f, "config": configs.get(f.pk), "production": production.get(f.pk)}
        for f in families
    ]
    return render(request, "inference/serving_list.html", {"rows": rows})
