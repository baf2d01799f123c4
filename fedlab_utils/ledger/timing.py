"""Wall-clock timing done right on any device: synchronise first, repeat, keep robust statistics.

GPUs run asynchronously: ``start = perf_counter(); model(x); perf_counter() - start`` on CUDA
or Apple's MPS measures only how long it took to *queue* the kernels.  Every helper here
therefore calls :func:`synchronize` on the device before reading the clock, for CUDA *and* MPS.

* :func:`synchronize` -- wait for the device's queued work (no-op on the CPU);
* :func:`wall_time` -- a context manager: ``with wall_time(device) as t: ...; t.seconds``;
* :func:`time_calls` -- call a function N times after warm-up, keep every time (:class:`TimingStats`);
* :func:`time_interleaved` -- several functions in rotating blocks, so background load on a
  shared machine hits them alike (compare their ``min_s``);
* :func:`benchmark` -- a short kernel via ``torch.utils.benchmark.Timer`` (``blocked_autorange``
  or ``adaptive_autorange``), which picks the number of runs per measurement itself;
* :func:`inference_latency` -- median seconds of one ``no_grad`` forward pass of a model;
* :func:`time_train_step` -- one SGD step in fp32 / bf16 / fp16, eager or ``torch.compile``-d
  (the first compiled call, which compiles, is reported on its own);
* :func:`time_trainer` -- client updates per second of a client trainer for one round.

Timings are *reported*, never asserted: the course's asserted claims are about accuracy,
bytes and FLOPs; speed targets live in ``make bench`` as ratios measured in one run.
"""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from fedlab_utils.validation import check_choice, check_int, check_real

__all__ = ["synchronize", "Stopwatch", "wall_time", "TimingStats", "time_calls", "time_interleaved", "benchmark",
           "inference_latency", "time_train_step", "time_trainer", "AUTORANGE"]

Device = torch.device | str | None

#: ``torch.utils.benchmark.Timer`` strategies :func:`benchmark` can use.
AUTORANGE = ("blocked", "adaptive")


# ----------------------------------------------------------------------------- synchronising
def _as_device(device: Device) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


def synchronize(device: Device = None) -> None:
    """Block until all work queued on ``device`` has finished: ``torch.cuda.synchronize`` on CUDA,
    ``torch.mps.synchronize`` on MPS, nothing on the CPU (or ``None``), whose calls are synchronous."""
    device = _as_device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _clock(device: Device) -> Callable[[], float]:
    """A ``perf_counter`` that first synchronises ``device`` (the timer handed to torch's Timer)."""
    device = _as_device(device)

    def now() -> float:
        synchronize(device)
        return time.perf_counter()

    return now


