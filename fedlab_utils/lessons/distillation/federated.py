"""Knowledge distillation in federated learning (the loss and teacher → student training are in
:mod:`fedlab_utils.lessons.distillation.knowledge`: ``kd_loss``, ``distill``, ...).

**Server ensemble distillation** (FedDF, Lin et al., NeurIPS 2020):
:class:`EnsembleDistillation` is an ``aggregate=`` hook for :func:`fedlab_utils.core.loop.run`
-- average the clients' weights, then distil the *ensemble* of the clients' logits on an
unlabeled proxy set into the average.  :class:`FedDFHeterogeneous` (one call:
:func:`run_feddf_heterogeneous`) does the same when clients run different architectures
(weights are averaged only within an architecture; the ensemble spans all of them).

**Logit sharing** (FedMD, Li & Wang 2019; FD, Jeong et al. 2018): :class:`LogitSharing`
(one call: :func:`run_logit_sharing`)
-- clients never send weights.  They send their logits on the shared proxy set
(``mode='proxy'``, FedMD) or their per-class average logits (``mode='per_class'``, FD); the
server averages; clients distil from the average.  Payloads are :class:`LogitCodec` bytes and
the ledger counts their ``len()``.

Both are protocols of :func:`fedlab_utils.core.loop.run`: they have no round loop of their
own, so sampling, faults, energy, the meter, progress bars and checkpoints come from the loop.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fedlab_utils.compression.wire import Fp32Codec, Update
from fedlab_utils.core.aggregators.fedavg import weighted_average
from fedlab_utils.core.history import History
from fedlab_utils.core.loop import run
from fedlab_utils.core.protocol import RoundProtocol, per_client
from fedlab_utils.core.training import (
    ClientResult,
    LocalTraining,
    apply_delta,
    client_generator,
    evaluate,
    model_state,
    state_delta,
    train_locally,
)
from fedlab_utils.data import ClientData
from fedlab_utils.ledger.energy import EnergyProfile
from fedlab_utils.ledger.flops import forward_flops, training_flops_per_sample
from fedlab_utils.lessons.distillation.knowledge import (
    check_alpha,
    check_temperature,
    distill,
    ensemble_logits,
    kd_loss,
)
from fedlab_utils.validation import Rule, check_choice, check_int, choice, integer, optional_path, real

__all__ = ["EnsembleDistillation", "FedDFHeterogeneous", "run_feddf_heterogeneous", "LogitCodec",
           "class_average_logits", "LogitSharing", "run_logit_sharing", "weight_payload_bytes",
           "RULES_03"]


# ----------------------------------------------------------------------------- FedDF: aggregate= hook
class EnsembleDistillation:
    """FedDF's server step as an ``aggregate=`` hook of :func:`fedlab_utils.core.loop.run`.

    Average the client updates (FedAvg), then fine-tune the average so that its softened
    predictions on the unlabeled ``proxy_x`` match the mean of the client models' logits
    (``alpha = 1``: the proxy set has no labels).  Returns the update ``distilled − global``.
    ``server_flops`` accumulates what the server spent (client FLOPs are unchanged).
    """

    def __init__(self, proxy_x: torch.Tensor, *, temperature: float = 1.0, epochs: int = 2, batch_size: int = 64,
                 lr: float = 1e-3, optimizer: str | Callable = "adam", seed: int = 0):
        self.temperature = check_temperature(temperature)
        check_int("epochs", epochs, 0)
        if len(proxy_x) == 0:
            raise ValueError("proxy_x is empty; EnsembleDistillation needs a proxy set (proxy_size >= 1)")
        self.proxy_x, self.epochs, self.batch_size, self.lr = proxy_x, epochs, batch_size, lr
        self.optimizer, self.seed = optimizer, seed
        self.server_flops = 0

    def __call__(self, results, global_model: nn.Module, round_idx: int) -> Update:
        global_state = model_state(global_model)
        average = weighted_average([r.update for r in results], [r.num_samples for r in results])
        worker, members = copy.deepcopy(global_model), []
        for r in results:
            member = copy.deepcopy(worker)
            member.load_state_dict(apply_delta(global_state, r.update), strict=False)
            members.append(member)
        proxy_x = self.proxy_x.to(next(global_model.parameters()).device)
        teacher = ensemble_logits(members, proxy_x)
        worker.load_state_dict(apply_delta(global_state, average), strict=False)
        distill(worker, proxy_x, teacher=teacher, temperature=self.temperature, alpha=1.0, epochs=self.epochs,
                batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer, seed=self.seed + round_idx)
        shape = tuple(self.proxy_x.shape[1:])
        self.server_flops += (forward_flops(worker, shape) * len(members)
                              + training_flops_per_sample(worker, shape) * self.epochs) * len(self.proxy_x)
        return state_delta(model_state(worker), global_state)

    def reset(self) -> None:
        """Start a new run: forget the server FLOPs counted so far."""
        self.server_flops = 0

    def state_dict(self) -> dict:
        return {"server_flops": int(self.server_flops)}

    def load_state_dict(self, state: dict) -> None:
        self.server_flops = int(state["server_flops"])

    def __repr__(self) -> str:
        return (f"EnsembleDistillation(proxy={len(self.proxy_x)}, T={self.temperature}, epochs={self.epochs}, "
                f"lr={self.lr})")


class FedDFHeterogeneous(RoundProtocol):
    """FedDF with clients of different architectures, as a :class:`~fedlab_utils.core.protocol.RoundProtocol`.

    Each client downloads its architecture's global model (fp32), trains locally and uploads
    its update (fp32).  The server averages each architecture over its own clients, then
    distils the ensemble of **all** surviving clients' models on ``proxy_x`` into every
    architecture's average.  ``evaluate`` reports ``accuracy/<name>`` and ``loss/<name>``.
    """

    label = "FedDF hetero"

    def __init__(self, models: dict[str, nn.Module], assignment: Sequence[str], proxy_x: torch.Tensor, *,
                 temperature: float = 1.0, distill_epochs: int = 2, batch_size: int = 64, lr: float = 1e-3):
        for name in assignment:
            check_choice("assignment", name, models)
        check_int("distill_epochs", distill_epochs, 0)
        self.models, self.assignment, self.proxy_x = models, list(assignment), proxy_x
        self.temperature, self.distill_epochs = check_temperature(temperature), distill_epochs
        self.batch_size, self.lr, self.codec = batch_size, lr, Fp32Codec()

    def setup(self, ctx) -> None:
        super().setup(ctx)
        if len(self.assignment) != len(ctx.clients):
            raise ValueError(f"assignment names {len(self.assignment)} architectures but there are "
                             f"{len(ctx.clients)} clients")
        self.proxy = self.proxy_x.to(ctx.device)
        self.globals = {k: copy.deepcopy(m).to(ctx.device) for k, m in self.models.items()}
        self.workers = {k: copy.deepcopy(m) for k, m in self.globals.items()}
        self.flops_per_sample = {k: training_flops_per_sample(m, ctx.input_shape) for k, m in self.globals.items()}

    def broadcast(self, round_idx, selected):
        self.received, self.members, sizes = {}, {}, {}
        for arch in sorted({self.assignment[c] for c in selected}):
            state = model_state(self.globals[arch])
            payload = self.codec.encode(state)
            self.received[arch] = (state, self.codec.decode(payload, state))
            sizes[arch] = len(payload)
        return {c: sizes[self.assignment[c]] for c in selected}

    def train(self, round_idx, clients):
        def work(cid: int) -> ClientResult:
            arch, data = self.assignment[cid], self.ctx.clients[cid]
            state, received = self.received[arch]
            worker = self.workers[arch]
            worker.load_state_dict(received, strict=False)
            loss, processed = train_locally(worker, data, self.ctx.local,
                                            generator=client_generator(self.ctx.seed, round_idx, cid))
            payload = self.codec.encode(state_delta(model_state(worker), state), cid)
            self.members[cid] = copy.deepcopy(worker)
            return ClientResult(client_id=cid, num_samples=len(data), update=self.codec.decode(payload, state),
                                train_loss=loss, samples_processed=processed, bytes_up=len(payload),
                                flops=self.flops_per_sample[arch] * processed)

        return per_client(clients, work)

    def aggregate(self, round_idx, results):
        members = [self.members[r.client_id] for r in results]
        teacher = ensemble_logits(members, self.proxy)
        shape, server_flops = tuple(self.proxy.shape[1:]), 0
        for arch, model in self.globals.items():
            rows = [r for r in results if self.assignment[r.client_id] == arch and r.num_samples > 0]
            if not rows:
                continue  # nobody of this architecture survived: its model stays as it was
            state = model_state(model)
            avg = weighted_average([r.update for r in rows], [r.num_samples for r in rows])
            model.load_state_dict(apply_delta(state, avg), strict=False)
            distill(model, self.proxy, teacher=teacher, temperature=self.temperature, alpha=1.0,
                    epochs=self.distill_epochs, batch_size=self.batch_size, lr=self.lr, seed=self.ctx.seed + round_idx)
            server_flops += self.distill_epochs * len(self.proxy) * training_flops_per_sample(model, shape)
        return server_flops + len(self.proxy) * sum(forward_flops(m, shape) for m in members)

    def evaluate(self):
        metrics = {}
        for arch, model in self.globals.items():
            metrics[f"accuracy/{arch}"], metrics[f"loss/{arch}"] = evaluate(model, *self.ctx.test)
        accs = [metrics[f"accuracy/{a}"] for a in self.globals]
        losses = [metrics[f"loss/{a}"] for a in self.globals]
        return float(np.mean(accs)), float(np.mean(losses)), metrics

    def final_model(self):
        return next(iter(self.globals.values()))

    def config(self) -> dict:
        return {"assignment": self.assignment, "temperature": self.temperature, "distill_epochs": self.distill_epochs,
                "distill_batch_size": self.batch_size, "distill_lr": self.lr, "proxy_size": len(self.proxy_x),
                "architectures": {k: [[n, list(v.shape)] for n, v in m.state_dict().items()]
                                  for k, m in self.models.items()}}

    def state_dict(self) -> dict:
        return {"globals": {k: m.state_dict() for k, m in self.globals.items()},
                "workers": {k: m.state_dict() for k, m in self.workers.items()}}

    def load_state_dict(self, state: dict) -> None:
        for k, m in self.globals.items():
            m.load_state_dict(state["globals"][k])
            self.workers[k].load_state_dict(state["workers"][k])


def run_feddf_heterogeneous(models: dict[str, nn.Module], assignment: Sequence[str], clients: Sequence[ClientData],
                            proxy_x: torch.Tensor, test: tuple[torch.Tensor, torch.Tensor], *, rounds: int,
                            fraction: float = 1.0, local: LocalTraining = LocalTraining(), seed: int = 0,
                            temperature: float = 1.0, distill_epochs: int = 2, batch_size: int = 64,
                            lr: float = 1e-3, energy_profile: str | EnergyProfile = "phone-lte",
                            label: str = "FedDF hetero", progress: bool | None = None, **options) -> dict[str, History]:
    """FedDF with clients of different architectures (:class:`FedDFHeterogeneous` on :func:`~fedlab_utils.core.loop.run`).

    ``models`` maps an architecture name to its initial model; ``assignment[i]`` names client
    ``i``'s architecture.  Returns one :class:`History` per architecture (``'<label> · <name>'``),
    each ledgering its own clients' bytes, FLOPs and joules and its own model's accuracy; a
    round in which no client of an architecture was sampled is not in that History.
    ``options`` go to :func:`~fedlab_utils.core.loop.run` (``faults=``, ``checkpoint=``, ...).
    """
    if len(assignment) != len(clients):
        raise ValueError(f"assignment names {len(assignment)} architectures but there are {len(clients)} clients")
    protocol = FedDFHeterogeneous(models, assignment, proxy_x, temperature=temperature, distill_epochs=distill_epochs,
                                  batch_size=batch_size, lr=lr)
    history = run(None, clients, test, rounds=rounds, fraction=fraction, local=local, seed=seed,
                  energy_profile=energy_profile, label=label, progress=progress, protocol=protocol, **options)
    histories = history.split(lambda c: assignment[c], list(models), label)
    for arch, h in histories.items():
        h.model = protocol.globals[arch]
    return {h.label: h for h in histories.values()}


# ----------------------------------------------------------------------------- logit sharing (FedMD / FD)
class LogitCodec:
    """Logits on the wire: raw little-endian fp16 or fp32 values (shape known to both ends).

    Follows the :class:`~fedlab_utils.compression.wire.Codec` protocol with a one-entry update
    ``{"logits": tensor}``; ``len(encode(...)) == numel × (2 or 4)``.
    """

    def __init__(self, dtype: str = "fp16"):
        check_choice("logit dtype", dtype, ("fp16", "fp32"))
        self.dtype = dtype
        self.name = f"logits-{dtype}"
        self._np = "<f2" if dtype == "fp16" else "<f4"

    @property
    def bytes_per_value(self) -> int:
        return 2 if self.dtype == "fp16" else 4

    def encode(self, update: Update | torch.Tensor, client_id: int = 0) -> bytes:
        t = update["logits"] if isinstance(update, dict) else update
        return t.detach().to("cpu", torch.float32).numpy().astype(self._np).tobytes()

    def decode(self, payload: bytes, template: Update | torch.Tensor) -> torch.Tensor:
        ref = template["logits"] if isinstance(template, dict) else template
        values = torch.from_numpy(np.frombuffer(payload, dtype=self._np).astype(np.float32))
        if values.numel() != ref.numel():
            raise ValueError(f"payload holds {values.numel()} values but the template needs {ref.numel()}")
        return values.reshape(ref.shape).to(ref.device)

    def __repr__(self) -> str:
        return f"LogitCodec({self.dtype!r})"


def weight_payload_bytes(model: nn.Module) -> int:
    """Bytes of sending ``model``'s weights uncompressed (``len()`` of the fp32 payload)."""
    return len(Fp32Codec().encode(model_state(model)))


