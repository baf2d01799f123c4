"""Split learning for FL: SplitFed (Thapa et al., AAAI 2022) and what a cut point costs.

Each client runs the layers before ``cut`` (:func:`split_at`), the server the rest;
activations go up and their gradients come down as serialized payloads whose ``len()`` the
ledger counts.  :class:`SplitFed` is a protocol of :func:`fedlab_utils.core.loop.run`, so it
has the loop's sampling, faults, energy, meter, progress bar and checkpoints;
:func:`splitfed_run` is the one-call version.  :func:`cut_profile` measures every cut (client
FLOPs, activation and weight bytes) and :func:`bytes_vs_local_size` where SplitFed's uplink
crosses FedAvg's as the local dataset grows.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fedlab_utils.compression.wire import Codec, Fp32Codec
from fedlab_utils.core.aggregators.fedavg import weighted_average
from fedlab_utils.core.checkpoint import load_object_state, object_state, reset_state
from fedlab_utils.core.history import History
from fedlab_utils.core.loop import run
from fedlab_utils.core.protocol import RoundProtocol, per_client
from fedlab_utils.core.training import (
    ClientResult,
    LocalTraining,
    client_generator,
    evaluate,
    make_optimizer,
    minibatches,
    model_state,
)
from fedlab_utils.data import ClientData
from fedlab_utils.i18n import N_
from fedlab_utils.ledger.energy import EnergyProfile
from fedlab_utils.ledger.flops import training_flops_per_sample
from fedlab_utils.validation import check_choice, check_int
from fedlab_utils.viz.diagrams import CLIENT_COLOR, PHASE_COLORS, SERVER_COLOR, arrow, blank, box, fmt_bytes, new_axes
from fedlab_utils.viz.fonts import figure_label

__all__ = ["cut_payloads", "draw_split_cut", "split_at", "split_step", "client_training_flops_per_sample", "CutInfo", "cut_profile", "SplitFed", "splitfed_run",
           "bytes_vs_local_size"]


def split_at(model: nn.Sequential, cut: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``(model[:cut], model[cut:])``: the client part and the server part (layers shared)."""
    check_int("cut_layer", cut, 1, len(model) - 1)
    layers = list(model)
    return nn.Sequential(*layers[:cut]), nn.Sequential(*layers[cut:])


def split_step(client_part: nn.Module, server_part: nn.Module, x: torch.Tensor, y: torch.Tensor,
               send_up: Callable[[torch.Tensor], torch.Tensor], send_down: Callable[[torch.Tensor], torch.Tensor],
               loss_fn: Callable = nn.functional.cross_entropy) -> torch.Tensor:
    """One mini-batch of split learning: forward and backward across the cut, gradients left in ``.grad``.

    The client runs its part; ``send_up`` carries the activation across the cut (to the server's
    device, process or machine) and returns the server's copy, which is a new leaf: no autograd
    graph crosses a network.  The server finishes the forward, the loss and its backward, which
    stops at that copy; ``send_down`` carries the copy's gradient back, and the client finishes
    the backward through its own part with it.  Returns the loss (the optimizers step outside).
    """
    activation = client_part(x)                               # client: forward to the cut
    server_in = send_up(activation).detach().requires_grad_()  # the activation crosses; the graph does not
    loss = loss_fn(server_part(server_in), y)                   # server: the rest of the forward, the loss
    loss.backward()                                             # server: backward down to the cut
    activation.backward(send_down(server_in.grad))              # the cut's gradient crosses back; client: backward
    return loss


def client_training_flops_per_sample(client_part: nn.Module, input_shape: Sequence[int], batch: int = 4) -> int:
    """FLOPs of the client's share of a training step per sample (``FlopCounterMode``): its forward
    and its backward given the gradient that comes down from the server."""
    probe = copy.deepcopy(client_part).train()
    x = torch.zeros(batch, *input_shape, device=next(probe.parameters()).device)
    with FlopCounterMode(display=False) as counter:
        out = probe(x)
        out.backward(torch.ones_like(out))
    return int(counter.get_total_flops()) // batch


