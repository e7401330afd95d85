"""Extension points through which later apps (compliance: consent, explanations, reviews) take
part in every prediction without the inference app importing them.

- checks run before a prediction and refuse it by raising an ApplicationError; a check that
  allows may return a reference to what allowed it (e.g. ``consent:42``), which is recorded
  in the decision (``Decision.policy_ref``);
- recorded hooks run inside the transaction that stores served decisions, with the rows as
  the model received them, so that what they write commits (or not) with the decisions;
- failure hooks see every predict request that was refused or failed (monitoring counts them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
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


PolicyCheck = Callable[[PredictContext], str | None]
_checks: list[PolicyCheck] = []


def register_check(check: PolicyCheck) -> None:
    """Add a check run before every prediction; it raises an ApplicationError to refuse."""
    if check not in _checks:
        _checks.append(check)


def unregister_check(check: PolicyCheck) -> None:
    if check in _checks:
        _checks.remove(check)


def run_checks(context: PredictContext) -> str:
    """Run every check; the references of what allowed the prediction, joined by spaces."""
    refs = [ref for check in list(_checks) if (ref := check(context))]
    return " ".join(refs)


RecordedHook = Callable[[Sequence[Any], Sequence[dict[str, Any]]], None]
_recorded: list[RecordedHook] = []


def register_recorded_hook(hook: RecordedHook) -> None:
    """Add ``hook(decisions, rows)``, called when served decisions are recorded."""
    if hook not in _recorded:
        _recorded.append(hook)


def run_recorded_hooks(decisions: Sequence[Any], rows: Sequence[dict[str, Any]]) -> None:
    for hook in list(_recorded):
        hook(decisions, rows)


FailureHook = Callable[[ModelFamily, BaseException], None]
_failures: list[FailureHook] = []


def register_failure_hook(hook: FailureHook) -> None:
    """Add ``hook(family, error)``, called when a predict request for ``family`` fails."""
    if hook not in _failures:
        _failures.append(hook)


def run_failure_hooks(family: ModelFamily, error: BaseException) -> None:
    for hook in list(_failures):
        try:
            hook(family, error)
        except Exception:  # observing a failure must never change the answer
            logging.getLogger(__name__).exception("failure hook %s failed", hook)