@torch.no_grad()
def class_average_logits(model: nn.Module, data: ClientData, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FD's summary of a client: the mean logit vector of its samples of each class, and the counts."""
    model.eval()
    logits = model(data.x)
    sums = torch.zeros(num_classes, logits.shape[1], device=logits.device).index_add_(0, data.y, logits)
    counts = torch.bincount(data.y, minlength=num_classes).to(logits.dtype)
    return sums / counts.clamp(min=1)[:, None], counts


class LogitSharing(RoundProtocol):
    """Federated distillation by logit sharing (FedMD / FD) as a :class:`~fedlab_utils.core.protocol.RoundProtocol`.

    Every client keeps its own model; the server only ever sees logits.  See
    :func:`run_logit_sharing` for the two modes.  Accuracy is the mean test accuracy over the
    clients' own models.
    """

    def __init__(self, model: nn.Module | Sequence[nn.Module], *, proxy_x: torch.Tensor | None = None,
                 mode: str = "proxy", temperature: float = 1.0, alpha: float = 0.5, distill_epochs: int = 1,
                 batch_size: int = 64, lr: float = 1e-3, codec: LogitCodec | None = None,
                 num_classes: int | None = None):
        check_choice("mode", mode, ("proxy", "per_class"))
        self.temperature, self.alpha = check_temperature(temperature), check_alpha(alpha)
        if mode == "proxy" and (proxy_x is None or len(proxy_x) == 0):
            raise ValueError("mode='proxy' needs a non-empty proxy_x (set proxy_size >= 1)")
        self.model, self.proxy_x, self.mode, self.distill_epochs = model, proxy_x, mode, distill_epochs
        self.batch_size, self.lr, self.codec, self.num_classes = batch_size, lr, codec or LogitCodec("fp16"), num_classes
        self.label = "FedMD (proxy logits)" if mode == "proxy" else "FD (class logits)"

    def setup(self, ctx) -> None:
        super().setup(ctx)
        model, device = self.model, ctx.device
        self.models = ([copy.deepcopy(model).to(device) for _ in ctx.clients] if isinstance(model, nn.Module)
                       else [copy.deepcopy(m).to(device) for m in model])
        if len(self.models) != len(ctx.clients):
            raise ValueError(f"got {len(self.models)} models for {len(ctx.clients)} clients; give one model or one "
                             f"per client")
        self.proxy = None if self.proxy_x is None else self.proxy_x.to(device)
        with torch.no_grad():
            self.classes = self.num_classes or int(self.models[0](ctx.clients[0].x[:1]).shape[1])
        self.train_fps = [training_flops_per_sample(m, ctx.input_shape) for m in self.models]
        self.fwd_fps = [forward_flops(m, ctx.input_shape) for m in self.models]
        rows = len(self.proxy_x) if self.mode == "proxy" else self.classes
        self.template = torch.zeros(rows, self.classes)
        self.consensus_payload: bytes | None = None
        self.weights: dict[int, object] = {}

    def broadcast(self, round_idx, selected):
        payload = self.consensus_payload
        self.consensus = None if payload is None else self.codec.decode(payload, self.template).to(self.ctx.device)
        return dict.fromkeys(selected, 0 if payload is None else len(payload))

    def _client_step(self, cid: int, round_idx: int) -> ClientResult:
        m, data, ctx = self.models[cid], self.ctx.clients[cid], self.ctx
        gen, flops = client_generator(ctx.seed, round_idx, cid), 0
        if self.mode == "proxy":
            if self.consensus is not None and self.distill_epochs > 0:  # digest: match the consensus on public data
                distill(m, self.proxy, teacher=self.consensus, temperature=self.temperature, alpha=1.0,
                        epochs=self.distill_epochs, batch_size=self.batch_size, lr=self.lr,
                        seed=int(torch.randint(2**31, (1,), generator=gen)))
                flops += self.train_fps[cid] * self.distill_epochs * len(self.proxy)
            loss, processed = train_locally(m, data, ctx.local, generator=gen)  # revisit: private labels
            with torch.no_grad():
                m.eval()
                mine = m(self.proxy)
            flops += self.fwd_fps[cid] * len(self.proxy)
            self.weights[cid] = 1.0
        else:
            loss_fn = None
            if self.consensus is not None:
                table = self.consensus

                def loss_fn(logits, y, _t=table):
                    return kd_loss(logits, _t[y], y, temperature=self.temperature, alpha=self.alpha)
            loss, processed = (train_locally(m, data, ctx.local, generator=gen, loss_fn=loss_fn) if loss_fn
                               else train_locally(m, data, ctx.local, generator=gen))
            mine, counts = class_average_logits(m, data, self.classes)
            flops += self.fwd_fps[cid] * len(data)
            self.weights[cid] = counts
        flops += self.train_fps[cid] * processed
        payload = self.codec.encode({"logits": mine}, cid)
        return ClientResult(client_id=cid, num_samples=len(data), train_loss=loss, samples_processed=processed,
                            update=self.codec.decode(payload, self.template).to(ctx.device),  # what the server sees
                            bytes_up=len(payload), flops=flops)

    def train(self, round_idx, clients):
        return per_client(clients, lambda cid: self._client_step(cid, round_idx))

    def aggregate(self, round_idx, results):
        uploads = torch.stack([r.update for r in results])
        if self.mode == "proxy":
            agg = uploads.mean(0)
        else:  # per class, weighted by how many samples of that class each client holds
            w = torch.stack([self.weights[r.client_id] for r in results]).to(self.ctx.device)  # clients × classes
            agg = (uploads * w[:, :, None]).sum(0) / w.sum(0).clamp(min=1)[:, None]
        self.consensus_payload = self.codec.encode({"logits": agg})
        return 0

    def evaluate(self):
        accs = [evaluate(m, *self.ctx.test) for m in self.models]
        return float(np.mean([a for a, _ in accs])), float(np.mean([l_ for _, l_ in accs])), {}

    def final_model(self):
        return self.models[0]

    def config(self) -> dict:
        return {"mode": self.mode, "temperature": self.temperature, "alpha": self.alpha, "codec": self.codec.name,
                "distill_epochs": self.distill_epochs, "proxy_size": None if self.proxy_x is None else len(self.proxy_x)}

    def state_dict(self) -> dict:
        payload = self.consensus_payload
        return {"models": [m.state_dict() for m in self.models],
                "consensus": None if payload is None else torch.frombuffer(bytearray(payload), dtype=torch.uint8)}

    def load_state_dict(self, state: dict) -> None:
        for m, s in zip(self.models, state["models"]):
            m.load_state_dict(s)
        consensus = state["consensus"]
        self.consensus_payload = None if consensus is None else consensus.cpu().numpy().tobytes()


def run_logit_sharing(model: nn.Module | Sequence[nn.Module], clients: Sequence[ClientData],
                      test: tuple[torch.Tensor, torch.Tensor], *, rounds: int, proxy_x: torch.Tensor | None = None,
                      mode: str = "proxy", local: LocalTraining = LocalTraining(), seed: int = 0,
                      temperature: float = 1.0, alpha: float = 0.5, distill_epochs: int = 1, batch_size: int = 64,
                      lr: float = 1e-3, codec: LogitCodec | None = None, num_classes: int | None = None,
                      energy_profile: str | EnergyProfile = "phone-lte", label: str | None = None,
                      progress: bool | None = None, fraction: float = 1.0, **options) -> History:
    """Federated distillation by logit sharing: weights never leave the clients.

    ``mode='proxy'`` (FedMD): each round every client (1) distils on the public ``proxy_x``
    towards the consensus logits it downloaded (from round 2; ``alpha=1`` there, no labels),
    (2) trains on its private data, (3) uploads its logits on ``proxy_x``; the server averages
    them into the next consensus.  Uplink: ``len(proxy_x) × classes`` values per client.

    ``mode='per_class'`` (FD): each client uploads its per-class average logits
    (``classes × classes`` values) and trains with ``kd_loss(s, consensus[y], y, T, alpha)``,
    the teacher row picked by the sample's label.  No proxy set needed.

    ``model`` is one initial model (copied to every client) or one model per client (different
    architectures are fine).  Accuracy is the mean test accuracy over the clients' own models
    (``history.client_models``).  This is :class:`LogitSharing` on
    :func:`~fedlab_utils.core.loop.run`; ``options`` go to it (``faults=``, ``checkpoint=``, ...).
    """
    check_int("rounds", rounds, 1)
    protocol = LogitSharing(model, proxy_x=proxy_x, mode=mode, temperature=temperature, alpha=alpha,
                            distill_epochs=distill_epochs, batch_size=batch_size, lr=lr, codec=codec,
                            num_classes=num_classes)
    history = run(None, clients, test, rounds=rounds, fraction=fraction, local=local, seed=seed,
                  energy_profile=energy_profile, label=label or protocol.label, progress=progress, protocol=protocol,
                  **options)
    history.client_models = protocol.models  # every client's own model (they were never averaged)
    return history


#: Notebook 03's parameters and what is valid for each, validated in one call by
#: ``fedlab_utils.validation.check_parameters(globals(), RULES_03)`` in its setup cell (``proxy_size``'s
#: upper bound depends on the dataset: :func:`proxy_split` checks it once the data is loaded).
RULES_03: dict[str, Rule] = {
    "seed": integer(0), "dataset": choice(("mnist5k", "digits", "mnist", "fashion_mnist")),
    "data_dir": optional_path(), "num_clients": integer(2, 50), "rounds": integer(1, 100),
    "local_epochs": integer(1, 50), "partition": choice(("iid", "dirichlet")), "temperature": real(0, low_inclusive=False),
    "alpha": real(0, 1), "proxy_size": integer(1), "teacher_hidden": integer(1), "student_hidden": integer(1),
    "distill_epochs": integer(1), "results_path": optional_path(),
}