@dataclass(frozen=True)
class CutInfo:
    """What a cut point costs, per sample and per round (bytes are serialized lengths)."""

    cut: int
    client_layers: str
    client_flops_per_sample: int
    full_flops_per_sample: int
    activation_bytes_per_sample: int
    client_weight_bytes: int
    model_weight_bytes: int

    @property
    def flops_saving(self) -> float:
        """How many times fewer FLOPs the client does than when it trains the whole model."""
        return self.full_flops_per_sample / self.client_flops_per_sample

    def crossover_samples(self, epochs: int = 1, label_bytes: int = 1) -> float:
        """Local samples at which SplitFed's uplink equals FedAvg's (weights) uplink."""
        return (self.model_weight_bytes - self.client_weight_bytes) / (epochs * (self.activation_bytes_per_sample
                                                                                  + label_bytes))


def cut_profile(model: nn.Sequential, input_shape: Sequence[int], codec: Codec | None = None) -> list[CutInfo]:
    """Measure every cut 1…L−1 of ``model``: client FLOPs, activation and weight payload bytes."""
    codec = codec or Fp32Codec()
    full = training_flops_per_sample(model, tuple(input_shape))
    model_bytes = len(codec.encode(model_state(model)))
    x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    infos = []
    for cut in range(1, len(model)):
        client, _ = split_at(model, cut)
        if not any(True for _ in client.parameters()):
            continue  # a client part without weights is not a useful cut
        with torch.no_grad():
            act = client(x)
        infos.append(CutInfo(cut, " → ".join(type(m).__name__ for m in client),
                             client_training_flops_per_sample(client, input_shape), full,
                             len(codec.encode({"a": act})), len(codec.encode(model_state(client))), model_bytes))
    return infos


def _label_payload(y: torch.Tensor, num_classes: int) -> bytes:
    dtype = np.uint8 if num_classes <= 256 else np.int32
    return y.detach().cpu().numpy().astype(dtype).tobytes()


