"""A small, deterministic credit-like model and its files, for registry tests (no training)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from apps.registry import encoding
from apps.registry.architectures import LogisticRegression

SIGNATURE: dict[str, Any] = {
    "features": [
        {"name": "income", "type": "float", "minimum": 0, "maximum": 200, "unit": "kEUR"},
        {
            "name": "age",
            "type": "int",
            "minimum": 18,
            "maximum": 90,
            "unit": "years",
            "protected": True,
            "group_edges": [30, 50],
        },
        {"name": "housing", "type": "category", "allowed": ["own", "rent", "free"]},
        {"name": "sex", "type": "category", "allowed": ["female", "male"], "protected": True},
    ],
    "output": {"labels": ["good", "bad"], "positive_label": "bad"},
}
# Risk rises as income falls and for renters; sex and age play no part (fair by design).
COEF = {"income": -0.08, "housing=rent": 1.2, "housing=free": 0.4}
INTERCEPT = 2.5


def _rows(n: int, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for _ in range(n):
        row = {
            "income": round(float(rng.uniform(5, 120)), 2),
            "age": int(rng.integers(18, 90)),
            "housing": str(rng.choice(["own", "rent", "free"])),
            "sex": str(rng.choice(["female", "male"])),
        }
        logit = (
            INTERCEPT + COEF["income"] * row["income"] + COEF.get(f"housing={row['housing']}", 0)
        )
        labels.append("bad" if rng.random() < 1 / (1 + np.exp(-logit)) else "good")
        rows.append(row)
    return rows, labels


def build_model() -> LogisticRegression:
    columns = encoding.input_columns(SIGNATURE)
    model = LogisticRegression(n_inputs=len(columns), n_classes=2)
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()
        for name, value in COEF.items():
            model.linear.weight[1, columns.index(name)] = value
        model.linear.bias[1] = INTERCEPT
    return model


def state_dict_bytes(model: torch.nn.Module | None = None) -> bytes:
    buffer = io.BytesIO()
    torch.save((model or build_model()).state_dict(), buffer)
    return buffer.getvalue()


def validation_csv(n: int = 400, seed: int = 7, signature: dict[str, Any] | None = None) -> bytes:
    rows, labels = _rows(n, seed)
    names = [f["name"] for f in (signature or SIGNATURE)["features"]]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*names, "label"])
    writer.writeheader()
    for row, label in zip(rows, labels, strict=True):
        writer.writerow({**{k: row[k] for k in names}, "label": label})
    return out.getvalue().encode()


@dataclass
class Registration:
    version: str = "1.0.0"
    signature: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(SIGNATURE)))
    model_card: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        card = (
            {
                "intended_use": "Tests.",
                "limitations": "Synthetic.",
                "ethical_considerations": "Sex and age are protected.",
            }
            if self.model_card
            else {}
        )
        return {
            "version": self.version,
            "framework": "torch_state_dict",
            "architecture": "logistic_regression",
            "architecture_kwargs": {"n_inputs": 7, "n_classes": 2},
            "signature": self.signature,
            "dataset_name": "synthetic-credit",
            "dataset_version": "1",
            "training_subject_refs": ["subject-1", "subject-2"],
            **card,
            **self.extra,
        }

    def files(
        self, artifact: bytes | None = None, validation: bytes | None = None
    ) -> dict[str, Any]:
        from django.core.files.uploadedfile import SimpleUploadedFile

        return {
            "metadata": json.dumps(self.metadata()),
            "artifact": SimpleUploadedFile("model.pt", artifact or state_dict_bytes()),
            "validation": SimpleUploadedFile("validation.csv", validation or validation_csv()),
        }


def register(family: Any, owner: Any, reg: Registration | None = None, **files: bytes) -> Any:
    """Register a version of the test model (files default to the model and its CSV)."""
    from apps.registry import services
    from apps.registry.schemas import VersionMetadata

    reg = reg or Registration()
    return services.version_register(
        family=family,
        user=owner,
        metadata=VersionMetadata.model_validate(reg.metadata()),
        artifact=io.BytesIO(files.get("artifact") or state_dict_bytes()),
        validation=io.BytesIO(files.get("validation") or validation_csv()),
    )


def serve(family: Any, owner: Any, approver: Any, number: str, target: str = "production") -> Any:
    """Register, validate, approve and (unless ``target`` is empty) deploy a version."""
    from apps.registry import services

    version = register(family, owner, Registration(version=number))
    services.version_validate(version=version, user=owner)
    services.version_approve(version=version, user=approver, reason="ok to serve")
    if target:
        services.version_deploy(version=version, user=owner, target=target)
    version.refresh_from_db()
    return version
