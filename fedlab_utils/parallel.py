"""Model parallelism and split learning: what lesson 05 needs beyond the core.

Three ways to cut one ``nn.Sequential`` model:

* **stages on devices** (:func:`split_sequential`, :class:`StagedModel`): each stage lives on
  one placement from :func:`fedlab_utils.devices.get_devices` and the *activations are moved*
  to the next stage's device (the step the original article forgot).  With fewer GPUs than
  stages the placements are CPU "virtual devices": same numbers, no speed-up.
* **a GPipe pipeline** (:func:`pipeline_train_step`): the batch is cut into ``M``
  micro-batches that flow through the ``S`` stages in clock order, activations forward and
  gradients backward.  Each (stage, micro-batch) cell is timed, and the GPipe schedule is
  replayed on those measured times to get the bubble (idle) fraction, compared with the
  ideal ``(S−1)/(M+S−1)`` (Huang et al., NeurIPS 2019).
* **separate processes** (:func:`run_multiprocess_pipeline`): one stage per process, with
  ``torch.distributed`` send/recv (gloo on CPU, NCCL on GPUs).  The worker lives in
  :mod:`fedlab_utils.parallel_worker` -- a notebook-defined function cannot be spawned -- and is
  also runnable with ``torchrun --nproc_per_node 2 -m fedlab_utils.parallel_worker --demo``.
* **split learning for FL** (:func:`splitfed_run`): SplitFed (Thapa et al., AAAI 2022).  Each
  client runs the layers before ``cut``, the server the rest; activations go up and their
  gradients come down as serialized payloads whose ``len()`` the ledger counts.
"""
from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .data import ClientData
from .federated import (History, LocalTraining, RoundRecord, client_generator, evaluate, make_optimizer,
                        model_state, weighted_average)
from .ledger import PROFILES, get_profile, training_flops_per_sample
from .validation import check_choice, check_int
from .wire import Codec, Fp32Codec

__all__ = ["split_sequential", "stage_boundaries", "StagedModel", "stage_input_shapes", "PipelineReport", "pipeline_train_step", "timed_pipeline_step",
           "gpipe_schedule", "gpipe_makespan", "plot_schedule", "ideal_bubble", "reference_step", "find_free_port", "MultiProcessResult",
           "run_multiprocess_pipeline", "split_at", "client_training_flops_per_sample", "CutInfo",
           "cut_profile", "splitfed_run", "bytes_vs_local_size", "energy_by_profile", "article_large_net"]


# ----------------------------------------------------------------------------- the article's model
def article_large_net() -> nn.Sequential:
    """The article's ``LargeNet`` (10 → 128 → 64 → 2 with ReLUs) written as an ``nn.Sequential``."""
    return nn.Sequential(nn.Linear(10, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 2))


# ----------------------------------------------------------------------------- stages
def _layer_costs(model: nn.Sequential, input_shape: Sequence[int]) -> list[float]:
    """Forward FLOPs of each layer for one sample (parameter-free layers cost a token 1)."""
    costs, x = [], torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    with torch.no_grad():
        for layer in model:
            with FlopCounterMode(display=False) as counter:
                x = layer(x)
            costs.append(max(1.0, float(counter.get_total_flops())))
    return costs


def stage_boundaries(costs: Sequence[float], num_stages: int) -> list[int]:
    """Cut points ``[0, b1, …, L]`` into ``num_stages`` contiguous, non-empty groups minimising
    the largest group cost (the slowest stage sets a pipeline's pace).  Exact DP; L is small."""
    n = len(costs)
    check_int("num_stages", num_stages, 1, n)
    prefix = np.concatenate([[0.0], np.cumsum(costs)])
    best = {(0, 0): (0.0, None)}
    for k in range(1, num_stages + 1):
        for j in range(k, n - (num_stages - k) + 1):
            options = [(max(best[(k - 1, i)][0], prefix[j] - prefix[i]), i)
                       for i in range(k - 1, j) if (k - 1, i) in best]
            best[(k, j)] = min(options)
    cuts, j = [n], n
    for k in range(num_stages, 0, -1):
        j = best[(k, j)][1]
        cuts.append(j)
    return cuts[::-1]


