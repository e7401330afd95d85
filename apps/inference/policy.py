"""Pre-predict policy checks: the extension point through which later apps (compliance: consent)
take part in every prediction without the inference app importing them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apps.registry.models import ModelFamily


@dataclass(frozen=True)
class PredictContext:
    family: ModelFamily
    user: Any
    subject_pseudonym: str
    purpose: str
    jurisdiction: str
    n_rows: int


PolicyCheck = Callable[[PredictContext], None]
_checks: list[PolicyCheck] = []


def register_check(check: PolicyCheck) -> None:
    """Add a check run before every prediction; it raises an ApplicationError to refuse."""
    if check not in _checks:
        _checks.append(check)


def unregister_check(check: PolicyCheck) -> None:
    if check in _checks:
        _checks.remove(check)


def run_checks(context: PredictContext) -> None:
    for check in list(_checks):
        check(context)
