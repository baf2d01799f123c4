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
  :mod:`fedlab_utils.lessons.parallel.worker` -- a notebook-defined function cannot be spawned -- and is
  also runnable with ``torchrun --nproc_per_node 2 -m fedlab_utils.lessons.parallel.worker --demo``.
* **split learning for FL** (:func:`splitfed_run`): SplitFed (Thapa et al., AAAI 2022), in
  :mod:`fedlab_utils.lessons.parallel.split_learning`: a protocol of the one federated loop.

The Gantt chart of a pipeline step is :func:`fedlab_utils.lessons.parallel.pipeline.plot_schedule`; timings
synchronise the device first (:func:`fedlab_utils.ledger.timing.synchronize`, CUDA and MPS).
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fedlab_utils.devices import free_port
from fedlab_utils.i18n import N_
from fedlab_utils.ledger.energy import PROFILES
from fedlab_utils.ledger.timing import synchronize
from fedlab_utils.lessons.parallel.worker import write_job
from fedlab_utils.validation import check_int, choice, integer, optional_path, real
from fedlab_utils.viz.fonts import figure_label
from fedlab_utils.viz.plotting import COLORS, legend_outside

__all__ = ["plot_schedule", "split_sequential", "stage_boundaries", "StagedModel",
           "stage_input_shapes", "PipelineReport", "pipeline_train_step", "timed_pipeline_step",
           "gpipe_schedule", "gpipe_makespan", "ideal_bubble", "reference_step",
           "MultiProcessResult", "run_multiprocess_pipeline", "article_large_net", "RULES_05",
           "RELATIONS_05", "radio_awake_joules", "plot_bubble_sweep", "plot_energy_by_profile"]


# ----------------------------------------------------------------------------- notebook 05's parameters
#: Notebook 05's parameters and what is valid for each (``validation.check_parameters``).
RULES_05 = {
    "seed": integer(0),
    "dataset": choice(("mnist5k", "digits", "mnist", "fashion_mnist")),
    "data_dir": optional_path(),
    "num_clients": integer(1, 200),
    "rounds": integer(1),
    "local_epochs": integer(1),
    "batch_size": integer(1),
    "lr": real(0.0, low_inclusive=False),
    "cut_layer": integer(1, 7),
    "splitfed_variant": choice(("v1", "v2")),
    "num_stages": integer(1, 8),
    "micro_batches": integer(1),
    "pipeline_batch": integer(8, 1024),
    "num_processes": integer(1, 4),
    "energy_profile": choice(tuple(PROFILES)),
    "device": lambda name, value: value,  # resolved (and refused with a clear error) by devices.get_device
    "results_path": optional_path(),
}


def _micro_batches_fit(p: dict) -> None:
    if p["micro_batches"] > p["pipeline_batch"]:
        raise ValueError(f"micro_batches={p['micro_batches']} is larger than pipeline_batch={p['pipeline_batch']}: "
                         f"each micro-batch needs at least one sample; valid: 1 .. {p['pipeline_batch']}")


#: Relations between notebook 05's parameters, checked after each one alone.
RELATIONS_05 = (_micro_batches_fit,)