def split_sequential(model: nn.Sequential, num_stages: int, input_shape: Sequence[int] | None = None,
                     boundaries: Sequence[int] | None = None) -> list[nn.Sequential]:
    """Cut ``model`` into ``num_stages`` consecutive ``nn.Sequential`` stages.

    The stages *share* the model's layers (no copy).  Give ``boundaries`` (``[0, …, L]``) to
    choose the cuts, or ``input_shape`` to balance the stages by measured forward FLOPs;
    otherwise the layers are dealt out in equal counts.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"split_sequential needs an nn.Sequential, got {type(model).__name__}")
    layers = list(model)
    check_int("num_stages", num_stages, 1, len(layers))
    if boundaries is None:
        costs = _layer_costs(model, input_shape) if input_shape is not None else [1.0] * len(layers)
        boundaries = stage_boundaries(costs, num_stages)
    boundaries = list(boundaries)
    if (len(boundaries) != num_stages + 1 or boundaries[0] != 0 or boundaries[-1] != len(layers)
            or any(a >= b for a, b in zip(boundaries, boundaries[1:]))):
        raise ValueError(f"boundaries={boundaries} must rise strictly from 0 to {len(layers)} "
                         f"with {num_stages + 1} entries")
    return [nn.Sequential(*layers[a:b]) for a, b in zip(boundaries, boundaries[1:])]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StagedModel(nn.Module):
    """Stages placed on devices; ``forward`` moves each activation to the next stage's device.

    ``StagedModel(split_sequential(model, 3), get_devices(3))`` is the corrected version of
    the article's ``fc1.to('cuda:0'); fc2.to('cuda:1'); …``: it runs on 1, 2, 3… GPUs or on the
    CPU.  The stages are moved in place (like ``Module.to``).
    """

    def __init__(self, stages: Sequence[nn.Module], devices: Sequence[torch.device | str]):
        super().__init__()
        if len(stages) != len(devices):
            raise ValueError(f"got {len(stages)} stages but {len(devices)} devices; give one device per stage")
        self.devices = [torch.device(d) for d in devices]
        self.stages = nn.ModuleList([s.to(d) for s, d in zip(stages, self.devices)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage, device in zip(self.stages, self.devices):
            x = stage(x.to(device))  # the line the article is missing
        return x

    def __len__(self) -> int:
        return len(self.stages)


def stage_input_shapes(staged: StagedModel, input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """The per-sample input shape of every stage (what crosses each cut)."""
    shapes, x = [], torch.zeros(1, *input_shape, device=staged.devices[0])
    with torch.no_grad():
        for stage, device in zip(staged.stages, staged.devices):
            x = x.to(device)
            shapes.append(tuple(x.shape[1:]))
            x = stage(x)
    return shapes


# ----------------------------------------------------------------------------- GPipe
def ideal_bubble(num_stages: int, micro_batches: int) -> float:
    """GPipe's idle fraction with equal stage times: (S−1)/(M+S−1)."""
    return (num_stages - 1) / (micro_batches + num_stages - 1)


def gpipe_schedule(forward: np.ndarray, backward: np.ndarray) -> dict[str, np.ndarray]:
    """Replay the GPipe schedule on per-cell durations (arrays S×M): start and end of every cell.

    A stage runs its micro-batches in order; forward cell (s, m) waits for (s−1, m); backward
    starts on the last stage after its last forward and flows back, (s, m) waiting for (s+1, m).
    """
    S, M = forward.shape
    f_start, f_end, b_start, b_end = (np.zeros((S, M)) for _ in range(4))
    for s in range(S):
        for m in range(M):
            f_start[s, m] = max(f_end[s - 1, m] if s else 0.0, f_end[s, m - 1] if m else 0.0)
            f_end[s, m] = f_start[s, m] + forward[s, m]
    for s in reversed(range(S)):
        for m in range(M):
            after = b_end[s + 1, m] if s < S - 1 else f_end[s, M - 1]
            b_start[s, m] = max(after, b_end[s, m - 1] if m else f_end[s, M - 1])
            b_end[s, m] = b_start[s, m] + backward[s, m]
    return {"f_start": f_start, "f_end": f_end, "b_start": b_start, "b_end": b_end}


def gpipe_makespan(forward: np.ndarray, backward: np.ndarray) -> float:
    """Length of the GPipe schedule replayed on per-cell durations (see :func:`gpipe_schedule`)."""
    return float(gpipe_schedule(forward, backward)["b_end"].max())


