"""Feature attributions of decisions, reproducible from the version and the recorded input.

Two methods, chosen by the version's architecture:

- ``linear_exact`` (logistic regression): the model is linear in its inputs up to the softmax,
  so the exact attribution of encoded column j to the log-odds of the explained label is
  ``(w_target,j - w_other,j) / scale_j * (x_j - mean_j)`` (for more than two labels, the
  target's logit ``w_target,j / scale_j * (x_j - mean_j)``). They sum exactly to
  ``output - baseline_output``.
- ``integrated_gradients`` (every other model): Captum's Integrated Gradients of the explained
  label's probability, ``EXPLANATION_IG_STEPS`` steps (Gauss-Legendre). They sum to
  ``output - baseline_output`` up to ``convergence_delta``.

**Baseline**: the training mean of every encoded input (the ``Standardize`` layer's ``mean``
buffer, i.e. the average training case, with one-hot columns at their training frequencies)
when the model has one; otherwise all zeros (for ``digits``: a blank image). One-hot columns of a
category are summed into one attribution per feature; features that are not model inputs
(protected attributes) get none.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings

from apps.registry import encoding
from apps.registry.models import ModelVersion

LINEAR = "linear_exact"
INTEGRATED_GRADIENTS = "integrated_gradients"


@dataclass(frozen=True)
class Attribution:
    method: str
    target: str
    output_kind: str
    baseline: str
    output: float
    baseline_output: float
    attributions: dict[str, float]
    convergence_delta: float | None


_models: dict[tuple[int, str], Any] = {}
_lock = threading.Lock()


def _model(version: ModelVersion) -> Any:
    """The version's verified model, loaded once per process."""
    from apps.registry.loading import load_version

    key = (version.pk, version.artifact_sha256)
    with _lock:
        if key not in _models:
            _models[key] = load_version(version)
        return _models[key]


def method_for(version: ModelVersion) -> str:
    return LINEAR if version.architecture == "logistic_regression" else INTEGRATED_GRADIENTS


def _feature_of_columns(signature: Mapping[str, Any]) -> list[str]:
    return [column.split("=", 1)[0] for column in encoding.input_columns(signature)]


def _per_feature(signature: Mapping[str, Any], values: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    for feature, value in zip(_feature_of_columns(signature), values, strict=True):
        out[feature] = out.get(feature, 0.0) + float(value)
    return {name: round(value, 6) for name, value in out.items()}


def explain_rows(
    version: ModelVersion, rows: Sequence[Mapping[str, Any]], targets: Sequence[str]
) -> list[Attribution]:
    """Attributions of ``rows`` (valid inputs of ``version``) to the labels ``targets``."""
    import torch

    if not rows:
        return []
    model = _model(version)
    signature = version.signature
    labels: list[str] = signature["output"]["labels"]
    target_index = [labels.index(t) for t in targets]
    x = torch.as_tensor(encoding.encode(signature, rows), dtype=torch.float32)
    norm = getattr(model, "norm", None)
    if norm is not None:
        base = norm.mean.detach().reshape(1, -1).expand_as(x).clone()
        baseline = "training mean of every encoded input"
    else:
        base = torch.zeros_like(x)
        baseline = "all inputs zero"
    if method_for(version) == LINEAR:
        return _linear(model, x, base, labels, target_index, baseline, signature)
    return _integrated_gradients(model, x, base, labels, target_index, baseline, signature)


def _linear(
    model: Any,
    x: Any,
    base: Any,
    labels: list[str],
    target_index: list[int],
    baseline: str,
    signature: Mapping[str, Any],
) -> list[Attribution]:
    import torch

    with torch.inference_mode():
        weight = model.linear.weight.double() / model.norm.scale.double()
        bias = model.linear.bias.double() - (weight * model.norm.mean.double()).sum(dim=1)
        xd, bd = x.double(), base.double()
        results = []
        for i, t in enumerate(target_index):
            if len(labels) == 2:
                w = weight[t] - weight[1 - t]
                b = bias[t] - bias[1 - t]
                kind = f"log-odds of '{labels[t]}'"
            else:
                w, b = weight[t], bias[t]
                kind = f"logit of '{labels[t]}'"
            contributions = (w * (xd[i] - bd[i])).numpy()
            results.append(
                Attribution(
                    method=LINEAR,
                    target=labels[t],
                    output_kind=kind,
                    baseline=baseline,
                    output=float((w * xd[i]).sum() + b),
                    baseline_output=float((w * bd[i]).sum() + b),
                    attributions=_per_feature(signature, contributions),
                    convergence_delta=0.0,
                )
            )
    return results


def _integrated_gradients(
    model: Any,
    x: Any,
    base: Any,
    labels: list[str],
    target_index: list[int],
    baseline: str,
    signature: Mapping[str, Any],
) -> list[Attribution]:
    import torch
    from captum.attr import IntegratedGradients

    def probability(inputs: Any) -> Any:
        return torch.softmax(model(inputs), dim=1)

    steps = int(getattr(settings, "EXPLANATION_IG_STEPS", 200))
    targets = torch.as_tensor(target_index)
    attributions, delta = IntegratedGradients(probability).attribute(
        x,
        baselines=base,
        target=targets,
        n_steps=steps,
        return_convergence_delta=True,
    )
    with torch.no_grad():
        out = probability(x).gather(1, targets.reshape(-1, 1)).flatten()
        out_base = probability(base).gather(1, targets.reshape(-1, 1)).flatten()
    return [
        Attribution(
            method=INTEGRATED_GRADIENTS,
            target=labels[t],
            output_kind=f"probability of '{labels[t]}'",
            baseline=baseline,
            output=float(out[i]),
            baseline_output=float(out_base[i]),
            attributions=_per_feature(signature, attributions[i].detach().numpy()),
            convergence_delta=float(delta[i]),
        )
        for i, t in enumerate(target_index)
    ]


def reasons(attributions: Mapping[str, float], target: str, n: int = 3) -> list[str]:
    """The main factors in plain language, strongest first."""
    ranked = sorted(attributions.items(), key=lambda item: -abs(item[1]))
    out: list[str] = []
    for rank, (feature, value) in enumerate(ranked[:n]):
        if value == 0:
            break
        name = feature.replace("_", " ")
        direction = "raised" if value > 0 else "lowered"
        most = " most" if rank == 0 else ""
        out.append(f"{name.capitalize()} {direction} the chance of '{target}'{most}.")
    return out
