"""The one error hierarchy of Gatehouse.

Services raise these; ``gatehouse.api`` maps them to JSON ``{"detail", "code", "errors"}`` and
``gatehouse.views`` to a message for HTML/HTMX. Nothing else decides an error's status code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class ApplicationError(Exception):
    """Base for every error a user may see. Subclasses set the HTTP status and a stable code."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    default_detail: ClassVar[str] = "The request could not be processed."

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        self.error_code = code or self.code
        self.errors: list[dict[str, Any]] = [dict(e) for e in errors or ()]
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.detail)

    def as_dict(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.error_code, "errors": self.errors}


def server_error_body(request_id: str) -> dict[str, Any]:
    """The body of a 500: generic, with the request id to quote; never the exception."""
    return {
        "detail": "Internal server error. Quote the request id when reporting it.",
        "code": "server_error",
        "errors": [],
        "request_id": request_id,
    }


class ValidationFailed(ApplicationError):
    status_code = 422
    code = "invalid"
    default_detail = "The input is not valid."

    @classmethod
    def for_field(cls, field: str, message: str, *, code: str = "invalid") -> ValidationFailed:
        return cls(
            f"{field}: {message}",
            errors=[{"field": field, "message": message, "type": code}],
        )


class PayloadTooLarge(ApplicationError):
    status_code = 413
    code = "payload_too_large"
    default_detail = "The request is larger than allowed."


class NotAuthenticated(ApplicationError):
    status_code = 401
    code = "not_authenticated"
    default_detail = "Valid credentials are required."


class PermissionDenied(ApplicationError):
    status_code = 403
    code = "forbidden"
    default_detail = "You may not perform this action."


class OTPRequired(PermissionDenied):
    code = "otp_required"
    default_detail = "This action requires a session verified with a second factor."


class NotFound(ApplicationError):
    status_code = 404
    code = "not_found"
    default_detail = "Not found."


class Conflict(ApplicationError):
    status_code = 409
    code = "conflict"
    default_detail = "The request conflicts with the current state."


class RateLimited(ApplicationError):
    status_code = 429
    code = "rate_limited"
    default_detail = "Too many requests."

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class ServiceUnavailable(ApplicationError):
    status_code = 503
    code = "unavailable"
    default_detail = "The service is temporarily unavailable."

    def __init__(
        self, detail: str | None = None, *, code: str | None = None, retry_after: int = 5
    ) -> None:
        super().__init__(detail, code=code, headers={"Retry-After": str(retry_after)})
