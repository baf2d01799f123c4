"""FLOPs of training and inference, as the ledger counts them.

* :func:`training_flops_per_sample`, :func:`forward_flops` and :func:`training_flops_per_layer`
  measure a real step with ``torch.utils.flop_counter.FlopCounterMode`` (forward + backward,
  2 FLOPs per multiply-add, dense work only) on a deep copy of the model.
* ``FlopCounterMode`` sees no FLOPs inside PyTorch's fused ``nn.LSTM`` kernels, so an LSTM's
  gate matmuls are added in closed form (:func:`lstm_forward_flops_per_step`) for the shapes it
  really ran on.
* The course's MLP is counted by the closed form :func:`mlp_training_flops_per_sample`
  (:func:`mlp_layers` recognises it), equal to ``FlopCounterMode``'s count (tested), because a
  process's first ``FlopCounterMode`` imports ``torch._dynamo``, which is slow.

:mod:`fedlab_utils.ledger.energy` turns these FLOPs (with bytes) into joules.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fedlab_utils.models import CharLSTM

__all__ = ["training_flops_per_sample", "training_flops_per_layer", "forward_flops", "mlp_layers",
           "mlp_training_flops_per_sample", "lstm_forward_flops_per_step", "lstm_training_flops_per_sample"]

def lstm_forward_flops_per_step(lstm: nn.LSTM) -> int:
    """Forward matmul FLOPs of one time step of one sample through every layer and direction of ``lstm``.

    Per layer and direction the four gates cost ``2·4h·(in + r)`` (input and recurrent matmuls, ``r``
    the recurrent width: ``proj_size`` or ``h``), plus ``2·h·proj_size`` for a projection.  The gates'
    element-wise arithmetic is not counted, as ``FlopCounterMode`` counts none either."""
    h, proj = lstm.hidden_size, lstm.proj_size
    directions = 2 if lstm.bidirectional else 1
    recurrent = proj or h
    total = 0
    for layer in range(lstm.num_layers):
        width_in = lstm.input_size if layer == 0 else recurrent * directions
        total += directions * (2 * 4 * h * (width_in + recurrent) + 2 * h * proj)
    return total


class _LstmProbe:
    """Forward hooks on every ``nn.LSTM`` of a probe, recording the forward FLOPs of what each really ran
    (``FlopCounterMode`` counts nothing inside the fused LSTM kernels): samples × time steps, from the
    input it was called with (batch-first or not, unbatched, or packed), times
    :func:`lstm_forward_flops_per_step`.  Use as a context manager; the hooks are removed on exit."""

    def __init__(self, probe: nn.Module):
        self.forward: dict[str, int] = {}
        self.modules = {name: m for name, m in probe.named_modules() if isinstance(m, nn.LSTM)}
        self._handles: list = []

    def __enter__(self) -> "_LstmProbe":
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def _hook(self, name: str):
        def record(module: nn.LSTM, args: tuple, output: object) -> None:
            x = args[0]
            if isinstance(x, nn.utils.rnn.PackedSequence):
                tokens = x.data.shape[0]
            elif x.dim() == 2:  # unbatched: (sequence, features)
                tokens = x.shape[0]
            else:
                tokens = x.shape[0] * x.shape[1]
            self.forward[name] = self.forward.get(name, 0) + tokens * lstm_forward_flops_per_step(module)
        return record

    def missed(self, counts: dict, root: str, factor: int) -> dict[str, int]:
        """``factor`` × the recorded forward FLOPs of every LSTM for which ``FlopCounterMode`` (``counts``,
        by module name ``<root>.<name>``) counted nothing, by module name; 3 for a training step
        (backward: a gradient for the inputs and one for the weights), 1 for a forward pass."""
        out = {}
        for name, flops in self.forward.items():
            key = f"{root}.{name}" if name else root
            if not sum(counts.get(key, {}).values()):
                out[name] = factor * flops
        return out


def _count(probe: nn.Module, fn: Callable[[], object], factor: int) -> int:
    """``FlopCounterMode``'s total for ``fn()`` plus the LSTM FLOPs it cannot see (:class:`_LstmProbe`)."""
    with _LstmProbe(probe) as lstms, FlopCounterMode(display=False) as counter:
        fn()
    missed = lstms.missed(counter.get_flop_counts(), type(probe).__name__, factor)
    return int(counter.get_total_flops()) + sum(missed.values())


def training_flops_per_sample(model: nn.Module, input_shape: tuple[int, ...], batch: int = 4,
                              loss_fn: Callable = nn.functional.cross_entropy, num_classes: int | None = None) -> int:
    """FLOPs of one training step (forward + backward) per sample, measured by ``FlopCounterMode``.

    The model is deep-copied, so its weights and gradients are untouched.  Dense FLOPs: a
    zero weight still costs a multiply in a dense kernel (pruning lessons count nonzeros).
    ``nn.LSTM`` layers, which ``FlopCounterMode`` does not see into, are counted in closed form
    (3 × their forward gate matmuls, :func:`lstm_forward_flops_per_step`).
    """
    probe = copy.deepcopy(model).train()
    device = next(probe.parameters()).device
    x = torch.zeros(batch, *input_shape, device=device)
    out = probe(x)
    target = torch.zeros(batch, dtype=torch.long, device=device)

    def step() -> None:
        loss_fn(probe(x), target).backward()

    del out
    return _count(probe, step, 3) // batch


