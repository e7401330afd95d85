"""Forms of the registry pages: version registration and the lifecycle actions of a version."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from pydantic import ValidationError as PydanticError

from apps.registry.models import Framework
from apps.registry.schemas import VersionMetadata
from gatehouse.errors import ApplicationError

SIGNATURE_EXAMPLE = (
    '{"features": [{"name": "income", "type": "float", "minimum": 0, "unit": "kEUR"}, '
    '{"name": "sex", "type": "category", "allowed": ["female", "male"], "protected": true}], '
    '"output": {"labels": ["good", "bad"], "positive_label": "bad"}}'
)

# The metadata fields of a registration, named as in VersionMetadata.
METADATA_FIELDS = (
    "version",
    "framework",
    "architecture",
    "architecture_kwargs",
    "signature",
    "description",
    "intended_use",
    "limitations",
    "ethical_considerations",
    "dataset_name",
    "dataset_version",
    "dataset_sha256",
    "training_subject_refs",
)


def _textarea(rows: int, **attrs: Any) -> forms.Textarea:
    return forms.Textarea(attrs={"rows": rows, **attrs})


class VersionRegistrationForm(forms.Form):
    """A new version of a family: its metadata (checked by ``VersionMetadata``) and files."""

    version = forms.CharField(
        max_length=40, help_text="Semantic version, e.g. 1.2.0.", widget=forms.TextInput()
    )
    framework = forms.ChoiceField(choices=Framework.choices, initial=Framework.STATE_DICT)
    architecture = forms.ChoiceField(
        required=False,
        initial="logistic_regression",
        help_text="Torch eager (state_dict) only: the architecture the weights belong to. "
        "Choose none for TorchScript, whose file carries its own.",
    )
    architecture_kwargs = forms.CharField(
        required=False,
        label="Architecture arguments (JSON)",
        widget=_textarea(3, spellcheck="false"),
        help_text='Torch eager (state_dict) only: a JSON object, e.g. {"n_inputs": 7, '
        '"n_classes": 2}.',
    )
    signature = forms.CharField(
        label="Signature (JSON)",
        widget=_textarea(10, spellcheck="false"),
        help_text=f"Input features and output labels, e.g. {SIGNATURE_EXAMPLE}",
    )
    description = forms.CharField(required=False, max_length=2000, widget=_textarea(2))
    intended_use = forms.CharField(
        required=False, max_length=5000, widget=_textarea(3), label="Model card: intended use"
    )
    limitations = forms.CharField(
        required=False, max_length=5000, widget=_textarea(3), label="Model card: limitations"
    )
    ethical_considerations = forms.CharField(
        required=False,
        max_length=5000,
        widget=_textarea(3),
        label="Model card: ethical considerations",
    )
    dataset_name = forms.CharField(required=False, max_length=120, label="Training dataset name")
    dataset_version = forms.CharField(
        required=False, max_length=60, label="Training dataset version"
    )
    dataset_sha256 = forms.CharField(
        required=False,
        max_length=64,
        label="Training dataset SHA-256",
        help_text="64 lowercase hex digits.",
    )
    training_subject_refs = forms.CharField(
        required=False,
        label="Training subject references",
        widget=_textarea(4, spellcheck="false"),
        help_text="One reference per line. Only keyed pseudonyms of them are kept, never the "
        "references themselves.",
    )
    artifact = forms.FileField(
        label="Model artifact",
        help_text="A torch state_dict (.pt) or a TorchScript file.",
    )
    validation = forms.FileField(
        label="Validation CSV",
        help_text="Held-out data: one column per signature feature, plus 'label'.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from apps.registry.architectures import ARCHITECTURES  # imports torch: only here

        self.fields["architecture"].choices = [  # type: ignore[attr-defined]
            ("", "none (TorchScript only)"),
            *((name, name) for name in sorted(ARCHITECTURES)),
        ]

    def _json_object(self, name: str, *, empty: Any) -> Any:
        text = (self.cleaned_data.get(name) or "").strip()
        if not text:
            return empty
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
            ) from exc
        if not isinstance(value, dict):
            raise forms.ValidationError("Must be a JSON object ({...}).")
        return value

    def clean_architecture_kwargs(self) -> dict[str, Any]:
        value: dict[str, Any] = self._json_object("architecture_kwargs", empty={})
        return value

    def clean_signature(self) -> dict[str, Any]:
        value: dict[str, Any] = self._json_object("signature", empty=None)
        if value is None:
            raise forms.ValidationError("This field is required.")
        return value

    def clean_training_subject_refs(self) -> list[str]:
        text = self.cleaned_data.get("training_subject_refs") or ""
        return [line.strip() for line in text.splitlines() if line.strip()]

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        framework, architecture = cleaned.get("framework"), cleaned.get("architecture")
        if framework == Framework.STATE_DICT and architecture == "":
            self.add_error(
                "architecture", "Choose the architecture the state_dict belongs to (torch eager)."
            )
        elif framework == Framework.TORCHSCRIPT and architecture:
            self.add_error(
                "architecture",
                "Choose none for TorchScript: the file carries its own architecture.",
            )
        return cleaned

    def metadata(self) -> VersionMetadata | None:
        """The validated metadata, or None after adding the schema's errors to the fields.

        Call it after ``is_valid()``, whatever that returned: the metadata is checked even when
        other fields (the files, say) are missing, so that one round shows every error. A field
        that already has an error of its own gets no second one from the schema.
        """
        invalid = set(self.errors)
        data = {name: self.cleaned_data[name] for name in METADATA_FIELDS if name not in invalid}
        try:
            metadata = VersionMetadata.model_validate(data)
        except PydanticError as exc:
            for error in exc.errors():
                loc = [str(part) for part in error["loc"]]
                field = loc[0] if loc and loc[0] in self.fields else None
                if field in invalid:
                    continue  # e.g. "Field required" for a field whose own check failed
                path = ".".join(loc[1:] if field else loc)
                message = str(error["msg"]).removeprefix("Value error, ")
                self.add_error(field, f"{path}: {message}" if path else message)
            return None
        return None if invalid else metadata

    def add_service_errors(self, exc: ApplicationError) -> None:
        """Show a refused registration's errors on the fields they name."""
        add_service_errors(self, exc, codes={"duplicate_version": "version"})


class ReasonForm(forms.Form):
    """A written reason: for approving, rejecting or retiring a version."""

    reason = forms.CharField(
        max_length=2000,
        error_messages={"required": "A written reason is required."},
        widget=forms.Textarea(attrs={"rows": 2, "required": True}),
        help_text="Recorded in the version's history.",
    )


class DeployForm(forms.Form):
    target = forms.ChoiceField(
        choices=[("staging", "staging"), ("production", "production")],
        widget=forms.HiddenInput(),
    )


def add_service_errors(
    form: forms.Form, exc: ApplicationError, *, codes: dict[str, str] | None = None
) -> None:
    """Put the errors of a refused service call on the form fields they name (the part of a
    dotted name before the first dot, e.g. ``validation.line3.age``), the rest on the form."""
    errors = exc.errors
    if not errors:
        field = (codes or {}).get(exc.error_code)
        form.add_error(field if field in form.fields else None, exc.detail)
        return
    for error in errors:
        name = str(error.get("field") or "")
        head, _, rest = name.partition(".")
        message = str(error.get("message") or exc.detail)
        if head in form.fields:
            form.add_error(head, f"{rest}: {message}" if rest else message)
        else:
            form.add_error(None, f"{name}: {message}" if name else message)
