"""Load a version's model from its verified artifact (weights only, never pickled code)."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

from gatehouse.errors import ValidationFailed

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)


def _refused(field: str, message: str, exc: BaseException, *, framework: str) -> ValidationFailed:
    """A short, user-facing refusal; the technical cause goes to the log (never the data)."""
    logger.info("artifact refused (%s): %s: %s", framework, type(exc).__name__, exc)
    return ValidationFailed.for_field(field, message)


def _first(names: list[str], n: int = 3) -> str:
    shown = ", ".join(name[:60] for name in names[:n])
    return f"{shown} and {len(names) - n} more" if len(names) > n else shown


def _mismatch(module: nn.Module, state: dict[str, Any]) -> str:
    """What differs between the keys and shapes of ``state`` and those ``module`` expects."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [str(k) for k in state if k not in expected]
    shapes = [
        f"{k} ({'x'.join(map(str, state[k].shape))} instead of "
        f"{'x'.join(map(str, expected[k].shape))})"
        for k in expected
        if k in state
        and hasattr(state[k], "shape")
        and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    parts = [
        f"{label} {_first(names)}"
        for label, names in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", shapes),
        )
        if names
    ]
    return "; ".join(parts) or "the weights cannot be loaded into it"


def model_from_bytes(
    *, framework: str, architecture: str, architecture_kwargs: dict[str, Any], data: bytes
) -> nn.Module:
    """An eval-mode module from artifact bytes; ValidationFailed naming what is wrong."""
    import torch

    from apps.registry import architectures
    from apps.registry.models import Framework

    if framework == Framework.TORCHSCRIPT:
        try:
            module: nn.Module = torch.jit.load(io.BytesIO(data), map_location="cpu")
        except Exception as exc:
            raise _refused(
                "artifact", "is not a TorchScript archive", exc, framework=framework
            ) from exc
        module.eval()
        return module
    if architecture not in architectures.ARCHITECTURES:
        raise ValidationFailed.for_field(
            "architecture",
            f"must be one of {', '.join(sorted(architectures.ARCHITECTURES))}",
        )
    try:
        module = architectures.build(architecture, architecture_kwargs)
    except TypeError as exc:
        # "LogisticRegression.__init__() got an unexpected keyword argument 'x'": keep the end.
        reason = str(exc).partition("() ")[2] or "they do not fit its parameters"
        raise _refused(
            "architecture_kwargs", f"do not fit {architecture}: {reason}", exc, framework=framework
        ) from exc
    except Exception as exc:
        raise _refused(
            "architecture_kwargs",
            f"cannot build {architecture} with these arguments",
            exc,
            framework=framework,
        ) from exc
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"the file holds a {type(state).__name__}, not a dict")
    except Exception as exc:
        raise _refused(
            "artifact",
            "is not a torch state_dict (torch.save of model.state_dict())",
            exc,
            framework=framework,
        ) from exc
    try:
        module.load_state_dict(state)
    except Exception as exc:
        raise _refused(
            "artifact",
            f"does not match architecture {architecture} with these kwargs: "
            f"{_mismatch(module, state)}",
            exc,
            framework=framework,
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
            family=version.family.slug,
        )
        raise
    return model_from_bytes(
        framework=version.framework,
        architecture=version.architecture,
        architecture_kwargs=version.architecture_kwargs,
        data=data,
    )