class SplitFed(RoundProtocol):
    """SplitFed (Thapa et al., AAAI 2022) as a :class:`~fedlab_utils.core.protocol.RoundProtocol`.

    Each client runs the layers before ``cut``, the server the rest.  A client receives the
    client part's weights, then for every mini-batch sends the cut activations and labels up
    and receives the activations' gradient down -- each a serialized payload whose ``len()`` is
    counted -- and finally uploads its client-part weights, which are averaged FedAvg-style.
    ``variant='v1'`` gives the server one copy of its part per client and averages them
    (SFLV1); ``'v2'`` trains one server part on the clients in turn (SFLV2).  ``bytes`` breaks
    the traffic down by kind.
    """

    def __init__(self, model: nn.Sequential, *, cut: int, codec: Codec | None = None, variant: str = "v1",
                 num_classes: int | None = None, loss_fn: Callable = nn.functional.cross_entropy):
        check_choice("variant", variant, ("v1", "v2"))
        split_at(model, cut)  # validates the cut
        self.model, self.cut, self.codec, self.variant = model, cut, codec or Fp32Codec(), variant
        self.num_classes, self.loss_fn = num_classes, loss_fn
        self.label = "SplitFed"

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.classes = self.num_classes or int(max(int(c.y.max()) for c in ctx.clients if len(c))) + 1
        self.client_part, self.server_part = (copy.deepcopy(p).to(ctx.device) for p in split_at(self.model, self.cut))
        self.global_client, self.global_server = model_state(self.client_part), model_state(self.server_part)
        self.client_fps = client_training_flops_per_sample(self.client_part, ctx.input_shape)
        self.full_fps = training_flops_per_sample(nn.Sequential(*self.client_part, *self.server_part), ctx.input_shape)
        self.bytes = dict.fromkeys(["activation_bytes_up", "label_bytes_up", "weight_bytes_up", "gradient_bytes_down",
                                    "weight_bytes_down"], 0)
        reset_state(self.codec)

    def broadcast(self, round_idx, selected):
        self.down_payload = self.codec.encode(self.global_client)
        self.bytes["weight_bytes_down"] += len(self.down_payload) * len(selected)
        self.server_part.load_state_dict(self.global_server, strict=False)
        self.server_states = {}
        return dict.fromkeys(selected, len(self.down_payload))

    def _client_round(self, cid: int, round_idx: int) -> ClientResult:
        data, local, codec, bytes_ = self.ctx.clients[cid], self.ctx.local, self.codec, self.bytes
        client_part, server_part = self.client_part, self.server_part
        client_part.load_state_dict(codec.decode(self.down_payload, self.global_client), strict=False)
        if self.variant == "v1":
            server_part.load_state_dict(self.global_server, strict=False)
        opt_c = make_optimizer(local.optimizer, client_part.parameters(), local.lr, local.weight_decay)
        opt_s = make_optimizer(local.optimizer, server_part.parameters(), local.lr, local.weight_decay)
        client_part.train()
        server_part.train()
        gen, up, down, losses, processed = client_generator(self.ctx.seed, round_idx, cid), 0, 0, [], 0
        sent = {"up": 0, "down": 0}

        def send_up(activation: torch.Tensor) -> torch.Tensor:
            payload = codec.encode({"a": activation})
            bytes_["activation_bytes_up"] += len(payload)
            sent["up"] += len(payload)
            return codec.decode(payload, {"a": activation})["a"]

        def send_down(gradient: torch.Tensor) -> torch.Tensor:
            payload = codec.encode({"g": gradient})
            bytes_["gradient_bytes_down"] += len(payload)
            sent["down"] += len(payload)
            return codec.decode(payload, {"g": gradient})["g"]

        for _ in range(local.epochs):
            for idx in minibatches(len(data), local.batch_size, gen, data.x.device):
                opt_c.zero_grad(set_to_none=True)
                opt_s.zero_grad(set_to_none=True)
                label_payload = _label_payload(data.y[idx], self.classes)  # the labels go up with the activation
                bytes_["label_bytes_up"] += len(label_payload)
                up += len(label_payload)
                loss = split_step(client_part, server_part, data.x[idx], data.y[idx], send_up, send_down, self.loss_fn)
                opt_s.step()
                opt_c.step()
                losses.append(loss.item())
                processed += len(idx)
        up, down = up + sent["up"], down + sent["down"]
        weight_payload = codec.encode(model_state(client_part))
        bytes_["weight_bytes_up"] += len(weight_payload)
        self.server_states[cid] = model_state(server_part)
        return ClientResult(client_id=cid, num_samples=len(data), update=codec.decode(weight_payload, self.global_client),
                            train_loss=float(np.mean(losses)) if losses else float("nan"), samples_processed=processed,
                            bytes_up=up + len(weight_payload), bytes_down=down, flops=self.client_fps * processed)

    def train(self, round_idx, clients):
        return per_client(clients, lambda cid: self._client_round(cid, round_idx))

    def aggregate(self, round_idx, results):
        results = [r for r in results if r.num_samples > 0]
        if not results:
            return 0
        weights = [r.num_samples for r in results]
        self.global_client = weighted_average([r.update for r in results], weights)
        self.global_server = (weighted_average([self.server_states[r.client_id] for r in results], weights)
                              if self.variant == "v1" else model_state(self.server_part))
        self.client_part.load_state_dict(self.global_client, strict=False)
        self.server_part.load_state_dict(self.global_server, strict=False)
        return (self.full_fps - self.client_fps) * sum(r.samples_processed for r in results)

    def evaluate(self):
        self.client_part.load_state_dict(self.global_client, strict=False)
        self.server_part.load_state_dict(self.global_server, strict=False)
        accuracy, loss = evaluate(nn.Sequential(*self.client_part, *self.server_part), *self.ctx.test)
        return accuracy, loss, {}

    def final_model(self):
        return nn.Sequential(*copy.deepcopy(self.client_part), *copy.deepcopy(self.server_part))

    def config(self) -> dict:
        return {"cut": self.cut, "variant": self.variant, "codec": getattr(self.codec, "name", repr(self.codec)),
                "client_flops_per_sample": self.client_fps, "server_flops_per_sample": self.full_fps - self.client_fps}

    def state_dict(self) -> dict:
        return {"global_client": self.global_client, "global_server": self.global_server,
                "bytes": dict(self.bytes), "codec": object_state(self.codec, "codec")}

    def load_state_dict(self, state: dict) -> None:
        self.global_client, self.global_server = state["global_client"], state["global_server"]
        self.bytes.update(state["bytes"])
        load_object_state(self.codec, state.get("codec"), "codec")


