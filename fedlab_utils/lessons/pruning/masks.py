"""Pruning for federated learning: masks, the renaming pitfall, scans, a sparse uplink, and honest FLOP counts.

Vocabulary.  A **mask** is a bool tensor shaped like a weight (``True`` = kept).  ``Masks`` is a
plain ``dict`` keyed by the *plain* state-dict names of the model (``"1.weight"``), never by
``torch.nn.utils.prune``'s ``weight_orig``/``weight_mask``: the model itself is never
re-parametrized, so FedAvg, codecs and ``load_state_dict`` see the same keys as without pruning.
``torch.nn.utils.prune`` still does the ranking: masks are computed on throw-away holder
modules and read back (see :func:`magnitude_masks`).

What is here:

* unstructured magnitude pruning, layer-wise or global (:func:`magnitude_masks`), applying and
  measuring masks (:func:`apply_masks`, :func:`mask_state`, :func:`sparsity_of`);
* the fix for the renaming pitfall (:func:`plain_state`, :func:`make_permanent`);
* per-layer sensitivity and accuracy-vs-sparsity scans;
* :func:`nonzero_training_flops`: what sparse hardware could skip, next to
  ``FlopCounterMode``'s dense count (per-layer counts come from ``ledger.training_flops_per_layer``);
* :class:`~fedlab_utils.compression.SparseCodec` (every codec lives in
  :mod:`fedlab_utils.compression`): the uplink payload of a masked update is the smallest of
  dense fp32, bitmask + values, or bit-packed indices + values, and ``len()`` of it is what the
  ledger counts;
* :func:`article_prune_model`: the original article's code, kept to show why it is not pruning.

Structured pruning (whole neurons/channels removed, and :func:`~fedlab_utils.lessons.pruning.structured.shrink`
to a genuinely smaller dense model) is :mod:`fedlab_utils.lessons.pruning.structured`; pruning *during*
federated training (a server schedule and masked clients, plugged into the loop through its
hooks) is :mod:`fedlab_utils.lessons.pruning.federated`.

Generic pieces live elsewhere: the sensitivity plot is ``plotting.plot_sensitivity``, timing is
``fedlab_utils.ledger.timing`` and ``MeasuredCodec`` (send one codec, measure another) is in ``wire``.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.utils.prune as prune
from torch import nn

from fedlab_utils.compression.wire import Update
from fedlab_utils.core.training import evaluate
from fedlab_utils.ledger.flops import training_flops_per_layer, training_flops_per_sample
from fedlab_utils.validation import check_choice, check_real

__all__ = ["Masks", "PRUNABLE", "SCOPES", "check_sparsity", "prunable_names", "magnitude_masks",
           "apply_masks", "mask_state", "sparsity_of", "layer_report", "plain_state",
           "make_permanent", "is_reparametrized", "sensitivity_scan", "accuracy_vs_sparsity",
           "weight_flops", "nonzero_training_flops", "prunable_weights", "prunable_holder",
           "article_prune_model"]

Masks = dict[str, torch.Tensor]

#: Layers whose ``weight`` is pruned.
PRUNABLE = (nn.Linear, nn.Conv2d)
SCOPES = ("global", "layer")


# ----------------------------------------------------------------------------- masks
def check_sparsity(name: str, value: object) -> float:
    """A sparsity (fraction of weights removed) must lie in ``[0, 1)``: 1 would delete everything."""
    return check_real(name, value, 0.0, 1.0, high_inclusive=False)


def prunable_names(model: nn.Module) -> list[str]:
    """Plain state-dict names of the weights of every ``Linear``/``Conv2d`` layer, in model order."""
    return [f"{name}.weight" for name, module in model.named_modules() if isinstance(module, PRUNABLE)]


def prunable_weights(source: nn.Module | Mapping[str, torch.Tensor],
                     names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The weights to prune, detached, by plain name: a model's ``Linear``/``Conv2d`` weights (or
    ``names``), or the entries ``names`` of a dict.  Refuses a re-parametrized model and unknown names."""
    if isinstance(source, nn.Module):
        if is_reparametrized(source):
            raise ValueError("this model carries torch.nn.utils.prune re-parametrizations (weight_orig/weight_mask); "
                             "call fedlab_utils.lessons.pruning.masks.make_permanent(model) first")
        state = source.state_dict()
        names = prunable_names(source) if names is None else list(names)
    else:
        state = source
        names = list(source) if names is None else list(names)
    missing = [n for n in names if n not in state]
    if missing:
        raise ValueError(f"names {missing} are not in the model's state dict; valid: {sorted(state)}")
    if not names:
        raise ValueError("nothing to prune: no Linear/Conv2d weights were found (pass names=...)")
    return {n: state[n].detach() for n in names}


