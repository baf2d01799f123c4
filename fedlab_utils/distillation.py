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
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812  (the article forgot this import)
from torch import nn
from tqdm.auto import tqdm

from .data import ClientData
from .federated import (History, LocalTraining, RoundRecord, progress_enabled, apply_delta, client_generator,
                        evaluate, make_optimizer, model_state, sample_clients, state_delta, train_locally,
                        weighted_average)
from .ledger import EnergyMeter, EnergyProfile, forward_flops, get_profile, training_flops_per_sample
from .validation import check_choice, check_fraction, check_int, check_real
from .wire import Fp32Codec, Update

__all__ = ["kd_loss", "check_temperature", "check_alpha", "check_proxy_size", "proxy_split", "distill_step",
           "distill", "distill_flops", "ensemble_logits", "EnsembleDistillation", "run_feddf_heterogeneous",
           "LogitCodec", "class_average_logits", "run_logit_sharing", "weight_payload_bytes"]


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
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
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


def _record(round_idx, selected, model_or_acc, test, train_losses, bytes_up, bytes_down, flops, start, profile,
            meter, joules_before) -> RoundRecord:
    if isinstance(model_or_acc, tuple):
        accuracy, loss = model_or_acc
    else:
        accuracy, loss = evaluate(model_or_acc, *test)
    joules_after = meter.read()
    return RoundRecord(round_idx, list(selected), accuracy, loss, float(np.mean(train_losses)) if train_losses else
                       float("nan"), int(bytes_up), int(bytes_down), int(flops), time.perf_counter() - start,
                       profile.energy(flops, bytes_up, bytes_down),
                       None if joules_before is None else joules_after - joules_before)


def run_feddf_heterogeneous(models: dict[str, nn.Module], assignment: Sequence[str], clients: Sequence[ClientData],
                            proxy_x: torch.Tensor, test: tuple[torch.Tensor, torch.Tensor], *, rounds: int,
                            fraction: float = 1.0, local: LocalTraining = LocalTraining(), seed: int = 0,
                            temperature: float = 1.0, distill_epochs: int = 2, batch_size: int = 64,
                            lr: float = 1e-3, energy_profile: str | EnergyProfile = "phone-lte",
                            label: str = "FedDF hetero", progress: bool | None = None) -> dict[str, History]:
    """FedDF with clients of different architectures.

    ``models`` maps an architecture name to its initial model; ``assignment[i]`` names client
    ``i``'s architecture.  Each round: clients download their architecture's global model
    (fp32), train locally, upload their weights (fp32); the server averages each architecture
    over its own clients, then distils the ensemble of **all** sampled clients' logits on
    ``proxy_x`` into every architecture's average.  Returns one :class:`History` per
    architecture (``'<label> · <name>'``), each ledgering its own clients' bytes and FLOPs.
    """
    check_int("rounds", rounds, 1)
    check_fraction("fraction", fraction)
    temperature = check_temperature(temperature)
    if len(assignment) != len(clients):
        raise ValueError(f"assignment names {len(assignment)} architectures but there are {len(clients)} clients")
    for name in assignment:
        check_choice("assignment", name, models)
    profile, codec = get_profile(energy_profile), Fp32Codec()
    device = clients[0].x.device
    proxy_x, test = proxy_x.to(device), (test[0].to(device), test[1].to(device))
    shape = tuple(clients[0].x.shape[1:])
    globals_ = {k: copy.deepcopy(m).to(device) for k, m in models.items()}
    workers = {k: copy.deepcopy(m) for k, m in globals_.items()}
    flops_per_sample = {k: training_flops_per_sample(m, shape) for k, m in globals_.items()}
    meter = EnergyMeter(device)
    histories = {k: History(f"{label} · {k}", profile=profile.name, meter=meter.source,
                            config={"rounds": rounds, "fraction": fraction, "seed": seed, "architecture": k,
                                    "clients": [i for i, a in enumerate(assignment) if a == k],
                                    "temperature": temperature, "distill_epochs": distill_epochs,
                                    "proxy_size": len(proxy_x)})
                 for k in models}
    for round_idx in tqdm(range(1, rounds + 1), desc=label, disable=not progress_enabled(progress), leave=False):
        start, joules_before = time.perf_counter(), meter.read()
        selected = sample_clients(len(clients), fraction, np.random.default_rng([seed, round_idx]))
        members, per_arch = [], {k: [] for k in models}
        for cid in selected:
            arch = assignment[cid]
            received = model_state(globals_[arch])
            down = codec.encode(received)
            worker = workers[arch]
            worker.load_state_dict(codec.decode(down, received), strict=False)
            loss, processed = train_locally(worker, clients[cid], local, generator=client_generator(seed, round_idx, cid))
            up = codec.encode(state_delta(model_state(worker), received), cid)
            update = codec.decode(up, received)
            per_arch[arch].append((cid, update, len(clients[cid]), loss, processed, len(up), len(down)))
            member = copy.deepcopy(worker)
            members.append(member)
        teacher = ensemble_logits(members, proxy_x)
        for arch, rows in per_arch.items():
            if not rows:
                continue  # nobody of this architecture was sampled: its model stays as it was
            state = model_state(globals_[arch])
            avg = weighted_average([r[1] for r in rows], [r[2] for r in rows])
            globals_[arch].load_state_dict(apply_delta(state, avg), strict=False)
            distill(globals_[arch], proxy_x, teacher=teacher, temperature=temperature, alpha=1.0,
                    epochs=distill_epochs, batch_size=batch_size, lr=lr, seed=seed + round_idx)
            flops = flops_per_sample[arch] * sum(r[4] for r in rows)
            histories[arch].records.append(_record(
                round_idx, [r[0] for r in rows], globals_[arch], test, [r[3] for r in rows], sum(r[5] for r in rows),
                sum(r[6] for r in rows), flops, start, profile, meter, joules_before))
    for arch, h in histories.items():
        h.model = globals_[arch]
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