# ----------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class TimingStats:
    """Seconds of each of ``repeats`` timed calls, with the statistics worth reporting.

    On a shared machine background load only ever *adds* time, so ``min_s`` is the least
    disturbed estimate and ``median_s`` the typical one; compare like with like.
    """

    times: tuple[float, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.times:
            raise ValueError("TimingStats needs at least one time")
        if any(t < 0 for t in self.times):
            raise ValueError(f"times must be non-negative seconds; got {min(self.times)}")

    @property
    def repeats(self) -> int:
        return len(self.times)

    @property
    def min_s(self) -> float:
        return float(min(self.times))

    @property
    def median_s(self) -> float:
        return float(statistics.median(self.times))

    @property
    def mean_s(self) -> float:
        return float(statistics.fmean(self.times))

    def to_dict(self) -> dict[str, float | int]:
        """``{'min_s', 'median_s', 'mean_s', 'repeats'}``: plain numbers for JSON and DataFrames."""
        return {"min_s": self.min_s, "median_s": self.median_s, "mean_s": self.mean_s, "repeats": self.repeats}

    def __getitem__(self, key: str) -> float | int:
        """``stats['min_s']`` works like ``stats.min_s`` (the dict view of older helpers)."""
        return self.to_dict()[key]

    def __repr__(self) -> str:
        return (f"TimingStats(median {1e3 * self.median_s:.3g} ms, min {1e3 * self.min_s:.3g} ms, "
                f"{self.repeats} calls)")


# ----------------------------------------------------------------------------- timing blocks and calls
@dataclass
class Stopwatch:
    """What :func:`wall_time` yields; ``seconds`` is set when the block ends (``None`` inside it)."""

    device: torch.device
    seconds: float | None = None


@contextmanager
def wall_time(device: Device = None) -> Iterator[Stopwatch]:
    """Time a block of code, synchronising ``device`` at both ends.

    >>> with wall_time() as t:
    ...     _ = sum(range(1000))
    >>> t.seconds >= 0
    True
    """
    watch = Stopwatch(_as_device(device))
    clock = _clock(watch.device)
    start = clock()
    try:
        yield watch
    finally:
        watch.seconds = clock() - start


def time_calls(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, device: Device = None) -> TimingStats:
    """Call ``fn()`` ``warmup`` times untimed (allocations, caches, compilation), then ``repeats``
    times, each timed on its own with ``device`` synchronised before and after."""
    check_int("repeats", repeats, 1)
    check_int("warmup", warmup, 0)
    clock = _clock(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return TimingStats(tuple(times))


def _rotated(names: Sequence[str], block: int) -> list[str]:
    shift = block % len(names)
    return list(names[shift:]) + list(names[:shift])


def time_interleaved(fns: Mapping[str, Callable[[], object]], repeats: int = 20, blocks: int = 5, warmup: int = 3,
                     device: Device = None) -> dict[str, TimingStats]:
    """Time several functions **interleaved** so that background load hits them alike.

    Each function is warmed up ``warmup`` times; then ``blocks`` rounds each run every function
    ``repeats`` times, the order rotating by one per block.  Returns ``{name: TimingStats}``
    with ``repeats · blocks`` times each; on a shared machine compare their ``min_s``.
    """
    check_int("repeats", repeats, 1)
    check_int("blocks", blocks, 1)
    check_int("warmup", warmup, 0)
    if not fns:
        raise ValueError("fns is empty; pass {name: callable} with at least one function")
    clock = _clock(device)
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for name in names:
        for _ in range(warmup):
            fns[name]()
    for block in range(blocks):
        for name in _rotated(names, block):
            for _ in range(repeats):
                start = clock()
                fns[name]()
                times[name].append(clock() - start)
    return {n: TimingStats(tuple(t)) for n, t in times.items()}


def benchmark(fn: Callable[[], object], device: Device = None, min_run_time: float = 0.2,
              autorange: str = "blocked", num_threads: int | None = None) -> TimingStats:
    """Per-call seconds of a short kernel measured by ``torch.utils.benchmark.Timer``.

    The Timer chooses how many calls make one measurement (so sub-microsecond kernels are
    timed above the clock's resolution) and runs for at least ``min_run_time`` seconds:
    ``autorange='blocked'`` is ``Timer.blocked_autorange``, ``'adaptive'`` is
    ``Timer.adaptive_autorange`` (stops once the IQR is small).  The clock synchronises
    ``device`` (CUDA or MPS).  ``num_threads`` defaults to torch's current thread count
    (the Timer itself would default to 1 thread).  ``torch.utils.benchmark`` is imported only
    here: it pulls in setuptools (about half a second), which plain timing does not need.
    """
    from torch.utils import benchmark as torch_benchmark

    check_choice("autorange", autorange, AUTORANGE)
    check_real("min_run_time", min_run_time, 0.0, None, low_inclusive=False)
    threads = torch.get_num_threads() if num_threads is None else check_int("num_threads", num_threads, 1)
    timer = torch_benchmark.Timer(stmt="fn()", globals={"fn": fn}, timer=_clock(device), num_threads=threads)
    if autorange == "blocked":
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
    else:
        measurement = timer.adaptive_autorange(min_run_time=min_run_time)
    return TimingStats(tuple(measurement.times))


@torch.no_grad()
def inference_latency(model: nn.Module, x: torch.Tensor, repeats: int = 20, warmup: int = 1) -> float:
    """Median seconds of one forward pass of ``model`` on ``x`` (eval mode, ``no_grad``), on the
    model's own device.  Reported, never asserted."""
    model.eval()
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else x.device
    return time_calls(lambda: model(x), repeats=repeats, warmup=warmup, device=device).median_s


def time_trainer(trainer, model: nn.Module, clients: Sequence, local,
                 repeats: int = 3, seed: int = 0) -> dict:
    """Wall time of one round of local training of ``clients`` by ``trainer`` (one warm-up call first).

    Returns ``{'seconds': median, 'client_updates_per_s': len(clients) / median, 'repeats': ...}``.
    """
    from fedlab_utils.core.training import ClientTransform

    check_int("repeats", repeats, 1)
    device = clients[0].x.device
    model = copy.deepcopy(model).to(device)
    received = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    pairs = list(enumerate(clients))
    transform = ClientTransform()
    trainer(model, received, pairs, local, 1, seed, transform)  # warm-up (allocations, vmap tracing)
    rounds = iter(range(2, 2 + repeats))
    median = time_calls(lambda: trainer(model, received, pairs, local, next(rounds), seed, transform),
                        repeats=repeats, warmup=0, device=device).median_s
    return {"seconds": median, "client_updates_per_s": len(clients) / median, "repeats": repeats}


def time_train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32",
                    compile: bool = False, steps: int = 20, lr: float = 0.05) -> dict:
    """Median wall time of one SGD training step (forward, backward, update) on ``x, y``.

    ``precision`` as in :class:`~fedlab_utils.core.training.LocalTraining`; ``compile=True`` wraps the model in
    ``torch.compile`` and reports the first (compiling) call separately as ``first_call_s``.
    The model is copied; ``x``/``y`` are used on the model's device.
    """
    from fedlab_utils.core.training import autocast_context, backward_and_step, make_optimizer

    check_choice("precision", precision, ("fp32", "bf16", "fp16"))
    check_int("steps", steps, 1)
    model = copy.deepcopy(model)
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision='fp16' needs a CUDA device (got {device}); use 'bf16' or 'fp32'")
    net = torch.compile(model) if compile else model
    optimizer = make_optimizer("sgd", model.parameters(), lr)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, precision):
            loss = F.cross_entropy(net(x), y)
        backward_and_step(loss, optimizer, scaler)
        return float(loss.detach())

    with wall_time(device) as first:
        step()
    stats = time_calls(step, repeats=steps, warmup=0, device=device)
    return {"precision": precision, "compiled": compile, "device": str(device), "batch": len(y),
            "step_ms": 1e3 * stats.median_s, "first_call_s": first.seconds, "steps": steps}


# ----------------------------------------------------------------------------- reading a History