def prunable_holder(weight: torch.Tensor) -> nn.Module:
    """A throw-away module whose only parameter is a copy of ``weight``: ``torch.nn.utils.prune`` ranks
    on a module, and ranking on this copy leaves the real model un-reparametrized."""
    holder = nn.Module()
    holder.register_parameter("weight", nn.Parameter(weight.detach().clone(), requires_grad=False))
    return holder


def magnitude_masks(source: nn.Module | Mapping[str, torch.Tensor], sparsity: float, scope: str = "global",
                    names: Sequence[str] | None = None, previous: Masks | None = None) -> Masks:
    """Magnitude (L1) masks that remove exactly ``round(sparsity · n)`` weights.

    ``scope='layer'`` removes that fraction from every layer (n = the layer's size);
    ``scope='global'`` ranks all the layers' weights together (n = their total), so layers
    with many small weights lose more.  ``source`` is a model (its ``Linear``/``Conv2d``
    weights are used) or a dict of weights.  With ``previous`` masks, weights already
    pruned rank first, so masks only grow sparser (a schedule never revives a weight).

    Built on ``torch.nn.utils.prune.l1_unstructured`` / ``global_unstructured``, run on
    copies: the model is never re-parametrized and keeps its plain state-dict keys.
    """
    check_sparsity("sparsity", sparsity)
    check_choice("scope", scope, SCOPES)
    weights = prunable_weights(source, names)
    holders = {n: prunable_holder(w) for n, w in weights.items()}
    scores = {n: w.abs() * previous[n].to(w.device, w.dtype) if previous and n in previous else w.abs()
              for n, w in weights.items()}
    if scope == "layer":
        for n, h in holders.items():
            prune.l1_unstructured(h, "weight", amount=int(round(sparsity * h.weight.numel())),
                                  importance_scores=scores[n])
    else:
        total = sum(w.numel() for w in weights.values())
        prune.global_unstructured([(h, "weight") for h in holders.values()], pruning_method=prune.L1Unstructured,
                                  importance_scores={(holders[n], "weight"): scores[n] for n in holders},
                                  amount=int(round(sparsity * total)))
    return {n: h.weight_mask.bool() for n, h in holders.items()}


def apply_masks(model: nn.Module, masks: Masks) -> nn.Module:
    """Zero, in place, the weights of ``model`` where ``masks`` is False; returns the model."""
    with torch.no_grad():
        for name, mask in masks.items():
            param = model.get_parameter(name)
            param.mul_(mask.to(param.device, param.dtype))
    return model


def mask_state(state: Mapping[str, torch.Tensor], masks: Masks) -> Update:
    """A copy of a state dict or an update with masked entries zeroed (other keys as they are)."""
    return {k: v * masks[k].to(v.device, v.dtype) if k in masks else v for k, v in state.items()}


def sparsity_of(source: nn.Module | Masks | Mapping[str, torch.Tensor], names: Sequence[str] | None = None) -> float:
    """Fraction of zeros among the prunable weights of a model (or among the True entries of masks).

    For a dict of bool masks it is the fraction of False entries; for a dict of weights, of zeros.
    """
    tensors = prunable_weights(source, names) if isinstance(source, nn.Module) else \
        {n: source[n] for n in (names or source)}
    total = sum(t.numel() for t in tensors.values())
    kept = sum(int(t.count_nonzero()) for t in tensors.values())
    return 1.0 - kept / total


def layer_report(model: nn.Module, masks: Masks | None = None):
    """A DataFrame with one row per prunable layer: parameters, nonzero, sparsity (%)."""
    import pandas as pd

    rows = []
    for name, w in prunable_weights(model, None).items():
        kept = int(masks[name].sum()) if masks is not None and name in masks else int(w.count_nonzero())
        rows.append({"layer": name, "shape": tuple(w.shape), "params": w.numel(), "nonzero": kept,
                     "sparsity %": 100 * (1 - kept / w.numel())})
    from fedlab_utils.i18n import gettext
    from fedlab_utils.viz.tables import labelled

    # keyed in English (notebooks index the columns by name), shown in the reader's language
    return labelled(pd.DataFrame(rows).set_index("layer"), {
        "layer": gettext("layer"), "shape": gettext("shape"), "params": gettext("params"),
        "nonzero": gettext("nonzero"), "sparsity %": gettext("sparsity %")})


# ----------------------------------------------------------------------------- the renaming pitfall
def is_reparametrized(model: nn.Module) -> bool:
    """True if ``torch.nn.utils.prune`` left ``*_orig``/``*_mask`` re-parametrizations on the model."""
    return any(isinstance(hook, prune.BasePruningMethod)
               for m in model.modules() for hook in m._forward_pre_hooks.values())


