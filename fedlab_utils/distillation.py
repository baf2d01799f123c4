"""Knowledge distillation, and its two federated uses.

**The loss** (Hinton, Vinyals & Dean 2015).  With temperature ``T`` and mixing weight ``α``::

    L = α · T² · KL( softmax(t/T) ‖ softmax(s/T) )  +  (1 − α) · CE(s, y)

``s`` are the student's logits, ``t`` the teacher's **on the same inputs**, ``y`` the labels.
Convention here: ``α`` weights the *teacher* term, so ``α = 0`` is plain cross-entropy
(labels only) and ``α = 1`` is pure distillation (no labels needed -- what a server with an
unlabeled public set can do).  The ``T²`` keeps the soft term's gradients the same size as
``T`` changes: the gradient of the softened KL w.r.t. a logit is ``(p_s − p_t)/T``, and for
large ``T`` that difference itself shrinks like ``1/T``, so the raw term's gradients fall like
``1/T²``.

**Deployment** (:func:`distill`): a big teacher (a FedAvg global model) teaches a small student;
the same function with ``teacher=None`` trains the same student on labels alone, with the
same batches, so the comparison is fair.

**Server ensemble distillation** (FedDF, Lin et al., NeurIPS 2020):
:class:`EnsembleDistillation` is an ``aggregate=`` hook for :func:`fedlab_utils.federated.run`
-- average the clients' weights, then distil the *ensemble* of the clients' logits on an
unlabeled proxy set into the average.  :func:`run_feddf_heterogeneous` does the same when
clients run different architectures (weights are averaged only within an architecture; the
ensemble spans all of them).

**Logit sharing** (FedMD, Li & Wang 2019; FD, Jeong et al. 2018): :func:`run_logit_sharing`
-- clients never send weights.  They send their logits on the shared proxy set
(``mode='proxy'``, FedMD) or their per-class average logits (``mode='per_class'``, FD); the
server averages; clients distil from the average.  Payloads are :class:`LogitCodec` bytes and
the ledger counts their ``len()``.

:func:`proxy_split` sets aside the public/proxy set that no client owns.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812  (the article forgot this import)
from torch import nn

from .data import ClientData
from .federated import (ClientResult, History, LocalTraining, RoundProtocol, apply_delta, client_generator, evaluate,
                        make_optimizer, minibatches, model_state, per_client, run, state_delta, train_locally,
                        weighted_average)
from .ledger import EnergyProfile, forward_flops, training_flops_per_sample
from .validation import check_choice, check_int, check_real
from .wire import Fp32Codec, Update

__all__ = ["kd_loss", "check_temperature", "check_alpha", "check_proxy_size", "proxy_split", "distill_step",
           "distill", "distill_flops", "ensemble_logits", "EnsembleDistillation", "FedDFHeterogeneous",
           "run_feddf_heterogeneous",
           "LogitCodec", "class_average_logits", "LogitSharing", "run_logit_sharing", "weight_payload_bytes"]


# ----------------------------------------------------------------------------- validation
def check_temperature(value: object, name: str = "temperature") -> float:
    """A distillation temperature: a real number > 0 (1 = the ordinary softmax)."""
    return check_real(name, value, 0.0, low_inclusive=False)


def check_alpha(value: object, name: str = "alpha") -> float:
    """The weight of the teacher term, in [0, 1] (0 = labels only, 1 = teacher only)."""
    return check_real(name, value, 0.0, 1.0)


def check_proxy_size(value: object, num_train: int, num_clients: int, min_per_client: int = 2,
                     name: str = "proxy_size") -> int:
    """A proxy-set size that leaves every client at least ``min_per_client`` private samples."""
    high = num_train - num_clients * min_per_client
    if high < 1:
        raise ValueError(f"{name}: {num_train} training samples are too few for {num_clients} clients "
                         f"and a proxy set; use fewer clients")
    return check_int(name, value, 1, high)


# ----------------------------------------------------------------------------- the loss
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, targets: torch.Tensor | None = None,
            *, temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """Hinton's distillation loss, averaged over the batch.

    ``α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y)``.  With ``alpha=0`` the
    teacher is not needed (plain cross-entropy); with ``alpha=1`` the labels are not needed.
    """
    temperature, alpha = check_temperature(temperature), check_alpha(alpha)
    loss = student_logits.new_zeros(())
    if alpha > 0:
        if teacher_logits is None:
            raise ValueError(f"alpha={alpha} > 0 needs teacher_logits; pass alpha=0 to train on labels alone")
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} and student logits "
                             f"{tuple(student_logits.shape)} differ: they must come from the same inputs")
        log_p_s = F.log_softmax(student_logits / temperature, dim=1)
        log_p_t = F.log_softmax(teacher_logits.detach().to(student_logits.dtype) / temperature, dim=1)
        kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)  # KL(p_t ‖ p_s)
        loss = loss + alpha * temperature ** 2 * kl
    if alpha < 1:
        if targets is None:
            raise ValueError(f"alpha={alpha} < 1 needs the labels (targets); pass alpha=1 for pure distillation")
        loss = loss + (1 - alpha) * F.cross_entropy(student_logits, targets)
    return loss


# ----------------------------------------------------------------------------- teacher -> student
def distill_step(student: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                 y: torch.Tensor | None = None, *, teacher: nn.Module | torch.Tensor | None = None,
                 temperature: float = 4.0, alpha: float = 0.9) -> float:
    """One optimizer step of ``student`` on the batch ``x`` -- the teacher sees **this same** ``x``.

    ``teacher`` is a module (run on ``x`` without gradients), a tensor of its logits for ``x``,
    or ``None`` for a labels-only step (then ``alpha`` is ignored and taken as 0).
    """
    if teacher is None or alpha == 0:
        t, alpha = None, 0.0
    elif isinstance(teacher, torch.Tensor):
        t = teacher
    else:
        with torch.no_grad():
            t = teacher(x)  # the teacher sees exactly the student's batch
    student.train()
    optimizer.zero_grad(set_to_none=True)
    loss = kd_loss(student(x), t, y, temperature=temperature, alpha=alpha)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def distill(student: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
            teacher: nn.Module | torch.Tensor | None = None, temperature: float = 4.0, alpha: float = 0.9,
            epochs: int = 10, batch_size: int = 64, lr: float = 1e-3, optimizer: str | Callable = "adam",
            seed: int = 0) -> list[float]:
    """Train ``student`` in place on ``x`` (and ``y``) for ``epochs``; returns the loss of every step.

    * ``teacher`` an ``nn.Module``: it is put in eval mode and run on each student batch;
    * ``teacher`` a tensor: precomputed teacher logits, one row per row of ``x`` (an ensemble's
      average, or logits received from other clients);
    * ``teacher=None``: the same loop on labels alone -- the fair baseline.

    The batch order depends only on ``seed``, so a distilled and a labels-only student with the
    same seed see exactly the same batches in the same order.
    """
    temperature, alpha = check_temperature(temperature), check_alpha(alpha)
    check_int("epochs", epochs, 0)
    check_int("batch_size", batch_size, 1)
    if isinstance(teacher, torch.Tensor) and len(teacher) != len(x):
        raise ValueError(f"teacher logits have {len(teacher)} rows but x has {len(x)}; give one row per input")
    if isinstance(teacher, nn.Module):
        teacher.eval()
    generator = torch.Generator().manual_seed(seed)
    opt = make_optimizer(optimizer, student.parameters(), lr)
    losses, n = [], len(x)
    for _ in range(epochs):
        for idx in minibatches(n, batch_size, generator, x.device):
            xb = x[idx]
            yb = None if y is None else y[idx]
            tb = teacher[idx] if isinstance(teacher, torch.Tensor) else teacher
            losses.append(distill_step(student, opt, xb, yb, teacher=tb, temperature=temperature, alpha=alpha))
    return losses


def distill_flops(student: nn.Module, input_shape: tuple[int, ...], samples: int,
                  teacher: nn.Module | None = None) -> int:
    """FLOPs of distilling on ``samples`` inputs: student training steps + teacher forward passes."""
    flops = training_flops_per_sample(student, input_shape) * samples
    if isinstance(teacher, nn.Module):
        flops += forward_flops(teacher, input_shape) * samples
    return int(flops)


# ----------------------------------------------------------------------------- proxy / public data
def proxy_split(num_train: int, proxy_size: int, seed: int = 0, num_clients: int = 1,
                min_per_client: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices into a public proxy set (no client owns it) and the private rest.

    Returns ``(proxy_idx, private_idx)``, both sorted; partition ``private_idx`` among clients.
    """
    check_proxy_size(proxy_size, num_train, num_clients, min_per_client)
    perm = np.random.default_rng([seed, 0xD15]).permutation(num_train)
    return np.sort(perm[:proxy_size]), np.sort(perm[proxy_size:])