def splitfed_run(model: nn.Sequential, clients: Sequence[ClientData], test: tuple[torch.Tensor, torch.Tensor], *,
                 cut: int, rounds: int, local: LocalTraining = LocalTraining(), seed: int = 0,
                 codec: Codec | None = None, variant: str = "v1", num_classes: int | None = None,
                 energy_profile: str | EnergyProfile = "phone-lte", label: str = "SplitFed",
                 loss_fn: Callable = nn.functional.cross_entropy, fraction: float = 1.0, progress: bool | None = None,
                 **options) -> History:
    """SplitFed (Thapa et al., AAAI 2022) simulated on one machine: :class:`SplitFed` on
    :func:`~fedlab_utils.core.loop.run`; returns its :class:`History`.

    Batches follow the same seeded order as :func:`fedlab_utils.core.training.train_locally`, so with
    a lossless codec v1 computes exactly FedAvg's updates: it changes who computes and what
    crosses the wire, not what is learned.  ``client_flops`` counts only the client part
    (``FlopCounterMode``); the server's share is in ``server_flops``; ``history.config['bytes']``
    breaks the traffic down.  ``options`` go to :func:`~fedlab_utils.core.loop.run` (``faults=``,
    ``checkpoint=``, ...).
    """
    protocol = SplitFed(model, cut=cut, codec=codec, variant=variant, num_classes=num_classes, loss_fn=loss_fn)
    history = run(None, clients, test, rounds=rounds, fraction=fraction, local=local, seed=seed,
                  energy_profile=energy_profile, label=label, progress=progress, protocol=protocol, **options)
    history.config["bytes"] = protocol.bytes
    return history


def bytes_vs_local_size(model: nn.Sequential, data: ClientData, test: tuple[torch.Tensor, torch.Tensor], *,
                        cut: int, sizes: Sequence[int], local: LocalTraining = LocalTraining(), seed: int = 0,
                        num_classes: int | None = None) -> dict:
    """Measure one round's bytes per client for SplitFed and FedAvg as the local dataset grows.

    Runs a real one-client round of each on the first ``n`` samples of ``data`` for each ``n``
    in ``sizes`` and reads the payload sizes from their ledgers.
    """
    out = {"sizes": [], "splitfed_up": [], "splitfed_down": [], "fedavg_up": [], "fedavg_down": []}
    for n in sizes:
        part = ClientData(data.x[:n], data.y[:n])
        sf = splitfed_run(model, [part], test, cut=cut, rounds=1, local=local, seed=seed, num_classes=num_classes)
        fa = run(model, [part], test, rounds=1, local=local, seed=seed, progress=False)
        out["sizes"].append(int(n))
        for name, h in (("splitfed", sf), ("fedavg", fa)):
            out[f"{name}_up"].append(h.records[0].bytes_up)
            out[f"{name}_down"].append(h.records[0].bytes_down)
    return out


