"""Structured pruning: remove whole neurons or channels, then build a genuinely smaller dense model.

Unstructured zeros (:mod:`fedlab_utils.lessons.pruning.masks`) leave every matrix the same shape, so a dense
kernel does the same work.  Removing a whole output row of a layer -- a neuron of a ``Linear``
or a channel of a ``Conv2d`` -- together with its bias makes that unit's output exactly zero,
so the next layer's matching inputs can go too:

* :func:`structured_masks` -- masks that remove the ``amount`` fraction of every hidden layer's
  units with the smallest Lₙ norm (``torch.nn.utils.prune.ln_structured``), on plain keys;
* :func:`shrink` -- a new, smaller ``nn.Sequential`` without those units, whose outputs equal
  the masked model's: fewer parameters, fewer FLOPs, less latency, and a smaller payload.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.utils.prune as prune
from torch import nn

from fedlab_utils.lessons.pruning.masks import PRUNABLE, Masks, check_sparsity, prunable_holder

__all__ = ["ZERO_PRESERVING", "structured_masks", "shrink"]

#: Layers :func:`shrink` can pass through: they map a zero channel to a zero channel (f(0) = 0).
ZERO_PRESERVING = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Tanh, nn.GELU, nn.SiLU, nn.Hardswish, nn.MaxPool2d,
                   nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity)


def structured_masks(model: nn.Sequential, amount: float, n: float = 2) -> Masks:
    """Masks that remove ``round(amount · width)`` whole neurons/channels of every hidden layer.

    Ranked by the Lₙ norm of each output row (``torch.nn.utils.prune.ln_structured``, dim 0).
    The output layer is left whole (its rows are the classes).  A removed unit loses its
    weight row **and its bias**, so its output is exactly zero -- what makes :func:`shrink` exact.
    """
    check_sparsity("structured", amount)
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if len(layers) < 2:
        raise ValueError("structured pruning needs at least one hidden Linear/Conv2d layer")
    masks: Masks = {}
    for name, module in layers[:-1]:
        h = prunable_holder(module.weight)
        prune.ln_structured(h, "weight", amount=int(round(amount * module.weight.shape[0])), n=n, dim=0)
        masks[f"{name}.weight"] = h.weight_mask.bool()
        if module.bias is not None:
            masks[f"{name}.bias"] = h.weight_mask.bool().flatten(1).any(1)
    return masks


def _kept_rows(mask: torch.Tensor, name: str) -> torch.Tensor:
    rows = mask.flatten(1)
    if not bool((rows.all(1) | ~rows.any(1)).all()):
        raise ValueError(f"mask of {name!r} is not structured (some rows are partly pruned); "
                         "use structured_masks(...) for shrink()")
    return torch.nonzero(rows.any(1)).flatten()


def shrink(model: nn.Sequential, masks: Masks) -> nn.Sequential:
    """A new, smaller dense ``nn.Sequential`` without the neurons/channels that ``masks`` removes.

    Rows of each pruned layer go, and the next layer loses the matching inputs (for a
    ``Linear`` after ``Flatten`` of a conv map, each channel's block of features).  Its
    outputs equal those of ``model`` with the masks applied.  Supported layers: ``Linear``,
    ``Conv2d``, ``Flatten`` and the zero-preserving layers in :data:`ZERO_PRESERVING`.
    """
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"shrink() needs an nn.Sequential, got {type(model).__name__}")
    layers: list[nn.Module] = []
    keep_in: torch.Tensor | None = None  # kept indices of the incoming channels (None = all)
    channels_in = None  # number of channels before pruning, when the input is a conv map
    flattened = False
    for index, layer in enumerate(model):
        name = str(index)
        if isinstance(layer, PRUNABLE):
            weight = layer.weight.detach()
            bias = None if layer.bias is None else layer.bias.detach()
            if keep_in is not None:
                if isinstance(layer, nn.Linear) and flattened:
                    per_channel = layer.in_features // channels_in
                    cols = (keep_in[:, None] * per_channel + torch.arange(per_channel, device=keep_in.device)).flatten()
                    weight = weight[:, cols]
                else:
                    weight = weight[:, keep_in]
            if f"{name}.weight" in masks:
                keep_out = _kept_rows(masks[f"{name}.weight"], f"{name}.weight").to(weight.device)
                weight = weight[keep_out]
                bias = None if bias is None else bias[keep_out]
            else:
                keep_out = None
            if isinstance(layer, nn.Linear):
                new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            else:
                new = nn.Conv2d(weight.shape[1], weight.shape[0], layer.kernel_size, layer.stride, layer.padding,
                                layer.dilation, layer.groups, bias is not None, layer.padding_mode)
                if layer.groups != 1:
                    raise ValueError(f"layer {name}: grouped convolutions are not supported by shrink()")
            new = new.to(weight.device, weight.dtype)
            with torch.no_grad():
                new.weight.copy_(weight)
                if bias is not None:
                    new.bias.copy_(bias)
            layers.append(new)
            channels_in = layer.weight.shape[0]  # channels the *original* next layer expects
            keep_in, flattened = keep_out, False
        elif isinstance(layer, nn.Flatten):
            layers.append(copy.deepcopy(layer))
            flattened = True
        elif isinstance(layer, ZERO_PRESERVING):
            layers.append(copy.deepcopy(layer))
        else:
            raise ValueError(f"layer {name} ({type(layer).__name__}) is not supported by shrink(); supported: "
                             f"Linear, Conv2d, Flatten, {', '.join(t.__name__ for t in ZERO_PRESERVING)}")
    return nn.Sequential(*layers)
