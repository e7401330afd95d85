"""Sentry error reporting, on only when ``SENTRY_DSN`` is set, without personal data."""

from __future__ import annotations

from typing import Any

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, DEFAULT_PII_DENYLIST, EventScrubber

# Field names whose values never leave the process, on top of Sentry's defaults.
EXTRA_DENYLIST = [
    "api_key",
    "apikey",
    "key",
    "key_hash",
    "otp_token",
    "token",
    "subject",
    "subject_ref",
    "reference",
    "email",
    "username",
    "first_name",
    "last_name",
    "rows",
    "inputs",
    "features",
    "pseudonym",
    "ip_address",
    "remote_addr",
    "x_api_key",
]


def _strip_request(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)  # bodies may carry inputs about people
        request.pop("cookies", None)
        request.pop("query_string", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            for name in list(headers):
                if name.lower() in {"authorization", "cookie", "x-api-key", "x-csrftoken"}:
                    headers[name] = "[Filtered]"
    event.pop("user", None)
    return event


def init_sentry(*, dsn: str, environment: str, transport: Any = None) -> None:
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        event_scrubber=EventScrubber(
            denylist=DEFAULT_DENYLIST + EXTRA_DENYLIST,
            pii_denylist=DEFAULT_PII_DENYLIST + EXTRA_DENYLIST,
            recursive=True,
        ),
        before_send=_strip_request,  # type: ignore[arg-type]
        traces_sample_rate=0.0,
        transport=transport,
    )
