"""Promotion gates: the policy per risk class (policies/promotion.toml) applied to a version."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.registry.models import LegalBasis, ModelVersion
from gatehouse.errors import ServiceUnavailable

DEFAULT_POLICY = Path(__file__).resolve().parent / "policies" / "promotion.toml"
MIN_RETENTION_DAYS = 183  # AI Act Art. 19/26(6): logs kept at least six months


@dataclass(frozen=True)
class GateOutcome:
    gate: str
    passed: bool
    measured: str = ""
    threshold: str = ""
    detail: str = ""


@cache
def _load(path: str) -> dict[str, Any]:
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def policy_for(risk_class: str) -> dict[str, Any]:
    path = str(getattr(settings, "REGISTRY_POLICY_FILE", "") or DEFAULT_POLICY)
    policies = _load(path)
    if risk_class not in policies:
        raise ServiceUnavailable(
            f"The promotion policy has no rules for risk class '{risk_class}'; an administrator "
            "must add them before versions of this family can be registered.",
            code="policy_missing",
            retry_after=3600,
        )
    return dict(policies[risk_class])


def _bound(value: float | None, bound: dict[str, float]) -> tuple[bool, str]:
    parts = []
    ok = value is not None
    if "min" in bound:
        parts.append(f">= {bound['min']:g}")
        ok = ok and value is not None and value >= bound["min"]
    if "max" in bound:
        parts.append(f"<= {bound['max']:g}")
        ok = ok and value is not None and value <= bound["max"]
    return ok, " and ".join(parts)


def run_gates(version: ModelVersion) -> list[GateOutcome]:
    """Every gate of the family's risk class, each with what was measured and the threshold."""
    family = version.family
    policy = policy_for(family.risk_class)
    metrics = version.metrics or {}
    outcomes: list[GateOutcome] = []

    rows = int(metrics.get("n_validation") or 0)
    need = int(policy.get("min_validation_rows", 0))
    outcomes.append(GateOutcome("validation rows", rows >= need, str(rows), f">= {need}"))

    if policy.get("require_model_card"):
        missing = [
            name
            for name in ("intended_use", "limitations", "ethical_considerations")
            if not getattr(version, name).strip()
        ]
        outcomes.append(
            GateOutcome(
                "model card complete",
                not missing,
                "complete" if not missing else "incomplete",
                "intended use, limitations, ethical considerations",
                f"missing: {', '.join(missing)}" if missing else "",
            )
        )

    if policy.get("require_compliance_metadata"):
        problems = []
        if not family.purposes:
            problems.append("purpose of processing")
        if not family.legal_basis:
            problems.append("legal basis")
        if family.legal_basis == LegalBasis.CONSENT and not family.consent_purpose:
            problems.append("consent purpose (legal basis is consent)")
        if family.retention_days < MIN_RETENTION_DAYS:
            problems.append(f"retention of at least {MIN_RETENTION_DAYS} days")
        outcomes.append(
            GateOutcome(
                "compliance metadata",
                not problems,
                "complete" if not problems else "incomplete",
                "purpose, legal basis, retention, owner",
                f"missing: {', '.join(problems)}" if problems else "",
            )
        )

    overall = metrics.get("overall") or {}
    for name, bound in (policy.get("metrics") or {}).items():
        value = overall.get(name)
        passed, threshold = _bound(value, bound)
        outcomes.append(
            GateOutcome(
                f"metric {name}",
                passed,
                "not measured" if value is None else f"{value:.4f}",
                threshold,
            )
        )

    fairness_policy = policy.get("fairness") or {}
    if fairness_policy:
        protected = [f["name"] for f in version.signature["features"] if f.get("protected")]
        if policy.get("require_protected_features") and not protected:
            outcomes.append(
                GateOutcome(
                    "fairness: protected features declared",
                    False,
                    "none",
                    ">= 1",
                    "a model of this risk class must declare its protected features",
                )
            )
        for feature in protected:
            measured = (metrics.get("fairness") or {}).get(feature) or {}
            for name, bound in fairness_policy.items():
                value = measured.get(name)
                passed, threshold = _bound(value, bound)
                detail = ""
                if value is None:
                    detail = (
                        f"fewer than two groups of {policy.get('min_group_size', 0)}+ rows "
                        "to compare"
                    )
                outcomes.append(
                    GateOutcome(
                        f"fairness {feature}: {name}",
                        passed,
                        "not measured" if value is None else f"{value:.4f}",
                        threshold,
                        detail,
                    )
                )
    return outcomes
