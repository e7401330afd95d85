"""Load a version's model from its verified artifact (weights only, never pickled code)."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

from gatehouse.errors import ValidationFailed

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)


def model_from_bytes(
    *, framework: str, architecture: str, architecture_kwargs: dict[str, Any], data: bytes
) -> nn.Module:
    """An eval-mode module from artifact bytes; ValidationFailed naming what is wrong."""
    import torch

    from apps.registry import architectures
    from apps.registry.models import Framework

    try:
        if framework == Framework.TORCHSCRIPT:
            module: nn.Module = torch.jit.load(io.BytesIO(data), map_location="cpu")
        else:
            if architecture not in architectures.ARCHITECTURES:
                raise ValidationFailed.for_field(
                    "architecture",
                    f"must be one of {', '.join(sorted(architectures.ARCHITECTURES))}",
                )
            try:
                module = architectures.build(architecture, architecture_kwargs)
            except TypeError as exc:
                raise ValidationFailed.for_field("architecture_kwargs", str(exc)) from exc
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise ValueError("the file holds no state_dict")
            module.load_state_dict(state)
    except ValidationFailed:
        raise
    except Exception as exc:
        raise ValidationFailed.for_field(
            "artifact",
            f"is not a loadable {framework} model: {type(exc).__name__}: {str(exc)[:200]}",
        ) from exc
    module.eval()
    return module


def predict_proba(module: nn.Module, inputs: Any) -> Any:
    """Class probabilities (numpy, rows x labels) for an encoded input array."""
    import torch

    with torch.inference_mode():
        logits = module(torch.as_tensor(inputs, dtype=torch.float32))
        return torch.softmax(logits, dim=1).numpy()


def load_version(version: Any) -> nn.Module:
    """The model of a registered version, its artifact verified against the recorded hash.

    A tampered or missing artifact is refused and raises a critical alert.
    """
    from apps.registry.artifacts import ArtifactMissing, ArtifactTampered, default_store
    from gatehouse.services import alert_raise

    try:
        data = default_store().read_verified(version.artifact_sha256)
    except (ArtifactTampered, ArtifactMissing) as exc:
        alert_raise(
            kind="artifact_integrity",
            severity="critical",
            title=f"Artifact of {version} refused: {exc.error_code}",
            detail=f"expected sha256 {version.artifact_sha256}",
            subject=str(version),
        )
        raise
    return model_from_bytes(
        framework=version.framework,
        architecture=version.architecture,
        architecture_kwargs=version.architecture_kwargs,
        data=data,
    )