def plot_schedule(report: "PipelineReport", ax=None, title: str | None = None):
    """Gantt chart of the replayed GPipe schedule: one row per stage, forward and backward cells, gaps = bubble."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * report.num_stages))
    sched = gpipe_schedule(report.forward_s, report.backward_s)
    for s in range(report.num_stages):
        for m in range(report.micro_batches):
            for kind, color in (("f", "#4C72B0"), ("b", "#DD8452")):
                start, end = 1e3 * sched[f"{kind}_start"][s, m], 1e3 * sched[f"{kind}_end"][s, m]
                ax.barh(s, end - start, left=start, color=color, edgecolor="white", height=0.8)
                if end - start > 0.04 * 1e3 * report.makespan_s:
                    ax.text((start + end) / 2, s, str(m), ha="center", va="center", color="white", fontsize=8)
    ax.set_yticks(range(report.num_stages), [f"stage {s}" for s in range(report.num_stages)])
    ax.invert_yaxis()
    ax.set(xlabel="time (ms, replayed from measured cell times)",
           title=title or f"GPipe, S={report.num_stages}, M={report.micro_batches}: bubble {100 * report.bubble:.0f}% "
                          f"(ideal {100 * report.ideal_bubble:.0f}%)")
    ax.grid(False)
    return ax.figure, ax


@dataclass
class PipelineReport:
    """What one pipelined training step measured (times in seconds, arrays stage × micro-batch)."""

    num_stages: int
    micro_batches: int
    forward_s: np.ndarray
    backward_s: np.ndarray
    loss: float
    output: torch.Tensor = field(repr=False)

    @property
    def stage_busy_s(self) -> np.ndarray:
        return self.forward_s.sum(1) + self.backward_s.sum(1)

    @property
    def makespan_s(self) -> float:
        """Length of the GPipe schedule replayed on the measured cell times (S real devices)."""
        return gpipe_makespan(self.forward_s, self.backward_s)

    @property
    def bubble(self) -> float:
        """Idle share of S devices over the schedule: 1 − Σ busy / (S · makespan)."""
        return 1.0 - float(self.stage_busy_s.sum()) / (self.num_stages * self.makespan_s)

    @property
    def ideal_bubble(self) -> float:
        return ideal_bubble(self.num_stages, self.micro_batches)

    def summary(self) -> dict:
        return {"stages": self.num_stages, "micro_batches": self.micro_batches,
                "stage_busy_ms": [round(1e3 * t, 3) for t in self.stage_busy_s],
                "makespan_ms": 1e3 * self.makespan_s, "bubble": self.bubble, "ideal_bubble": self.ideal_bubble}


def pipeline_train_step(staged: StagedModel, x: torch.Tensor, y: torch.Tensor, micro_batches: int,
                        loss_fn: Callable = nn.functional.cross_entropy) -> PipelineReport:
    """One GPipe training step: forward all micro-batches in clock order, then backward.

    Leaves the gradient of the *mean* loss over the whole batch in the parameters (the same
    gradient a single device computes), so an optimizer step can follow.  Every cell is timed
    (synchronising CUDA devices), which serialises GPU work: the bubble comes from replaying
    the schedule on those measured times, not from the wall clock of this call.
    """
    S = len(staged)
    check_int("micro_batches", micro_batches, 1, len(x))
    xs, ys = x.tensor_split(micro_batches), y.tensor_split(micro_batches)
    M, n = len(xs), len(x)
    fwd, bwd = np.zeros((S, M)), np.zeros((S, M))
    inputs = [[None] * M for _ in range(S)]
    outputs = [[None] * M for _ in range(S)]
    losses = [None] * M
    for clock in range(M + S - 1):  # GPipe forward: at tick t, stage s works on micro-batch t − s
        for s in range(S):
            m = clock - s
            if not 0 <= m < M:
                continue
            device = staged.devices[s]
            source = xs[m] if s == 0 else outputs[s - 1][m].detach()
            inputs[s][m] = source.to(device).requires_grad_(s > 0)
            _sync(device)
            start = time.perf_counter()
            outputs[s][m] = staged.stages[s](inputs[s][m])
            if s == S - 1:
                losses[m] = loss_fn(outputs[s][m], ys[m].to(device), reduction="sum") / n
            _sync(device)
            fwd[s, m] = time.perf_counter() - start
    grads = [None] * M
    for clock in range(M + S - 1):  # backward flows from the last stage to the first
        for s in reversed(range(S)):
            m = clock - (S - 1 - s)
            if not 0 <= m < M:
                continue
            device = staged.devices[s]
            _sync(device)
            start = time.perf_counter()
            if s == S - 1:
                losses[m].backward()
            else:
                outputs[s][m].backward(grads[m].to(device))
            grads[m] = inputs[s][m].grad if s > 0 else None
            _sync(device)
            bwd[s, m] = time.perf_counter() - start
    out = torch.cat([o.detach() for o in outputs[S - 1]]).cpu()
    return PipelineReport(S, M, fwd, bwd, float(sum(loss.item() for loss in losses)), out)


def timed_pipeline_step(staged: StagedModel, x: torch.Tensor, y: torch.Tensor, micro_batches: int,
                        repeats: int = 3, loss_fn: Callable = nn.functional.cross_entropy) -> PipelineReport:
    """:func:`pipeline_train_step` ``repeats`` times (gradients reset before each) and the report with
    the shortest replayed schedule: the least disturbed by other work on a shared machine.  The
    gradients left in the parameters are those of one step."""
    reports = []
    for _ in range(repeats):
        staged.zero_grad(set_to_none=True)
        reports.append(pipeline_train_step(staged, x, y, micro_batches, loss_fn))
    return min(reports, key=lambda r: r.makespan_s)


def reference_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device | str = "cpu",
                   loss_fn: Callable = nn.functional.cross_entropy) -> tuple[torch.Tensor, float, dict]:
    """Single-device forward + backward of a *copy* of ``model`` on ``device``: (outputs, loss, grads by
    name), returned on the CPU."""
    probe = copy.deepcopy(model).to(device)
    out = probe(x.to(device))
    loss = loss_fn(out, y.to(device))
    loss.backward()
    return (out.detach().cpu(), loss.item(),
            {k: p.grad.detach().cpu().clone() for k, p in probe.named_parameters()})


# ----------------------------------------------------------------------------- several processes
def find_free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MultiProcessResult:
    """Outputs and gradients gathered from the worker processes, and what the run cost."""

    output: torch.Tensor = field(repr=False)
    loss: float
    grads: dict = field(repr=False)
    backend: str
    world_size: int
    startup_s: float          # launch → every process has joined the process group
    wall_s: float             # launch → every process has exited
    rank_busy_s: list[float]  # compute time per rank during the step
    rank_step_s: list[float]  # wall time per rank of the whole step (busy + waiting)

    @property
    def rank_idle_fraction(self) -> list[float]:
        return [1.0 - b / t if t > 0 else 0.0 for b, t in zip(self.rank_busy_s, self.rank_step_s)]


def run_multiprocess_pipeline(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, *, world_size: int = 2,
                              micro_batches: int = 4, boundaries: Sequence[int] | None = None,
                              timeout_s: float = 120.0, threads_per_process: int = 1) -> MultiProcessResult:
    """Run one pipelined training step with one stage per process and gather the results.

    Launches ``world_size`` copies of ``python fedlab_utils/parallel_worker.py`` with the
    environment ``torchrun`` would set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``).  Every process is killed if the run
    exceeds ``timeout_s`` or one of them fails, and the error carries the failing rank's stderr.
    """
    check_int("world_size", world_size, 1, len(model))
    check_int("micro_batches", micro_batches, 1, len(x))
    if boundaries is None:  # balance the stages by measured forward FLOPs
        boundaries = stage_boundaries(_layer_costs(model, tuple(x.shape[1:])), world_size)
    plain = nn.Sequential(*copy.deepcopy(list(model))).cpu()  # torch classes only: the worker imports just torch
    with tempfile.TemporaryDirectory(prefix="fedlab_pipe_") as tmp:
        job = Path(tmp) / "job.pt"
        torch.save({"model": plain, "x": x.cpu(), "y": y.cpu(), "micro_batches": micro_batches,
                    "boundaries": list(boundaries),
                    "timeout_s": timeout_s}, job)
        port, launched = find_free_port(), time.time()
        base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size),
                "OMP_NUM_THREADS": str(threads_per_process), "FEDLAB_LAUNCH_TIME": repr(launched)}
        worker = Path(__file__).resolve().with_name("parallel_worker.py")
        procs, logs = [], []
        for rank in range(world_size):
            log = open(Path(tmp) / f"rank{rank}.log", "w+")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, str(worker), "--job", str(job), "--out", tmp],
                env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}, stdout=log, stderr=subprocess.STDOUT))
        try:
            _wait_all(procs, logs, timeout_s)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for log in logs:
                log.close()
        wall = time.time() - launched
        parts = [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
    grads = {k: v for part in parts for k, v in part["grads"].items()}
    last = parts[-1]
    return MultiProcessResult(last["output"], last["loss"], grads, parts[0]["backend"], world_size,
                              max(p["ready_s"] for p in parts), wall, [p["busy_s"] for p in parts],
                              [p["step_s"] for p in parts])


def _wait_all(procs: list[subprocess.Popen], logs, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        codes = [p.poll() for p in procs]
        failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            r = failed[0]
            raise RuntimeError(f"pipeline worker rank {r} exited with status {codes[r]}:\n{_tail(logs[r])}")
        if all(c == 0 for c in codes):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"pipeline workers did not finish within {timeout_s} s; rank 0 said:\n{_tail(logs[0])}")
        time.sleep(0.02)


def _tail(log, chars: int = 2000) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-chars:]


# ----------------------------------------------------------------------------- split learning
def split_at(model: nn.Sequential, cut: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``(model[:cut], model[cut:])``: the client part and the server part (layers shared)."""
    check_int("cut_layer", cut, 1, len(model) - 1)
    layers = list(model)
    return nn.Sequential(*layers[:cut]), nn.Sequential(*layers[cut:])


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