def radio_awake_joules(profile, exchanges: int, wait_s: float, sessions_counted: int = 1) -> dict[str, float]:
    """What per-mini-batch exchanges would add to one client-round's fixed radio cost.

    The ledger prices a client-round as ONE radio session (a promotion and a tail).  Split learning
    exchanges an activation and its gradient every mini-batch, so the radio stays connected in
    between.  ``awake``: the extra joules when each of the ``exchanges`` waits ``wait_s`` seconds
    (the server's round trip) at the radio's connected power (its tail power, Huang et al.'s model);
    ``sessions``: the extra joules if every exchange were an isolated session (gaps longer than the
    tail) instead of the ``sessions_counted`` the ledger priced (one per client-round).  Pass a whole
    run's exchanges and client-rounds to price the run.  Returns both, with one session's joules.
    """
    radio = profile.radio
    return {"session_joules": radio.session_joules,
            "awake": exchanges * wait_s * radio.tail_mw * 1e-3,
            "sessions": max(exchanges - sessions_counted, 0) * radio.session_joules}


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
            synchronize(device)
            start = time.perf_counter()
            outputs[s][m] = staged.stages[s](inputs[s][m])
            if s == S - 1:
                losses[m] = loss_fn(outputs[s][m], ys[m].to(device), reduction="sum") / n
            synchronize(device)
            fwd[s, m] = time.perf_counter() - start
    grads = [None] * M
    for clock in range(M + S - 1):  # backward flows from the last stage to the first
        for s in reversed(range(S)):
            m = clock - (S - 1 - s)
            if not 0 <= m < M:
                continue
            device = staged.devices[s]
            synchronize(device)
            start = time.perf_counter()
            if s == S - 1:
                losses[m].backward()
            else:
                outputs[s][m].backward(grads[m].to(device))
            grads[m] = inputs[s][m].grad if s > 0 else None
            synchronize(device)
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

    Launches ``world_size`` copies of ``python fedlab_utils/lessons/parallel/worker.py`` with the
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
        job = write_job(Path(tmp), plain, x, y, micro_batches, boundaries, timeout_s)  # JSON + tensors, no pickle
        port, launched = free_port(), time.time()
        base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size),
                "OMP_NUM_THREADS": str(threads_per_process), "FEDLAB_LAUNCH_TIME": repr(launched)}
        worker = Path(__file__).resolve().with_name("worker.py")
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
        parts = [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
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


def plot_schedule(report, ax=None, title: str | None = None):
    """Gantt chart of the replayed GPipe schedule of a :class:`PipelineReport`:
    one row per stage, forward and backward cells, gaps = bubble."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * report.num_stages))
    sched = gpipe_schedule(report.forward_s, report.backward_s)
    for s in range(report.num_stages):
        for m in range(report.micro_batches):
            for kind, part, name in (("f", "forward", N_("forward")), ("b", "backward", N_("backward"))):
                start, end = 1e3 * sched[f"{kind}_start"][s, m], 1e3 * sched[f"{kind}_end"][s, m]
                ax.barh(s, end - start, left=start, color=COLORS[part], edgecolor="white", height=0.8,
                        label=figure_label(name) if (s, m) == (0, 0) else None)
                if end - start > 0.04 * 1e3 * report.makespan_s:
                    ax.text((start + end) / 2, s, str(m), ha="center", va="center", color="white", fontsize=8)
    ax.set_yticks(range(report.num_stages), [figure_label(N_("stage {s}")).format(s=s) for s in range(report.num_stages)])
    ax.invert_yaxis()
    ax.set(xlabel=figure_label(N_("time (ms, replayed from measured cell times); white number = micro-batch")),
           title=title or figure_label(N_("GPipe, S={stages}, M={micro}: bubble {bubble:.0f}% (ideal {ideal:.0f}%)")).format(
               stages=report.num_stages, micro=report.micro_batches, bubble=100 * report.bubble,
               ideal=100 * report.ideal_bubble))
    ax.grid(False)
    legend_outside(ax, title=figure_label(N_("pass")))
    return ax.figure, ax


# ----------------------------------------------------------------------------- notebook 05's figures
def plot_bubble_sweep(table, num_stages: int):
    """The measured (replayed) bubble against the ideal ``(S-1)/(M+S-1)`` for each number of
    micro-batches, from a table indexed by M with columns ``measured bubble`` and
    ``ideal (S-1)/(M+S-1)``.  Returns ``(fig, ax)``."""
    import matplotlib.pyplot as plt

    micro = list(table.index)
    fig, ax = plt.subplots()
    ax.plot(micro, 100 * table["measured bubble"], "o-", label=figure_label(N_("measured (replayed schedule)")))
    ax.plot(micro, 100 * table["ideal (S-1)/(M+S-1)"], "s--", label=figure_label(N_("ideal, equal stages")))
    ax.set(xscale="log", xlabel=figure_label(N_("micro-batches M")),
           ylabel=figure_label(N_("bubble: idle share of the devices (%)")), ylim=(0, 100),
           title=figure_label(N_("GPipe bubble with S={stages} stages")).format(stages=num_stages))
    ax.set_xticks(micro, [str(m) for m in micro])
    ax.minorticks_off()
    ax.legend()
    return fig, ax


def plot_energy_by_profile(energy: dict):
    """Bars of each method's modelled total joules under every profile (log scale), from
    ``{method: energy_by_profile(history)}``.  Returns ``(fig, ax)``."""
    import matplotlib.pyplot as plt

    names = list(next(iter(energy.values())))
    fig, ax = plt.subplots()
    for i, method in enumerate(energy):
        ax.bar(np.arange(len(names)) + 0.4 * i, [energy[method][p]["total"] for p in names], 0.4, label=method)
    ax.set(xticks=np.arange(len(names)) + 0.2, yscale="log", ylabel=figure_label(N_("modelled joules, all clients, whole run")),
           title=figure_label(N_("Energy by device profile")))
    ax.set_xticklabels(names)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig, ax
