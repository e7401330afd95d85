"""Schemas shared by every API router."""

from __future__ import annotations

from typing import Any

from ninja import Schema


class ErrorOut(Schema):
    """The body of every error: a message, a stable code, and the offending fields."""

    detail: str
    code: str
    errors: list[dict[str, Any]]
