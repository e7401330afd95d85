"""Held-out evaluation computed by the platform itself: the registry never takes a model's
metrics on trust. Parses the validation CSV against the signature, runs the model, and
measures overall metrics, metrics per protected group and fairness differences (Fairlearn)."""

from __future__ import annotations

import csv
import io
import itertools
import math
from typing import TYPE_CHECKING, Any

from apps.registry import encoding
from apps.registry.signature import Feature, FeatureType, Signature
from gatehouse.errors import ValidationFailed

if TYPE_CHECKING:
    from torch import nn

LABEL_COLUMN = "label"
MAX_REPORTED_ERRORS = 20
SMOKE_ROWS = 16
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _coerce(feature: Feature, raw: str) -> Any:
    text = raw.strip()
    if feature.type is FeatureType.CATEGORY:
        return text
    if feature.type is FeatureType.BOOL:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        return text
    try:
        number = float(text)
    except ValueError:
        return text
    if feature.type is FeatureType.INT and math.isfinite(number) and number == int(number):
        return int(number)
    return number


def parse_validation_csv(
    signature: Signature, data: bytes
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows and true labels of a validation CSV (one column per feature, plus ``label``)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationFailed.for_field("validation", "must be UTF-8 CSV") from exc
    reader = csv.DictReader(io.StringIO(text))
    expected = {f.name for f in signature.features} | {LABEL_COLUMN}
    header = set(reader.fieldnames or [])
    if header != expected:
        missing = sorted(expected - header)
        extra = sorted(header - expected)
        raise ValidationFailed.for_field(
            "validation",
            "columns must be the signature's features and 'label'"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; unexpected: {', '.join(extra)}" if extra else ""),
        )
    features = {f.name: f for f in signature.features}
    labels = signature.output.labels
    sig = signature.as_dict()
    rows: list[dict[str, Any]] = []
    y_true: list[str] = []
    errors: list[dict[str, Any]] = []
    for line, record in enumerate(reader, start=2):
        row = {name: _coerce(features[name], record[name] or "") for name in features}
        for field, message in encoding.check_row(sig, row):
            errors.append(
                {"field": f"validation.line{line}.{field}", "message": message, "type": "invalid"}
            )
        label = (record[LABEL_COLUMN] or "").strip()
        if label not in labels:
            errors.append(
                {
                    "field": f"validation.line{line}.label",
                    "message": f"must be one of {', '.join(labels)}",
                    "type": "invalid",
                }
            )
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
        rows.append(row)
        y_true.append(label)
    if errors:
        raise ValidationFailed(
            f"The validation file has invalid rows (first: {errors[0]['field']}).", errors=errors
        )
    if not rows:
        raise ValidationFailed.for_field("validation", "has no rows")
    return rows, y_true


def smoke_test(signature: Signature, module: nn.Module, rows: list[dict[str, Any]]) -> None:
    """The artifact must accept the signature's inputs and produce one probability per label."""
    from apps.registry.loading import predict_proba

    sample = rows[:SMOKE_ROWS]
    try:
        probabilities = predict_proba(module, encoding.encode(signature.as_dict(), sample))
    except Exception as exc:
        raise ValidationFailed.for_field(
            "signature",
            f"does not match the artifact: the model fails on {signature.input_width} encoded "
            f"inputs ({type(exc).__name__}: {str(exc)[:160]})",
        ) from exc
    expected = (len(sample), len(signature.output.labels))
    if tuple(probabilities.shape) != expected:
        raise ValidationFailed.for_field(
            "signature",
            f"does not match the artifact: output shape {tuple(probabilities.shape)}, "
            f"the signature declares {len(signature.output.labels)} labels",
        )
    if not all(math.isfinite(float(p)) for p in probabilities.ravel()):
        raise ValidationFailed.for_field("artifact", "produces non-finite outputs")


def group_of(feature: Feature, value: Any) -> str:
    """The fairness group of a protected feature's value (numeric ones binned by edges)."""
    if feature.type is FeatureType.BOOL:
        return "true" if value else "false"
    if feature.type is FeatureType.CATEGORY or not feature.group_edges:
        return str(value)
    edges = feature.group_edges
    if value < edges[0]:
        return f"<{edges[0]:g}"
    for low, high in itertools.pairwise(edges):
        if low <= value < high:
            return f"{low:g}-{high:g}"
    return f">={edges[-1]:g}"


def evaluate(
    signature: Signature,
    module: nn.Module,
    rows: list[dict[str, Any]],
    y_true: list[str],
    *,
    min_group_size: int = 20,
) -> dict[str, Any]:
    """Overall metrics, metrics by protected group, and fairness differences."""
    import numpy as np
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
        selection_rate,
    )
    from sklearn import metrics as skm

    from apps.registry.loading import predict_proba

    labels = signature.output.labels
    probabilities = predict_proba(module, encoding.encode(signature.as_dict(), rows))
    y_pred = [labels[i] for i in probabilities.argmax(axis=1)]
    overall: dict[str, float] = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "f1_macro": float(skm.f1_score(y_true, y_pred, average="macro", labels=labels)),
    }
    binary = len(labels) == 2
    positive = signature.output.positive_label or labels[-1]
    if binary and len(set(y_true)) == 2:
        pos_index = labels.index(positive)
        truth = np.array([1 if y == positive else 0 for y in y_true])
        overall["roc_auc"] = float(skm.roc_auc_score(truth, probabilities[:, pos_index]))
        overall["positive_rate"] = float(np.mean([y == positive for y in y_pred]))
    result: dict[str, Any] = {
        "overall": {k: round(v, 6) for k, v in overall.items()},
        "n_validation": len(rows),
        "positive_label": positive if binary else None,
        "by_group": {},
        "fairness": {},
    }
    truth_bin = np.array([1 if y == positive else 0 for y in y_true])
    pred_bin = np.array([1 if y == positive else 0 for y in y_pred])
    for feature in (f for f in signature.features if f.protected):
        groups = np.array([group_of(feature, row[feature.name]) for row in rows])
        frame = MetricFrame(
            metrics={
                "accuracy": skm.accuracy_score,
                "selection_rate": selection_rate,
                "count": lambda t, p: len(t),
            },
            y_true=truth_bin if binary else np.array(y_true),
            y_pred=pred_bin if binary else np.array(y_pred),
            sensitive_features=groups,
        )
        by_group = {
            str(group): {name: round(float(value), 6) for name, value in values.items()}
            for group, values in frame.by_group.to_dict(orient="index").items()
        }
        result["by_group"][feature.name] = by_group
        if not binary:
            continue
        large = np.isin(groups, [g for g, v in by_group.items() if v["count"] >= min_group_size])
        compared = {str(g) for g in groups[large]}
        if len(compared) < 2:
            result["fairness"][feature.name] = {"groups_compared": len(compared)}
            continue
        result["fairness"][feature.name] = {
            "demographic_parity_difference": round(
                float(
                    demographic_parity_difference(
                        truth_bin[large], pred_bin[large], sensitive_features=groups[large]
                    )
                ),
                6,
            ),
            "equalized_odds_difference": round(
                float(
                    equalized_odds_difference(
                        truth_bin[large], pred_bin[large], sensitive_features=groups[large]
                    )
                ),
                6,
            ),
            "groups_compared": len(compared),
        }
    return result