def make_permanent(model: nn.Module) -> nn.Module:
    """``prune.remove`` every re-parametrization in place: ``weight_orig·weight_mask`` becomes ``weight``.

    Keys are plain again (but note the parameter *order* inside a module changes: ``weight``
    is registered again after ``bias``).  Returns the model.
    """
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):  # also a PruningContainer (pruned twice)
                prune.remove(module, hook._tensor_name)
    return model


def plain_state(model: nn.Module, template: Mapping[str, torch.Tensor] | None = None) -> Update:
    """The model's floating-point state under *plain* keys, whether or not it is re-parametrized.

    ``X_orig · X_mask`` is folded into ``X`` and masks are dropped.  With ``template`` (e.g. the
    global state) the keys come back in the template's order and must match it exactly.
    """
    raw = {k: v.detach() for k, v in model.state_dict().items()}
    state = {}
    for key, value in raw.items():
        if key.endswith("_mask") and key[:-5] + "_orig" in raw:
            continue
        if key.endswith("_orig") and key[:-5] + "_mask" in raw:
            state[key[:-5]] = (value * raw[key[:-5] + "_mask"]).clone()
        elif value.is_floating_point():
            state[key] = value.clone()
    if template is not None:
        if set(state) != set(template):
            raise ValueError(f"keys differ from the template: extra {sorted(set(state) - set(template))}, "
                             f"missing {sorted(set(template) - set(state))}")
        state = {k: state[k] for k in template}
    return state


# ----------------------------------------------------------------------------- scans
def sensitivity_scan(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     sparsities: Sequence[float] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98),
                     names: Sequence[str] | None = None) -> dict[str, list[float]]:
    """Test accuracy when **one** layer at a time is magnitude-pruned (no fine-tuning).

    Returns ``{layer name: [accuracy at each sparsity]}``; the model is not changed.  Layers
    whose curve stays flat can take more sparsity (MIT EfficientML's sensitivity scan).
    """
    for s in sparsities:
        check_sparsity("sparsities", s)
    names = prunable_names(model) if names is None else list(names)
    probe = copy.deepcopy(model)
    original = {n: probe.get_parameter(n).detach().clone() for n in names}
    out = {}
    for name in names:
        curve = []
        for s in sparsities:
            masks = magnitude_masks({name: original[name]}, s, scope="layer")
            apply_masks(probe, masks)
            curve.append(evaluate(probe, x, y)[0])
            with torch.no_grad():
                probe.get_parameter(name).copy_(original[name])
        out[name] = curve
    return out


def accuracy_vs_sparsity(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sparsities: Sequence[float],
                         scope: str = "global", names: Sequence[str] | None = None) -> list[float]:
    """One-shot pruning (no fine-tuning) of all prunable layers at each sparsity: test accuracy."""
    out = []
    for s in sparsities:
        probe = copy.deepcopy(model)
        apply_masks(probe, magnitude_masks(probe, s, scope, names))
        out.append(evaluate(probe, x, y)[0])
    return out


# ----------------------------------------------------------------------------- nonzero FLOPs
def weight_flops(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Dense training FLOPs per sample of each prunable layer, keyed by its weight's name (``"1.weight"``)."""
    per_layer = training_flops_per_layer(model, input_shape, layer_types=PRUNABLE)
    return {f"{name}.weight": flops for name, flops in per_layer.items()}


def nonzero_training_flops(model: nn.Module, input_shape: tuple[int, ...], masks: Masks | None = None) -> dict:
    """Dense vs nonzero training FLOPs per sample.

    ``dense`` is ``FlopCounterMode``'s total (what a dense kernel executes).  ``nonzero``
    scales each layer's FLOPs by its weight density (from ``masks`` or the actual nonzeros):
    the forward matmul, the input gradient and the weight gradient all shrink in proportion
    when zero weights are skipped -- what sparse hardware *could* skip.  Zero activations
    (after ReLU) are not counted as skippable here.
    """
    total = training_flops_per_sample(model, input_shape)
    per_layer = weight_flops(model, input_shape)
    skipped = 0.0
    for name, flops in per_layer.items():
        kept = masks[name] if masks is not None and name in masks else model.get_parameter(name).detach() != 0
        skipped += flops * (1.0 - float(kept.float().mean()))
    return {"dense": total, "nonzero": int(round(total - skipped)), "per_layer_dense": per_layer}


# ----------------------------------------------------------------------------- the original article
def article_prune_model(model: nn.Module, threshold: float = 0.1) -> list[str]:
    """The original article's ``prune_model``, verbatim in behaviour: zero a whole tensor if its
    mean |w| is below ``threshold``.  Returns the names it zeroed (the article returned nothing).

    This is not magnitude pruning: it compares a tensor's *average* to a fixed number, so it
    deletes entire layers and biases (and never removes a single small weight from a layer
    whose average is large).
    """
    zeroed = []
    for name, param in model.named_parameters():
        if param.data.abs().mean() < threshold:
            param.data.zero_()
            zeroed.append(name)
    return zeroed
