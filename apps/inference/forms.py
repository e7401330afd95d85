"""Forms of the prediction pages: one field per feature of the serving version's signature, and
the request's subject reference and purpose.

The feature form only parses what the user typed into the types of the signature; ranges,
required protected attributes and the subject rule are checked by ``services.predict``, whose
errors are shown next to the fields they name (``add_service_errors``), so that the page and the
API refuse the same rows with the same messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import forms
from django.utils.text import capfirst

from gatehouse.errors import ApplicationError

NON_INPUT_HELP = "Optional: recorded to measure fairness only, not used by the model."


def number_text(value: float) -> str:
    """``18`` rather than ``18.0``, and no exponent, for min/max attributes and help texts."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _range_text(feature: Mapping[str, Any]) -> str:
    low, high = feature.get("minimum"), feature.get("maximum")
    unit = f" {feature['unit']}" if feature.get("unit") else ""
    if low is not None and high is not None:
        return f"From {number_text(low)} to {number_text(high)}{unit}."
    if low is not None:
        return f"At least {number_text(low)}{unit}."
    if high is not None:
        return f"At most {number_text(high)}{unit}."
    return ""


def _label(feature: Mapping[str, Any]) -> str:
    label = capfirst(feature["name"].replace("_", " "))
    return f"{label} ({feature['unit']})" if feature.get("unit") else label


def _help_text(feature: Mapping[str, Any]) -> str:
    parts = [feature.get("description", "").strip()]
    if feature["type"] in ("float", "int"):
        parts.append(_range_text(feature))
    if not feature.get("model_input", True):
        parts.append(NON_INPUT_HELP)
    if feature.get("pii"):
        parts.append("Personal data: only a pseudonym of it is kept in the decision record.")
    return " ".join(p for p in parts if p)


def feature_field(feature: Mapping[str, Any]) -> forms.Field:
    """The form field of one signature feature (range checks are left to the service)."""
    kind = feature["type"]
    required = bool(feature.get("model_input", True))
    common: dict[str, Any] = {"label": _label(feature), "help_text": _help_text(feature)}
    if kind in ("float", "int"):
        attrs = {"step": "1" if kind == "int" else "any"}
        for bound, attr in (("minimum", "min"), ("maximum", "max")):
            if feature.get(bound) is not None:
                attrs[attr] = number_text(feature[bound])
        if kind == "int":
            return forms.IntegerField(
                required=required, widget=forms.NumberInput(attrs=attrs), **common
            )
        return forms.FloatField(required=required, widget=forms.NumberInput(attrs=attrs), **common)
    if kind == "category":
        blank = ("", "Choose…" if required else "Not given")
        return forms.ChoiceField(
            required=required,
            choices=[blank, *((value, value) for value in feature["allowed"])],
            **common,
        )
    if kind == "bool":
        if required:
            # An input: unticked means false (a checkbox cannot be left unanswered).
            return forms.BooleanField(required=False, **common)
        widget = forms.NullBooleanSelect()
        widget.choices = [("unknown", "Not given"), ("true", "Yes"), ("false", "No")]
        return forms.NullBooleanField(widget=widget, **common)
    raise ValueError(f"{feature['name']}: unknown feature type {kind!r}")


class FeatureForm(forms.Form):
    """One row for the model, generated from a version's signature (fields named as features)."""

    def __init__(self, *args: Any, signature: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.features = list(signature["features"])
        for feature in self.features:
            self.fields[feature["name"]] = feature_field(feature)

    def row(self) -> dict[str, Any]:
        """The row to predict for; optional features left empty are left out."""
        return {
            name: value
            for name, value in self.cleaned_data.items()
            if value is not None and value != ""
        }


class RequestForm(forms.Form):
    """Who the prediction is about and why (rendered with the prefix ``request``, so that its
    names can never clash with a feature's)."""

    subject = forms.CharField(
        label="Subject reference",
        max_length=200,
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    purpose = forms.CharField(label="Purpose", max_length=64, required=False)

    def __init__(self, *args: Any, consent_purpose: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("prefix", "request")
        super().__init__(*args, **kwargs)
        subject = self.fields["subject"]
        if consent_purpose:
            subject.required = True
            subject.help_text = (
                "Your reference for the person this prediction is about, e.g. an application "
                f"number. Required: this model needs the person's consent for "
                f"“{consent_purpose}”. Only a pseudonym of it is stored."
            )
            self.fields["purpose"].initial = consent_purpose
        else:
            subject.help_text = (
                "Optional: your reference for the person this prediction is about, e.g. an "
                "application number. Only a pseudonym of it is stored."
            )
        self.fields[
            "purpose"
        ].help_text = "Why you request this prediction; recorded with the decision."


def add_service_errors(
    features: FeatureForm, request_form: RequestForm, exc: ApplicationError
) -> None:
    """Show the errors of a refused prediction next to the fields they name:
    ``rows.0.<name>`` on the feature, ``subject`` and ``purpose`` on the request form, anything
    else above the form."""
    for error in exc.errors or [{"field": None, "message": exc.detail}]:
        field = str(error.get("field") or "")
        message = capfirst(str(error.get("message") or exc.detail)).rstrip(".") + "."
        name = field.removeprefix("rows.0.")
        if field.startswith("rows.0.") and name in features.fields:
            features.add_error(name, message)
        elif field in request_form.fields:
            request_form.add_error(field, message)
        else:
            features.add_error(None, f"{field}: {message}" if field else message)
