"""The model architectures an eager (state_dict) version may name.

Only these classes can be instantiated: a version's artifact is weights, never code. The
module depends on torch alone, so it is shipped inside TorchServe archives as is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Standardize(nn.Module):
    """(x - mean) / scale with the training statistics kept as buffers."""

    def __init__(self, n_inputs: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_inputs))
        self.register_buffer("scale", torch.ones(n_inputs))

    mean: torch.Tensor
    scale: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class LogisticRegression(nn.Module):
    """Multinomial logistic regression on standardised inputs; returns logits."""

    def __init__(self, n_inputs: int, n_classes: int = 2) -> None:
        super().__init__()
        self.norm = Standardize(n_inputs)
        self.linear = nn.Linear(n_inputs, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


class MLP(nn.Module):
    """A multilayer perceptron on standardised inputs; returns logits."""

    def __init__(
        self, n_inputs: int, hidden: list[int], n_classes: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.norm = Standardize(n_inputs)
        layers: list[nn.Module] = []
        width = n_inputs
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 digit images given as 64 pixel intensities in [0, 16]."""

    def __init__(self, n_classes: int = 10, side: int = 8) -> None:
        super().__init__()
        self.side = side
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * (side // 2) ** 2, 64), nn.ReLU(), nn.Linear(64, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.view(-1, 1, self.side, self.side) / 16.0
        return self.head(self.features(images))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "logistic_regression": LogisticRegression,
    "mlp": MLP,
    "digits_cnn": DigitsCNN,
}


def build(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """An untrained instance of architecture ``name``; KeyError/TypeError on a bad spec."""
    return ARCHITECTURES[name](**kwargs)
