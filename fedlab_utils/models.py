"""The course's small reference models, sized so a federation trains in seconds on a CPU.

Both are ``nn.Sequential`` so that later lessons can prune whole neurons, split the model
into pipeline stages, or cut it between client and server without rewriting it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .validation import check_choice

__all__ = ["MLP", "CNN", "make_model", "count_parameters", "MODELS"]

MODELS = ("mlp", "cnn")


class MLP(nn.Sequential):
    """Flatten → (Linear → ReLU) × len(hidden) → Linear."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (64,)):
        in_features = int(torch.tensor(input_shape).prod())
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        super().__init__(*layers)


class CNN(nn.Sequential):
    """(Conv3×3 → ReLU → MaxPool2) × len(channels) → Flatten → Linear.

    For 1×28×28 inputs and channels (8, 16) it has about 9k parameters.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (8, 16)):
        if len(input_shape) != 3:
            raise ValueError(f"input_shape={tuple(input_shape)} is not an image shape; the CNN needs (C, H, W), "
                             "use model='mlp' for flat inputs")
        layers: list[nn.Module] = []
        in_ch = input_shape[0]
        for out_ch in channels:
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            in_ch = out_ch
        layers.append(nn.Flatten())
        with torch.no_grad():
            flat = nn.Sequential(*layers)(torch.zeros(1, *input_shape)).shape[1]
        layers.append(nn.Linear(flat, num_classes))
        super().__init__(*layers)


def make_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Sequential:
    """Build ``'mlp'`` or ``'cnn'`` for a dataset's ``input_shape`` and ``num_classes``."""
    check_choice("model", name, MODELS)
    return (MLP if name == "mlp" else CNN)(input_shape, num_classes, **kwargs)


def count_parameters(model: nn.Module, nonzero: bool = False) -> int:
    """Number of trainable parameters (or of those that are nonzero, after pruning)."""
    params = (p for p in model.parameters() if p.requires_grad)
    return int(sum(int(torch.count_nonzero(p)) if nonzero else p.numel() for p in params))