@torch.no_grad()
def ensemble_logits(models: Sequence[nn.Module], x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """The ensemble's prediction as the mean of the members' logits on ``x`` (FedDF's teacher)."""
    if len(models) == 0:
        raise ValueError("ensemble_logits needs at least one model")
    total = None
    for model in models:
        model.eval()
        out = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        total = out if total is None else total + out
    return total / len(models)


# ----------------------------------------------------------------------------- FedDF: aggregate= hook
class EnsembleDistillation:
    """FedDF's server step as an ``aggregate=`` hook of :func:`fedlab_utils.federated.run`.

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

    def __repr__(self) -> str:
        return (f"EnsembleDistillation(proxy={len(self.proxy_x)}, T={self.temperature}, epochs={self.epochs}, "
                f"lr={self.lr})")


class FedDFHeterogeneous(RoundProtocol):
    """FedDF with clients of different architectures, as a :class:`~fedlab_utils.federated.RoundProtocol`.

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
    """FedDF with clients of different architectures (:class:`FedDFHeterogeneous` on :func:`~fedlab_utils.federated.run`).

    ``models`` maps an architecture name to its initial model; ``assignment[i]`` names client
    ``i``'s architecture.  Returns one :class:`History` per architecture (``'<label> · <name>'``),
    each ledgering its own clients' bytes, FLOPs and joules and its own model's accuracy; a
    round in which no client of an architecture was sampled is not in that History.
    ``options`` go to :func:`~fedlab_utils.federated.run` (``faults=``, ``checkpoint=``, ...).
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

    Follows the :class:`~fedlab_utils.wire.Codec` protocol with a one-entry update
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
    """Federated distillation by logit sharing (FedMD / FD) as a :class:`~fedlab_utils.federated.RoundProtocol`.

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
    :func:`~fedlab_utils.federated.run`; ``options`` go to it (``faults=``, ``checkpoint=``, ...).
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
