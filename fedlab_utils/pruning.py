"""Pruning for federated learning: masks, schedules, a sparse uplink, and honest FLOP counts.

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
* structured pruning of whole neurons/channels (:func:`structured_masks`) and :func:`shrink`,
  which builds a genuinely smaller dense ``nn.Sequential`` with the same outputs;
* :func:`nonzero_training_flops`: what sparse hardware could skip, next to
  ``FlopCounterMode``'s dense count;
* :class:`SparseCodec`: the uplink payload is the smallest of dense fp32, bitmask + values, or
  bit-packed indices + values, and ``len()`` of it is what the ledger counts;
* federated pruning through the loop's hooks: :class:`MaskedTraining` (a ``ClientTransform``),
  :class:`PruningServer` (a ``ServerOptimizer`` wrapper that raises sparsity on a
  :class:`PruningSchedule`), both sharing one :class:`MaskState`; :class:`FederatedPruning`
  bundles them;
* :func:`article_prune_model`: the original article's code, kept to show why it is not pruning.
"""
from __future__ import annotations

import copy
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.utils.prune as prune
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .federated import ClientTransform, FedAvgServer, History, evaluate
from .ledger import Energy, get_profile, training_flops_per_sample
from .validation import check_choice, check_int, check_real
from .wire import Update, flatten, unflatten

__all__ = ["Masks", "PRUNABLE", "ZERO_PRESERVING", "SCOPES", "SCHEDULES", "check_sparsity", "prunable_names",
           "magnitude_masks", "apply_masks", "mask_state", "sparsity_of", "layer_report", "plain_state",
           "make_permanent", "is_reparametrized", "sensitivity_scan", "accuracy_vs_sparsity", "structured_masks",
           "shrink", "module_flops", "nonzero_training_flops", "SparseCodec", "MeasuredCodec", "sparse_payload_size",
           "PruningSchedule", "MaskState", "MaskedTraining", "PruningServer", "FederatedPruning",
           "article_prune_model", "plot_sensitivity", "cpu_latency"]

Masks = dict[str, torch.Tensor]

#: Layers whose ``weight`` is pruned.
PRUNABLE = (nn.Linear, nn.Conv2d)
#: Layers :func:`shrink` can pass through: they map a zero channel to a zero channel (f(0) = 0).
ZERO_PRESERVING = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Tanh, nn.GELU, nn.SiLU, nn.Hardswish, nn.MaxPool2d,
                   nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity)
SCOPES = ("global", "layer")
SCHEDULES = ("oneshot", "linear", "cubic")


# ----------------------------------------------------------------------------- masks
def check_sparsity(name: str, value: object) -> float:
    """A sparsity (fraction of weights removed) must lie in ``[0, 1)``: 1 would delete everything."""
    return check_real(name, value, 0.0, 1.0, high_inclusive=False)


def prunable_names(model: nn.Module) -> list[str]:
    """Plain state-dict names of the weights of every ``Linear``/``Conv2d`` layer, in model order."""
    return [f"{name}.weight" for name, module in model.named_modules() if isinstance(module, PRUNABLE)]


def _weights(source: nn.Module | Mapping[str, torch.Tensor], names: Sequence[str] | None) -> dict[str, torch.Tensor]:
    if isinstance(source, nn.Module):
        if is_reparametrized(source):
            raise ValueError("this model carries torch.nn.utils.prune re-parametrizations (weight_orig/weight_mask); "
                             "call fedlab_utils.pruning.make_permanent(model) first")
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


def _holder(weight: torch.Tensor) -> nn.Module:
    """A throw-away module whose only parameter is a copy of ``weight`` (torch.nn.utils.prune needs a module)."""
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
    weights = _weights(source, names)
    holders = {n: _holder(w) for n, w in weights.items()}
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
    tensors = _weights(source, names) if isinstance(source, nn.Module) else \
        {n: source[n] for n in (names or source)}
    total = sum(t.numel() for t in tensors.values())
    kept = sum(int(t.count_nonzero()) for t in tensors.values())
    return 1.0 - kept / total


def layer_report(model: nn.Module, masks: Masks | None = None):
    """A DataFrame with one row per prunable layer: parameters, nonzero, sparsity (%)."""
    import pandas as pd

    rows = []
    for name, w in _weights(model, None).items():
        kept = int(masks[name].sum()) if masks is not None and name in masks else int(w.count_nonzero())
        rows.append({"layer": name, "shape": tuple(w.shape), "params": w.numel(), "nonzero": kept,
                     "sparsity %": 100 * (1 - kept / w.numel())})
    return pd.DataFrame(rows).set_index("layer")


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


