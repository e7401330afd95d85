"""Turn rows keyed by feature name into the model's input tensor, as the signature says.

Self-contained (numpy only): it is shipped inside TorchServe archives so that the in-process
backend and TorchServe encode identically. Numbers pass through, booleans become 0/1 and
categories are one-hot encoded in the order of their allowed values. Features marked
``model_input: false`` (protected attributes kept for fairness measurement) are validated but
never encoded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

NUMERIC = ("float", "int")


def model_inputs(signature: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The features that are fed to the model, in signature order."""
    return [f for f in signature["features"] if f.get("model_input", True)]


def input_width(signature: Mapping[str, Any]) -> int:
    return sum(len(f["allowed"]) if f["type"] == "category" else 1 for f in model_inputs(signature))


def input_columns(signature: Mapping[str, Any]) -> list[str]:
    """Names of the encoded columns, e.g. ``age`` or ``housing=own``."""
    columns: list[str] = []
    for feature in model_inputs(signature):
        if feature["type"] == "category":
            columns.extend(f"{feature['name']}={value}" for value in feature["allowed"])
        else:
            columns.append(feature["name"])
    return columns


def encode(signature: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """A float32 array of shape (len(rows), input_width). Rows must be valid (see check_row)."""
    features = model_inputs(signature)
    out = np.zeros((len(rows), input_width(signature)), dtype=np.float32)
    for i, row in enumerate(rows):
        col = 0
        for feature in features:
            value = row[feature["name"]]
            if feature["type"] == "category":
                out[i, col + feature["allowed"].index(str(value))] = 1.0
                col += len(feature["allowed"])
            else:
                out[i, col] = float(value)
                col += 1
    return out


def check_row(signature: Mapping[str, Any], row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for each problem of one row: missing, extra, wrong type, out of range."""
    problems: list[tuple[str, str]] = []
    names = {f["name"] for f in signature["features"]}
    for extra in sorted(set(row) - names):
        problems.append((extra, "is not a feature of this model"))
    for feature in signature["features"]:
        name = feature["name"]
        if name not in row or row[name] is None:
            if feature.get("model_input", True):
                problems.append((name, "is required"))
            continue  # a fairness-only attribute may be left out
        value = row[name]
        kind = feature["type"]
        if kind == "category":
            if not isinstance(value, str) or value not in feature["allowed"]:
                problems.append((name, f"must be one of {', '.join(feature['allowed'])}"))
        elif kind == "bool":
            if not isinstance(value, bool):
                problems.append((name, "must be true or false"))
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append((name, f"must be a number ({kind})"))
                continue
            if not math.isfinite(float(value)):
                problems.append((name, "must be a finite number"))
                continue
            if kind == "int" and float(value) != int(value):
                problems.append((name, "must be a whole number"))
            low, high = feature.get("minimum"), feature.get("maximum")
            if low is not None and value < low:
                problems.append((name, f"must be at least {low:g}"))
            if high is not None and value > high:
                problems.append((name, f"must be at most {high:g}"))
    return problems
