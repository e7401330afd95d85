"""Bias reports (Fairlearn): how a version treats protected groups, live or on validation data.

For each protected attribute of the version's signature: per group the count, selection rate,
true- and false-positive rate; across groups the demographic-parity difference and ratio and
the equalized-odds difference. Groups smaller than ``min_group_size`` are suppressed (their
rates are not shown and they are not compared). Thresholds come from the registry's promotion
policy for the family's risk class; a breach raises an alert.
"""

from __future__ import annotations

import csv
import io
import logging
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.compliance.models import BiasReport
from apps.compliance.services import effective_label
from apps.inference.models import Decision, Route
from apps.registry import gates
from apps.registry.models import ModelVersion, VersionStatus
from apps.registry.signature import Signature
from gatehouse.errors import ValidationFailed
from gatehouse.services import alert_raise

logger = logging.getLogger(__name__)


def _rows_from_decisions(
    version: ModelVersion, start: datetime | None, end: datetime | None
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    decisions = (
        Decision.objects.filter(version=version, outcome__isnull=False, erased_at__isnull=True)
        .exclude(route=Route.SHADOW)
        .select_related("outcome", "review")
    )
    if start:
        decisions = decisions.filter(created_at__gte=start)
    if end:
        decisions = decisions.filter(created_at__lt=end)
    rows, y_true, y_pred = [], [], []
    for d in decisions.iterator(2000):
        rows.append(d.inputs or {})
        y_true.append(d.outcome.label)
        y_pred.append(effective_label(d))  # a reviewer's override counts, not the model's
    return rows, y_true, y_pred


def _rows_from_validation(
    version: ModelVersion,
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    from apps.registry import encoding
    from apps.registry.artifacts import default_store
    from apps.registry.evaluation import parse_validation_csv
    from apps.registry.loading import load_version, predict_proba

    signature = Signature.model_validate(version.signature)
    data = default_store().read_verified(version.validation_sha256)
    rows, y_true = parse_validation_csv(signature, data)
    labels = signature.output.labels
    probabilities = predict_proba(load_version(version), encoding.encode(version.signature, rows))
    return rows, y_true, [labels[i] for i in probabilities.argmax(axis=1)]


def compute(
    signature: Signature,
    rows: list[dict[str, Any]],
    y_true: list[str],
    y_pred: list[str],
    *,
    min_group_size: int,
) -> dict[str, Any]:
    """Per protected attribute: groups (suppressed below ``min_group_size``) and differences."""
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    from apps.registry.evaluation import group_of

    labels = signature.output.labels
    positive = signature.output.positive_label or labels[-1]
    truth = np.array([1 if y == positive else 0 for y in y_true])
    pred = np.array([1 if y == positive else 0 for y in y_pred])
    out: dict[str, Any] = {"positive_label": positive, "attributes": {}}
    for feature in (f for f in signature.features if f.protected):
        known = [i for i, row in enumerate(rows) if row.get(feature.name) is not None]
        groups = np.array([group_of(feature, rows[i][feature.name]) for i in known])
        t, p = truth[known], pred[known]
        entry: dict[str, Any] = {"groups": {}, "suppressed": [], "compared": []}
        if len(known) == 0:
            out["attributes"][feature.name] = entry
            continue
        frame = MetricFrame(
            metrics={
                "selection_rate": selection_rate,
                "tpr": lambda a, b: _rate(true_positive_rate, a, b, positives=True),
                "fpr": lambda a, b: _rate(false_positive_rate, a, b, positives=False),
                "count": lambda a, b: len(a),
            },
            y_true=t,
            y_pred=p,
            sensitive_features=groups,
        )
        for group, values in frame.by_group.to_dict(orient="index").items():
            count = int(values["count"])
            if count < min_group_size:
                entry["suppressed"].append({"group": str(group), "count": f"< {min_group_size}"})
                continue
            entry["groups"][str(group)] = {
                "count": count,
                **{
                    k: (None if np.isnan(values[k]) else round(float(values[k]), 6))
                    for k in ("selection_rate", "tpr", "fpr")
                },
            }
        compared = sorted(entry["groups"])
        entry["compared"] = compared
        if len(compared) >= 2:
            mask = np.isin(groups, compared)
            kwargs = {"sensitive_features": groups[mask]}
            entry["demographic_parity_difference"] = round(
                float(demographic_parity_difference(t[mask], p[mask], **kwargs)), 6
            )
            entry["demographic_parity_ratio"] = round(
                float(demographic_parity_ratio(t[mask], p[mask], **kwargs)), 6
            )
            entry["equalized_odds_difference"] = round(
                float(equalized_odds_difference(t[mask], p[mask], **kwargs)), 6
            )
        out["attributes"][feature.name] = entry
    return out


def _rate(metric: Any, y_true: Any, y_pred: Any, *, positives: bool) -> float:
    """TPR/FPR, or NaN (shown as "—") for a group without any true positives/negatives."""
    if not np.any(y_true == (1 if positives else 0)):
        return float("nan")
    return float(metric(y_true, y_pred, pos_label=1))


def _breaches(version: ModelVersion, results: dict[str, Any]) -> list[dict[str, Any]]:
    policy = gates.policy_for(version.family.risk_class)
    bounds = policy.get("fairness", {})
    found = []
    for attribute, entry in results["attributes"].items():
        for metric, bound in bounds.items():
            value = entry.get(metric)
            if value is None:
                continue
            if ("max" in bound and value > bound["max"]) or (
                "min" in bound and value < bound["min"]
            ):
                found.append({"attribute": attribute, "metric": metric, "value": value, **bound})
    return found


def report_create(
    *,
    version: ModelVersion,
    source: str,
    user: Any = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> BiasReport:
    """Compute, store and (on a threshold breach) alert."""
    if source not in BiasReport.Source.values:
        raise ValidationFailed.for_field(
            "source", f"must be one of {', '.join(BiasReport.Source.values)}"
        )
    if start and end and start >= end:
        raise ValidationFailed.for_field("window_start", "must be before window_end")
    signature = Signature.model_validate(version.signature)
    if source == BiasReport.Source.VALIDATION:
        rows, y_true, y_pred = _rows_from_validation(version)
    else:
        rows, y_true, y_pred = _rows_from_decisions(version, start, end)
    policy = gates.policy_for(version.family.risk_class)
    k = int(policy.get("min_group_size", settings.BIAS_MIN_GROUP_SIZE))
    results = compute(signature, rows, y_true, y_pred, min_group_size=k)
    breaches = _breaches(version, results)
    with transaction.atomic():
        report = BiasReport.objects.create(
            version=version,
            source=source,
            window_start=start,
            window_end=end,
            min_group_size=k,
            rows=len(rows),
            results=results,
            breaches=breaches,
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )
        for breach in breaches:
            alert_raise(
                kind="bias_threshold",
                severity="warning",
                title=f"{version}: {breach['metric']} on {breach['attribute']} is "
                f"{breach['value']:.3f}",
                detail=f"Bias report {report.pk} ({source}, {len(rows)} rows).",
                subject=str(version),
                family=version.family.slug,
            )
    return report


def reports_scheduled(*, days: int = 7) -> list[BiasReport]:
    """A live report over the last ``days`` for every version in production."""
    end = timezone.now()
    return [
        report_create(
            version=version,
            source=BiasReport.Source.DECISIONS,
            start=end - timedelta(days=days),
            end=end,
        )
        for version in ModelVersion.objects.select_related("family").filter(
            status=VersionStatus.PRODUCTION
        )
        if any(f.get("protected") for f in version.signature["features"])
    ]


def report_csv(report: BiasReport) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["attribute", "group", "count", "selection_rate", "tpr", "fpr"])
    for attribute, entry in report.results.get("attributes", {}).items():
        for group, values in entry["groups"].items():
            writer.writerow(
                [
                    attribute,
                    group,
                    values["count"],
                    values["selection_rate"],
                    values["tpr"],
                    values["fpr"],
                ]
            )
        for suppressed in entry["suppressed"]:
            writer.writerow([attribute, suppressed["group"], suppressed["count"], "", "", ""])
    writer.writerow([])
    writer.writerow(["attribute", "metric", "value"])
    for attribute, entry in report.results.get("attributes", {}).items():
        for metric in (
            "demographic_parity_difference",
            "demographic_parity_ratio",
            "equalized_odds_difference",
        ):
            if metric in entry:
                writer.writerow([attribute, metric, entry[metric]])
    return out.getvalue().encode()
