"""Forms of the platform pages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from gatehouse.extensions import family_choices_for
from gatehouse.models import ApiKeyAction


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What the key is for, e.g. 'nightly scoring job'."
    )
    actions = forms.MultipleChoiceField(
        choices=ApiKeyAction.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[ApiKeyAction.VIEW, ApiKeyAction.PREDICT],
    )
    families = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Leave empty for every family you may use.",
    )
    expires_days = forms.IntegerField(
        min_value=1,
        max_value=settings.API_KEY_MAX_EXPIRY_DAYS,
        initial=settings.API_KEY_DEFAULT_EXPIRY_DAYS,
        label="Expires after (days)",
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["families"].choices = family_choices_for(user)  # type: ignore[attr-defined]


class OTPTokenForm(forms.Form):
    token = forms.CharField(
        label="Code",
        max_length=16,
        min_length=6,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "autocapitalize": "none", "autofocus": True}
        ),
        help_text="The 6-digit code from your authenticator app, or a backup code.",
    )


class PasswordConfirmForm(forms.Form):
    password = forms.CharField(
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_password(self) -> str:
        password: str = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError("The password is not correct.")
        return password


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, label="Actor (username)")
    model = forms.CharField(required=False, label="Object type (e.g. apikey)")
    object_id = forms.CharField(required=False, label="Object id")
    since = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    until = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