def splitfed_run(model: nn.Sequential, clients: Sequence[ClientData], test: tuple[torch.Tensor, torch.Tensor], *,
                 cut: int, rounds: int, local: LocalTraining = LocalTraining(), seed: int = 0,
                 codec: Codec | None = None, variant: str = "v1", num_classes: int | None = None,
                 energy_profile: str = "phone-lte", label: str = "SplitFed",
                 loss_fn: Callable = nn.functional.cross_entropy) -> History:
    """SplitFed (Thapa et al., AAAI 2022) simulated on one machine; returns a :class:`History`.

    Every round each client (all take part) receives the client part's weights, then for every
    mini-batch sends the cut activations and labels up and receives the activations' gradient
    down -- each a serialized payload whose ``len()`` is counted -- and finally uploads its
    client-part weights, which are averaged FedAvg-style.  ``variant='v1'`` gives the server one
    copy of its part per client and averages them (SFLV1); ``'v2'`` trains one server part on
    the clients in turn (SFLV2).  Batches follow the same seeded order as
    :func:`fedlab_utils.federated.train_locally`, so with a lossless codec v1 computes exactly
    FedAvg's updates: it changes who computes and what crosses the wire, not what is learned.
    ``client_flops`` counts only the client part (measured with ``FlopCounterMode``).
    """
    check_int("rounds", rounds, 1)
    check_choice("variant", variant, ("v1", "v2"))
    codec, profile = codec or Fp32Codec(), get_profile(energy_profile)
    device = clients[0].x.device
    num_classes = num_classes or int(max(int(c.y.max()) for c in clients)) + 1
    client_part, server_part = (copy.deepcopy(p).to(device) for p in split_at(model, cut))
    global_client, global_server = model_state(client_part), model_state(server_part)
    input_shape = tuple(clients[0].x.shape[1:])
    client_fps = client_training_flops_per_sample(client_part, input_shape)
    full_fps = training_flops_per_sample(nn.Sequential(*client_part, *server_part), input_shape)
    totals = dict.fromkeys(["activation_bytes_up", "label_bytes_up", "weight_bytes_up", "gradient_bytes_down",
                            "weight_bytes_down"], 0)
    history = History(label, profile=profile.name, config={
        "cut": cut, "variant": variant, "rounds": rounds, "num_clients": len(clients), "seed": seed,
        "codec": getattr(codec, "name", repr(codec)), "client_flops_per_sample": client_fps,
        "server_flops_per_sample": full_fps - client_fps, "bytes": totals})
    x_test, y_test = test[0].to(device), test[1].to(device)
    for round_idx in range(1, rounds + 1):
        start = time.perf_counter()
        up = down = processed_total = 0
        down_payload = codec.encode(global_client)
        client_states, server_states, weights, train_losses = [], [], [], []
        for cid, data in enumerate(clients):
            down += len(down_payload)
            totals["weight_bytes_down"] += len(down_payload)
            client_part.load_state_dict(codec.decode(down_payload, global_client), strict=False)
            if variant == "v1" or cid == 0:
                server_part.load_state_dict(global_server, strict=False)
            opt_c = make_optimizer(local.optimizer, client_part.parameters(), local.lr, local.weight_decay)
            opt_s = make_optimizer(local.optimizer, server_part.parameters(), local.lr, local.weight_decay)
            client_part.train()
            server_part.train()
            gen, n = client_generator(seed, round_idx, cid), len(data)
            batch = n if local.batch_size is None else min(local.batch_size, n)
            losses = []
            for _ in range(local.epochs):
                order = torch.randperm(n, generator=gen).to(device)
                for s in range(0, n, batch):
                    idx = order[s:s + batch]
                    # client: forward to the cut, send activations (and labels) up
                    opt_c.zero_grad(set_to_none=True)
                    act = client_part(data.x[idx])
                    act_payload, label_payload = codec.encode({"a": act}), _label_payload(data.y[idx], num_classes)
                    totals["activation_bytes_up"] += len(act_payload)
                    totals["label_bytes_up"] += len(label_payload)
                    up += len(act_payload) + len(label_payload)
                    # server: finish the forward, the loss, the backward; send the cut's gradient down
                    server_in = codec.decode(act_payload, {"a": act})["a"].detach().requires_grad_()
                    opt_s.zero_grad(set_to_none=True)
                    loss = loss_fn(server_part(server_in), data.y[idx])
                    loss.backward()
                    opt_s.step()
                    grad_payload = codec.encode({"g": server_in.grad})
                    totals["gradient_bytes_down"] += len(grad_payload)
                    down += len(grad_payload)
                    # client: finish the backward with the received gradient and step
                    act.backward(codec.decode(grad_payload, {"g": act})["g"])
                    opt_c.step()
                    losses.append(loss.item())
                    processed_total += len(idx)
            weight_payload = codec.encode(model_state(client_part))
            totals["weight_bytes_up"] += len(weight_payload)
            up += len(weight_payload)
            client_states.append(codec.decode(weight_payload, global_client))
            server_states.append(model_state(server_part))
            weights.append(n)
            train_losses.append(float(np.mean(losses)))
        global_client = weighted_average(client_states, weights)
        global_server = weighted_average(server_states, weights) if variant == "v1" else model_state(server_part)
        client_part.load_state_dict(global_client, strict=False)
        server_part.load_state_dict(global_server, strict=False)
        full = nn.Sequential(*client_part, *server_part)
        accuracy, test_loss = evaluate(full, x_test, y_test)
        flops = client_fps * processed_total
        history.records.append(RoundRecord(round_idx, list(range(len(clients))), accuracy, test_loss,
                                           float(np.mean(train_losses)), up, down, flops,
                                           time.perf_counter() - start, profile.energy(flops, up, down)))
    history.model = nn.Sequential(*copy.deepcopy(client_part), *copy.deepcopy(server_part))
    return history


def bytes_vs_local_size(model: nn.Sequential, data: ClientData, test: tuple[torch.Tensor, torch.Tensor], *,
                        cut: int, sizes: Sequence[int], local: LocalTraining = LocalTraining(), seed: int = 0,
                        num_classes: int | None = None) -> dict:
    """Measure one round's bytes per client for SplitFed and FedAvg as the local dataset grows.

    Runs a real one-client round of each on the first ``n`` samples of ``data`` for each ``n``
    in ``sizes`` and reads the payload sizes from their ledgers.
    """
    from .federated import run

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


def energy_by_profile(client_flops: float, bytes_up: float, bytes_down: float) -> dict[str, dict]:
    """Modelled joules (compute, uplink, downlink, total) under every profile of the ledger."""
    result = {}
    for name, profile in PROFILES.items():
        e = profile.energy(client_flops, bytes_up, bytes_down)
        result[name] = {"compute": e.compute, "uplink": e.uplink, "downlink": e.downlink, "total": e.total}
    return result