def plot_sensitivity(scan: Mapping[str, Sequence[float]], sparsities: Sequence[float], ax=None,
                     title: str = "Sensitivity: one layer pruned at a time"):
    """Accuracy (%) against sparsity (%), one line per layer."""
    from .plotting import axes_or_new

    fig, ax = axes_or_new(ax)
    for name, curve in scan.items():
        ax.plot(100 * np.asarray(sparsities), 100 * np.asarray(curve), marker="o", label=name)
    ax.set(xlabel="sparsity of that layer (%)", ylabel="test accuracy (%)", title=title)
    ax.legend()
    return fig, ax


# ----------------------------------------------------------------------------- structured pruning
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
        h = _holder(module.weight)
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


# ----------------------------------------------------------------------------- FLOPs
def module_flops(model: nn.Module, input_shape: tuple[int, ...], batch: int = 4,
                 loss_fn: Callable = nn.functional.cross_entropy) -> dict[str, int]:
    """Dense training FLOPs per sample (forward + backward) of each ``Linear``/``Conv2d``, by name.

    Measured with ``FlopCounterMode``, which attributes backward matmuls to their module.
    """
    probe = copy.deepcopy(model).train()
    device = next(probe.parameters()).device
    x = torch.zeros(batch, *input_shape, device=device)
    target = torch.zeros(batch, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter:
        loss_fn(probe(x), target).backward()
    counts = counter.get_flop_counts()
    root = type(probe).__name__  # FlopCounterMode names modules "<RootClass>.<name>"
    out = {}
    for name, module in probe.named_modules():
        if isinstance(module, PRUNABLE):
            key = f"{root}.{name}"
            if key not in counts:
                raise ValueError(f"FlopCounterMode recorded no FLOPs for {key!r} (is the layer used in forward?); "
                                 f"recorded: {sorted(counts)}")
            out[f"{name}.weight"] = int(sum(counts[key].values())) // batch
    return out


def nonzero_training_flops(model: nn.Module, input_shape: tuple[int, ...], masks: Masks | None = None) -> dict:
    """Dense vs nonzero training FLOPs per sample.

    ``dense`` is ``FlopCounterMode``'s total (what a dense kernel executes).  ``nonzero``
    scales each layer's FLOPs by its weight density (from ``masks`` or the actual nonzeros):
    the forward matmul, the input gradient and the weight gradient all shrink in proportion
    when zero weights are skipped -- what sparse hardware *could* skip.  Zero activations
    (after ReLU) are not counted as skippable here.
    """
    probe = copy.deepcopy(model)
    total = training_flops_per_sample(probe, input_shape)
    per_layer = module_flops(probe, input_shape)
    skipped = 0.0
    for name, flops in per_layer.items():
        weight = probe.get_parameter(name)
        kept = masks[name] if masks is not None and name in masks else weight.detach() != 0
        skipped += flops * (1.0 - float(kept.float().mean()))
    return {"dense": total, "nonzero": int(round(total - skipped)), "per_layer_dense": per_layer}


def cpu_latency(fns: Mapping[str, Callable[[], object]], repeats: int = 20, blocks: int = 5,
                warmup: int = 3) -> dict[str, dict[str, float]]:
    """Wall time per call of several functions, measured **interleaved** so that background load
    hits them alike: ``blocks`` rounds, each running every function ``repeats`` times (the order
    rotates).  Returns ``{name: {"min_s", "median_s"}}``; on a shared machine compare the mins.
    """
    import time

    check_int("repeats", repeats, 1)
    check_int("blocks", blocks, 1)
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for name in names:
        for _ in range(warmup):
            fns[name]()
    for block in range(blocks):
        for name in names[block % len(names):] + names[:block % len(names)]:
            for _ in range(repeats):
                start = time.perf_counter()
                fns[name]()
                times[name].append(time.perf_counter() - start)
    return {n: {"min_s": float(np.min(t)), "median_s": float(np.median(t))} for n, t in times.items()}


# ----------------------------------------------------------------------------- sparse codec
_DENSE, _BITMASK, _INDICES = 0, 1, 2
_FORMATS = {_DENSE: "dense", _BITMASK: "bitmask", _INDICES: "indices"}


def _index_width(numel: int) -> int:
    """Bits per index: the fewest that can address ``numel`` positions."""
    return max(1, (numel - 1).bit_length())


def sparse_payload_size(numel: int, nnz: int) -> dict[str, int]:
    """Bytes of each :class:`SparseCodec` format for ``nnz`` nonzeros among ``numel`` values.

    * ``dense``:   1-byte tag + 4·numel
    * ``bitmask``: 1-byte tag + 4-byte count + ⌈numel/8⌉ + 4·nnz
    * ``indices``: 1-byte tag + 4-byte count + ⌈nnz·w/8⌉ + 4·nnz, with w = ⌈log₂ numel⌉ bits

    ``'best'`` is the smallest: what the codec sends.
    """
    check_int("numel", numel, 1)
    check_int("nnz", nnz, 0, numel)
    sizes = {"dense": 1 + 4 * numel, "bitmask": 5 + math.ceil(numel / 8) + 4 * nnz,
             "indices": 5 + math.ceil(nnz * _index_width(numel) / 8) + 4 * nnz}
    sizes["best"] = min(sizes.values())
    return sizes


class SparseCodec:
    """Lossless sparse payload for masked updates: only nonzero values travel, plus their positions.

    Both ends know the architecture (the template), so no names or shapes are sent.  The
    update is flattened in key order; with N values of which k are nonzero, the payload is
    the smallest of three formats (see :func:`sparse_payload_size`):

    ========  ====================================================================
    tag 0     dense: N little-endian float32 (never worse than fp32 + 1 byte)
    tag 1     k (uint32) · a bitmask of N bits · the k float32 values
    tag 2     k (uint32) · k indices bit-packed at ⌈log₂ N⌉ bits each · the k values
    ========  ====================================================================

    Decoding gives back the exact values (``-0.0`` comes back as ``0.0``).  ``last_format``
    says which format the last ``encode`` chose.
    """

    name = "sparse"

    def __init__(self) -> None:
        self.last_format: str | None = None

    def encode(self, update: Update, client_id: int = 0) -> bytes:
        values = flatten(update).numpy()
        nonzero = np.flatnonzero(values != 0)
        sizes = sparse_payload_size(values.size, int(nonzero.size))
        if sizes["best"] == sizes["dense"]:
            self.last_format = "dense"
            return bytes([_DENSE]) + values.astype("<f4").tobytes()
        kept = values[nonzero].astype("<f4").tobytes()
        if sizes["best"] == sizes["bitmask"]:
            self.last_format = "bitmask"
            positions = np.packbits(values != 0, bitorder="little").tobytes()
            return struct.pack("<BI", _BITMASK, nonzero.size) + positions + kept
        self.last_format = "indices"
        width = _index_width(values.size)
        index_bits = ((nonzero[:, None] >> np.arange(width)) & 1).astype(np.uint8)
        positions = np.packbits(index_bits.ravel(), bitorder="little").tobytes()
        return struct.pack("<BI", _INDICES, nonzero.size) + positions + kept

    def decode(self, payload: bytes, template: Update) -> Update:
        numel = sum(t.numel() for t in template.values())
        tag = payload[0]
        if tag == _DENSE:
            vector = np.frombuffer(payload, dtype="<f4", offset=1).copy()
            return unflatten(torch.from_numpy(vector), template)
        if tag not in _FORMATS:
            raise ValueError(f"not a SparseCodec payload (format tag {tag})")
        (count,) = struct.unpack_from("<I", payload, 1)
        vector = np.zeros(numel, dtype=np.float32)
        if tag == _BITMASK:
            mask_len = math.ceil(numel / 8)
            bits = np.unpackbits(np.frombuffer(payload, np.uint8, mask_len, 5), count=numel, bitorder="little")
            positions = np.flatnonzero(bits)
            start = 5 + mask_len
        else:
            width = _index_width(numel)
            index_len = math.ceil(count * width / 8)
            bits = np.unpackbits(np.frombuffer(payload, np.uint8, index_len, 5), count=count * width,
                                 bitorder="little").reshape(count, width).astype(np.int64)
            positions = bits @ (np.int64(1) << np.arange(width, dtype=np.int64))
            start = 5 + index_len
        if positions.size != count or len(payload) != start + 4 * count:
            raise ValueError(f"corrupt SparseCodec payload: header says {count} values, found {positions.size} "
                             f"positions and {len(payload) - start} value bytes")
        vector[positions] = np.frombuffer(payload, dtype="<f4", count=count, offset=start)
        return unflatten(torch.from_numpy(vector), template)

    def __repr__(self) -> str:
        return "SparseCodec()"


class MeasuredCodec:
    """Sends with ``primary`` and records what ``shadow`` *would* have sent, in ``shadow_bytes``.

    A control for experiments: run dense FedAvg once with the fp32 codec and learn, from the
    same updates, how much a sparse codec alone would have saved (no second run needed).
    """

    def __init__(self, primary, shadow):
        self.primary, self.shadow = primary, shadow
        self.name = f"{primary.name} (measuring {shadow.name})"
        self.shadow_bytes: list[int] = []

    def encode(self, update: Update, client_id: int = 0) -> bytes:
        self.shadow_bytes.append(len(self.shadow.encode(update, client_id)))
        return self.primary.encode(update, client_id)

    def decode(self, payload: bytes, template: Update) -> Update:
        return self.primary.decode(payload, template)

    def __repr__(self) -> str:
        return f"MeasuredCodec({self.primary!r}, shadow={self.shadow!r})"


# ----------------------------------------------------------------------------- federated pruning
@dataclass(frozen=True)
class PruningSchedule:
    """When the server raises sparsity, and to what (PruneFL-style: prune during training).

    After every ``every``-th round up to round ``end``, the target in force becomes

    * ``'oneshot'``: ``target`` at once (after round ``every``);
    * ``'linear'``:  ``initial + (target − initial)·t``;
    * ``'cubic'``:   ``target + (initial − target)·(1 − t)³`` (Zhu & Gupta 2017: prune fast
      early while many weights are redundant, slowly near the target);

    with ``t = min(1, round / end)``.  Rounds after ``end`` fine-tune at ``target``.
    """

    target: float
    kind: str = "cubic"
    every: int = 2
    end: int = 10
    initial: float = 0.0

    def __post_init__(self) -> None:
        check_sparsity("sparsity", self.target)
        check_choice("schedule", self.kind, SCHEDULES)
        check_int("prune_every", self.every, 1)
        check_int("prune_end", self.end, 1)
        check_real("initial", self.initial, 0.0, self.target)
        if self.every > self.end:
            raise ValueError(f"prune_every={self.every} is larger than prune_end={self.end}; "
                             f"valid: 1 <= prune_every <= prune_end")

    def sparsity_at(self, round_idx: int) -> float:
        """Sparsity in force after the server step of round ``round_idx`` (1-based)."""
        updates = [r for r in range(self.every, min(round_idx, self.end) + 1, self.every)]
        if not updates:
            return self.initial
        last = self.end if round_idx >= self.end else updates[-1]
        if self.kind == "oneshot":
            return self.target
        t = min(1.0, last / self.end)
        if self.kind == "linear":
            return self.initial + (self.target - self.initial) * t
        return self.target + (self.initial - self.target) * (1.0 - t) ** 3

    def steps(self, rounds: int) -> list[tuple[int, float]]:
        """``[(round, sparsity)]`` at each round where the sparsity changes."""
        out, current = [], self.initial
        for r in range(1, rounds + 1):
            s = self.sparsity_at(r)
            if s != current:
                out.append((r, s))
                current = s
        return out


class MaskState:
    """The one mask object the server writes and every client reads.

    ``log`` holds ``(round, sparsity)`` each time the mask changed; ``round_densities`` the
    per-layer density each round trained under (for nonzero-FLOP accounting).
    """

    def __init__(self, masks: Masks):
        self.masks = {k: v.clone() for k, v in masks.items()}
        self.log: list[tuple[int, float]] = [(0, self.sparsity)]
        self.round_densities: dict[int, dict[str, float]] = {}

    @property
    def names(self) -> list[str]:
        return list(self.masks)

    @property
    def sparsity(self) -> float:
        return sparsity_of(self.masks)

    def update(self, masks: Masks, round_idx: int) -> None:
        for name, mask in masks.items():
            if bool((mask & ~self.masks[name]).any()):
                raise ValueError(f"new mask of {name!r} revives pruned weights; masks may only grow sparser")
        self.masks = {k: v.clone() for k, v in masks.items()}
        self.log.append((round_idx, self.sparsity))

    def densities(self) -> dict[str, float]:
        return {n: float(m.float().mean()) for n, m in self.masks.items()}

    def __repr__(self) -> str:
        return f"MaskState({len(self.masks)} layers, sparsity {100 * self.sparsity:.1f}%)"


class MaskedTraining(ClientTransform):
    """Client side of federated pruning: train under the broadcast mask.

    ``on_receive`` applies the mask to the received model, ``after_step`` re-zeroes pruned
    weights after every optimizer step (so momentum or weight decay cannot revive them), and
    ``on_update`` masks the update before it is encoded, so the uplink carries zeros there.
    """

    def __init__(self, state: MaskState):
        self.state = state

    def on_receive(self, model: nn.Module, client_id: int, round_idx: int) -> None:
        apply_masks(model, self.state.masks)
        self.state.round_densities.setdefault(round_idx, self.state.densities())

    def after_step(self, model: nn.Module) -> None:
        apply_masks(model, self.state.masks)

    def on_update(self, update: Update, client_id: int) -> Update:
        return mask_state(update, self.state.masks)

    def __repr__(self) -> str:
        return f"MaskedTraining({self.state!r})"


class PruningServer:
    """Server side of federated pruning: a ``ServerOptimizer`` wrapper.

    ``step`` lets ``inner`` (plain FedAvg by default) apply the aggregated update, then, when
    the :class:`PruningSchedule` raises the target, recomputes the mask from the *new global
    model's* magnitudes (weights already pruned stay pruned), stores it in the shared
    :class:`MaskState`, and returns the masked global state -- so aggregation keeps pruned
    weights at zero.  It counts rounds itself (one ``step`` per round).
    """

    def __init__(self, state: MaskState, schedule: PruningSchedule, scope: str = "global", inner=None):
        check_choice("scope", scope, SCOPES)
        self.state, self.schedule, self.scope = state, schedule, scope
        self.inner = inner or FedAvgServer()
        self.round = 0
        self.target = schedule.initial  # the sparsity currently asked for

    def step(self, global_state: Update, update: Update) -> Update:
        new = self.inner.step(global_state, update)
        self.round += 1
        target = self.schedule.sparsity_at(self.round)
        if target > self.target:
            self.target = target
            weights = {n: new[n] for n in self.state.names}
            self.state.update(magnitude_masks(weights, target, self.scope, previous=self.state.masks), self.round)
        return mask_state(new, self.state.masks)

    def __repr__(self) -> str:
        s = self.schedule
        return (f"PruningServer({s.kind} to {100 * s.target:.0f}% every {s.every} rounds until round {s.end}, "
                f"{self.scope}, inner={self.inner!r})")


@dataclass
class FederatedPruning:
    """Server-scheduled magnitude pruning in the ordinary loop: ``run(..., **fp.hooks())``.

    ``hooks()`` starts a fresh :class:`MaskState` (dense) and returns the ``transform`` and
    ``server`` that share it; call it once per run.  Afterwards ``state`` holds the final mask
    and its log, and :meth:`nonzero_flops` turns a run's ledger into nonzero FLOPs.
    """

    model: nn.Module = field(repr=False)
    schedule: PruningSchedule
    scope: str = "global"
    names: Sequence[str] | None = None
    state: MaskState | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        check_choice("scope", self.scope, SCOPES)
        self.names = prunable_names(self.model) if self.names is None else list(self.names)
        _weights(self.model, self.names)  # validates the names

    def hooks(self, inner=None) -> dict:
        """``{'transform': MaskedTraining, 'server': PruningServer}`` around a fresh, dense mask."""
        weights = _weights(self.model, self.names)
        self.state = MaskState({n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()})
        return {"transform": MaskedTraining(self.state),
                "server": PruningServer(self.state, self.schedule, self.scope, inner)}

    def nonzero_flops(self, history: History, input_shape: tuple[int, ...]) -> list[int]:
        """Per round, the client FLOPs sparse hardware would execute (the ledger's are dense)."""
        if self.state is None:
            raise ValueError("no run yet: pass **fp.hooks() to run(...) first")
        per_layer = module_flops(self.model, input_shape)
        dense = training_flops_per_sample(self.model, input_shape)
        out = []
        for record in history.records:
            densities = self.state.round_densities.get(record.round, {})
            skipped = sum(f * (1.0 - densities.get(n, 1.0)) for n, f in per_layer.items())
            out.append(int(round(record.client_flops * (dense - skipped) / dense)))
        return out

    def sparse_energy(self, history: History, input_shape: tuple[int, ...]) -> Energy:
        """Modelled joules if the device skipped the pruned multiplies (same bytes as the run)."""
        profile = get_profile(history.profile)
        flops = self.nonzero_flops(history, input_shape)
        return sum((profile.energy(f, r.bytes_up, r.bytes_down) for f, r in zip(flops, history.records)), Energy())


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