def run_logit_sharing(model: nn.Module | Sequence[nn.Module], clients: Sequence[ClientData],
                      test: tuple[torch.Tensor, torch.Tensor], *, rounds: int, proxy_x: torch.Tensor | None = None,
                      mode: str = "proxy", local: LocalTraining = LocalTraining(), seed: int = 0,
                      temperature: float = 1.0, alpha: float = 0.5, distill_epochs: int = 1, batch_size: int = 64,
                      lr: float = 1e-3, codec: LogitCodec | None = None, num_classes: int | None = None,
                      energy_profile: str | EnergyProfile = "phone-lte", label: str | None = None,
                      progress: bool | None = None) -> History:
    """Federated distillation by logit sharing: weights never leave the clients.

    ``mode='proxy'`` (FedMD): each round every client (1) distils on the public ``proxy_x``
    towards the consensus logits it downloaded (from round 2; ``alpha=1`` there, no labels),
    (2) trains on its private data, (3) uploads its logits on ``proxy_x``; the server averages
    them into the next consensus.  Uplink: ``len(proxy_x) × classes`` values per client.

    ``mode='per_class'`` (FD): each client uploads its per-class average logits
    (``classes × classes`` values) and trains with ``kd_loss(s, consensus[y], y, T, alpha)``,
    the teacher row picked by the sample's label.  No proxy set needed.

    ``model`` is one initial model (copied to every client) or one model per client (different
    architectures are fine).  Accuracy is the mean test accuracy over the clients' own models.
    """
    check_int("rounds", rounds, 1)
    check_choice("mode", mode, ("proxy", "per_class"))
    temperature, alpha = check_temperature(temperature), check_alpha(alpha)
    codec = codec or LogitCodec("fp16")
    profile = get_profile(energy_profile)
    device = clients[0].x.device
    test = (test[0].to(device), test[1].to(device))
    models = ([copy.deepcopy(model).to(device) for _ in clients] if isinstance(model, nn.Module)
              else [copy.deepcopy(m).to(device) for m in model])
    if len(models) != len(clients):
        raise ValueError(f"got {len(models)} models for {len(clients)} clients; give one model or one per client")
    if mode == "proxy":
        if proxy_x is None or len(proxy_x) == 0:
            raise ValueError("mode='proxy' needs a non-empty proxy_x (set proxy_size >= 1)")
        proxy_x = proxy_x.to(device)
    shape = tuple(clients[0].x.shape[1:])
    with torch.no_grad():
        classes = num_classes or int(models[0](clients[0].x[:1]).shape[1])
    train_fps = [training_flops_per_sample(m, shape) for m in models]
    fwd_fps = [forward_flops(m, shape) for m in models]
    meter = EnergyMeter(device)
    label = label or ("FedMD (proxy logits)" if mode == "proxy" else "FD (class logits)")
    history = History(label, profile=profile.name, meter=meter.source,
                      config={"rounds": rounds, "mode": mode, "num_clients": len(clients), "seed": seed,
                              "temperature": temperature, "alpha": alpha, "codec": codec.name,
                              "proxy_size": None if proxy_x is None else len(proxy_x),
                              "local": {k: v for k, v in vars(local).items() if not callable(v)}})
    consensus_payload: bytes | None = None
    template = torch.zeros(len(proxy_x) if mode == "proxy" else classes, classes)
    for round_idx in tqdm(range(1, rounds + 1), desc=label, disable=not progress_enabled(progress), leave=False):
        start, joules_before = time.perf_counter(), meter.read()
        consensus = None if consensus_payload is None else codec.decode(consensus_payload, template).to(device)
        uploads, weights, losses, flops, bytes_up = [], [], [], 0, 0
        bytes_down = 0 if consensus_payload is None else len(consensus_payload) * len(clients)
        for cid, (m, data) in enumerate(zip(models, clients)):
            gen = client_generator(seed, round_idx, cid)
            if mode == "proxy":
                if consensus is not None and distill_epochs > 0:  # digest: match the consensus on public data
                    distill(m, proxy_x, teacher=consensus, temperature=temperature, alpha=1.0, epochs=distill_epochs,
                            batch_size=batch_size, lr=lr, seed=int(torch.randint(2**31, (1,), generator=gen)))
                    flops += train_fps[cid] * distill_epochs * len(proxy_x)
                loss, processed = train_locally(m, data, local, generator=gen)  # revisit: private labels
                with torch.no_grad():
                    m.eval()
                    mine = m(proxy_x)
                flops += fwd_fps[cid] * len(proxy_x)
                weights.append(1.0)
            else:
                loss_fn = None
                if consensus is not None:
                    table = consensus

                    def loss_fn(logits, y, _t=table):
                        return kd_loss(logits, _t[y], y, temperature=temperature, alpha=alpha)
                loss, processed = (train_locally(m, data, local, generator=gen, loss_fn=loss_fn) if loss_fn
                                   else train_locally(m, data, local, generator=gen))
                mine, counts = class_average_logits(m, data, classes)
                flops += fwd_fps[cid] * len(data)
                weights.append(counts)
            flops += train_fps[cid] * processed
            payload = codec.encode({"logits": mine}, cid)
            bytes_up += len(payload)
            uploads.append(codec.decode(payload, template).to(device))  # the server sees what was sent
            losses.append(loss)
        if mode == "proxy":
            agg = torch.stack(uploads).mean(0)
        else:  # per class, weighted by how many samples of that class each client holds
            w = torch.stack(weights).to(device)  # clients × classes
            agg = (torch.stack(uploads) * w[:, :, None]).sum(0) / w.sum(0).clamp(min=1)[:, None]
        consensus_payload = codec.encode({"logits": agg})
        accs = [evaluate(m, *test) for m in models]
        acc = (float(np.mean([a for a, _ in accs])), float(np.mean([l_ for _, l_ in accs])))
        history.records.append(_record(round_idx, range(len(clients)), acc, test, losses, bytes_up, bytes_down, flops,
                                       start, profile, meter, joules_before))
    history.model = models[0]
    history.client_models = models  # every client's own model (they were never averaged)
    return history