# ----------------------------------------------------------------------------- 05: the split cut
def cut_payloads(model: nn.Sequential, cut_layer: int, input_shape: Sequence[int], *, batch_size: int = 1,
                 codec=None) -> dict[str, object]:
    """What crosses split learning's cut for one mini-batch, measured on ``model``.

    ``cut_layer`` is the index of the first server layer: the client runs layers
    ``0 … cut_layer−1``.  Returns the activation's shape, and ``activation_bytes`` and
    ``gradient_bytes`` as ``len()`` of the payloads ``codec`` (fp32 by default) would send,
    the same encoding as :class:`SplitFed`.
    """
    check_int("batch_size", batch_size, 1)
    codec = codec or Fp32Codec()
    client, server = split_at(model, cut_layer)
    device = next(model.parameters()).device
    x = torch.zeros(batch_size, *input_shape, device=device)
    probe_client, probe_server = copy.deepcopy(client), copy.deepcopy(server)
    act = probe_client(x)
    server_in = act.detach().requires_grad_()
    probe_server(server_in).sum().backward()
    return {"activation_shape": tuple(act.shape), "activation_bytes": len(copy.deepcopy(codec).encode({"a": act})),
            "gradient_bytes": len(copy.deepcopy(codec).encode({"g": server_in.grad})),
            "client_layers": [type(m).__name__ for m in client], "server_layers": [type(m).__name__ for m in server]}


def draw_split_cut(model: nn.Sequential, cut_layer: int, input_shape: Sequence[int], *, batch_size: int = 1,
                   codec=None, ax=None):
    """Split learning's cut: the model's layers in a row, the client's before the cut and the
    server's after it, with what crosses in each direction for one mini-batch of ``batch_size``:
    activations forward (up to the server), their gradients backward (down to the client).

    Sizes come from :func:`cut_payloads` on ``model`` itself.  ``cut_layer`` is the index of the
    first server layer, as in ``split_at``: "cut_layer=4" means the client runs the first 4 layers (0-3).
    """
    info = cut_payloads(model, cut_layer, input_shape, batch_size=batch_size, codec=codec)
    layers = [type(m).__name__ for m in model]
    n = len(layers)
    fig, ax = new_axes(ax, (max(8.0, 1.05 * n + 1.5), 3.8))
    blank(ax, (-0.2, n + 0.2), (0, 4.0))
    for i, name in enumerate(layers):
        side = CLIENT_COLOR if i < cut_layer else SERVER_COLOR
        box(ax, i + 0.5, 2.0, 0.9, 0.8, f"{i}\n{name}", side, f"layer {i}", fontsize=10)
    ax.axvline(cut_layer, ymin=0.08, ymax=0.92, color="#C44E52", ls="--", lw=1.5, gid="cut")
    ax.text(cut_layer / 2, 3.55, figure_label(N_("client: layers 0-{last}")).format(last=cut_layer - 1), ha="center", fontsize=12)
    ax.text((cut_layer + n) / 2, 3.55, figure_label(N_("server: layers {first}-{last}")).format(first=cut_layer, last=n - 1),
            ha="center", fontsize=12)
    shape = "×".join(str(d) for d in info["activation_shape"])
    arrow(ax, (cut_layer - 0.45, 2.75), (cut_layer + 0.45, 2.75),
           figure_label(N_("forward: activations {shape} = {size}")).format(shape=shape, size=fmt_bytes(info["activation_bytes"])),
           color=PHASE_COLORS["upload"], offset=(0, 0.35), fontsize=11, gid="activations")
    arrow(ax, (cut_layer + 0.45, 1.25), (cut_layer - 0.45, 1.25),
           figure_label(N_("backward: their gradients = {size}")).format(size=fmt_bytes(info["gradient_bytes"])),
           color=PHASE_COLORS["download"], offset=(0, -0.35), fontsize=11, gid="gradients")
    ax.set_title(figure_label(N_("Split learning, cut_layer={cut}: client runs layers 0-{last}, server the rest;\n"
                                 "what crosses per mini-batch of {batch}")).format(cut=cut_layer, last=cut_layer - 1,
                                                                                  batch=batch_size), fontsize=12)
    return fig, ax