def forward_flops(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1) -> int:
    """FLOPs of one inference forward pass per sample (``nn.LSTM`` layers in closed form)."""
    probe = copy.deepcopy(model).eval()
    device = next(probe.parameters()).device
    x = torch.zeros(batch, *input_shape, device=device)
    with torch.no_grad():
        return _count(probe, lambda: probe(x), 1) // batch


def training_flops_per_layer(model: nn.Module, input_shape: tuple[int, ...], batch: int = 4,
                             loss_fn: Callable = nn.functional.cross_entropy,
                             layer_types: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d, nn.LSTM)
                             ) -> dict[str, int]:
    """Training FLOPs per sample (forward + backward) of each layer of ``layer_types``, by module name.

    Measured with ``FlopCounterMode``, which attributes each backward matmul to its module, so
    the values add up to :func:`training_flops_per_sample` when every FLOP is in such a layer
    (an ``nn.LSTM``'s in closed form, as there).
    The model is deep-copied.  Raises ``ValueError`` for a layer that records no FLOPs (unused).
    """
    probe = copy.deepcopy(model).train()
    device = next(probe.parameters()).device
    x = torch.zeros(batch, *input_shape, device=device)
    target = torch.zeros(batch, dtype=torch.long, device=device)
    with _LstmProbe(probe) as lstms, FlopCounterMode(display=False) as counter:
        loss_fn(probe(x), target).backward()
    root = type(probe).__name__  # FlopCounterMode names modules "<RootClass>.<name>"
    counts = dict(counter.get_flop_counts())
    for name, flops in lstms.missed(counts, root, 3).items():
        counts[f"{root}.{name}" if name else root] = {"lstm (closed form)": flops}
    out = {}
    for name, module in probe.named_modules():
        if isinstance(module, layer_types):
            key = f"{root}.{name}" if name else root
            if key not in counts:
                raise ValueError(f"FlopCounterMode recorded no FLOPs for {key!r} (is the layer used in forward?); "
                                 f"recorded: {sorted(counts)}")
            out[name] = int(sum(counts[key].values())) // batch
    return out


def mlp_layers(model: nn.Module) -> list[tuple[str, nn.Linear, bool]] | None:
    """``[(name, linear, relu_after)]`` when ``model`` is an ``nn.Sequential`` of an optional leading
    ``Flatten``, then ``Linear`` layers with ``ReLU`` between them (the course's MLP); else ``None``."""
    if not isinstance(model, nn.Sequential):
        return None
    modules = list(model.named_children())
    if modules and isinstance(modules[0][1], nn.Flatten) and (modules[0][1].start_dim, modules[0][1].end_dim) == (1, -1):
        modules = modules[1:]
    layers: list[tuple[str, nn.Linear, bool]] = []
    for name, module in modules:
        if isinstance(module, nn.Linear):
            layers.append((name, module, False))
        elif isinstance(module, nn.ReLU) and layers and not layers[-1][2]:
            layers[-1] = (layers[-1][0], layers[-1][1], True)
        else:
            return None
    return layers if layers and not layers[-1][2] else None


def mlp_training_flops_per_sample(layers: list[tuple[str, nn.Linear, bool]]) -> int:
    """Training FLOPs per sample of an MLP (:func:`mlp_layers`) exactly as :func:`training_flops_per_sample`
    counts them: per ``Linear(i, o)`` 2·i·o forward, 2·i·o for the weight gradient and 2·i·o for the
    input gradient, except the first layer's (its input needs none).  A closed form, because entering
    ``FlopCounterMode`` imports ``torch._dynamo``, which is slow in a fresh process."""
    return sum((4 + 2 * (j > 0)) * m.in_features * m.out_features for j, (_, m, _) in enumerate(layers))


def lstm_training_flops_per_sample(model: CharLSTM, sequence: int) -> int:
    """Training FLOPs per sample of a :class:`CharLSTM` (forward + backward), in closed form.

    Per time step and layer, the four gates cost two matmuls, 2·4h·(in + h) FLOPs forward;
    the output layer costs 2·h·V once per sample.  Backward costs twice the forward (a
    gradient for the inputs and one for the weights), so training is 3× the forward matmuls.
    Element-wise gate arithmetic is not counted, as ``FlopCounterMode`` counts none either.
    The per-step cost is :func:`lstm_forward_flops_per_step`, which
    :func:`training_flops_per_sample` adds for the LSTM kernels it cannot see.
    """
    head_layer, lstm = model[3], model[2].lstm
    assert isinstance(head_layer, nn.Linear) and isinstance(lstm, nn.LSTM)
    head = 2 * head_layer.in_features * head_layer.out_features
    return 3 * (sequence * lstm_forward_flops_per_step(lstm) + head)
