"""The upload form of the batch scoring page."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.text import capfirst

from gatehouse.errors import ApplicationError


class BatchUploadForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        widget=forms.FileInput(attrs={"accept": ".csv,text/csv"}),
        help_text="UTF-8, comma-separated, with a header row naming the columns.",
    )
    subject_column = forms.CharField(
        label="Subject column",
        max_length=200,
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    purpose = forms.CharField(label="Purpose", max_length=64, required=False)

    def __init__(self, *args: Any, consent_purpose: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        subject = self.fields["subject_column"]
        if consent_purpose:
            subject.required = True
            subject.help_text = (
                "The column holding your reference of the person each row is about. Required: "
                f"this model needs the person's consent for “{consent_purpose}”. Only a "
                "pseudonym of it is stored with each decision."
            )
            self.fields["purpose"].initial = consent_purpose
        else:
            subject.help_text = (
                "Optional: the column holding your reference of the person each row is about. "
                "Only a pseudonym of it is stored."
            )
        self.fields["purpose"].help_text = "Why you request these predictions; recorded."

    def add_service_errors(self, exc: ApplicationError) -> None:
        """Show a refused submission's errors next to the fields they name."""
        for error in exc.errors or [{"field": None, "message": exc.detail}]:
            field = str(error.get("field") or "")
            message = capfirst(str(error.get("message") or exc.detail)).rstrip(".") + "."
            self.add_error(field if field in self.fields else None, message)
