"""Shared helpers for benchmarks: timing, machine facts, notebook runtime."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict:
    """What the numbers were measured on (ratios are only comparable within one machine)."""
    return {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "logical_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Median and min wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def time_notebook(name: str) -> dict:
    """Wall time of running one notebook with default parameters via the course runner."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fedlab_utils", "run", name, "--out", out, "--no-html"],
                              cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "MPLBACKEND": "Agg", "FEDLAB_PROGRESS": "0"})
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"notebook {name} failed:\n{proc.stderr[-2000:]}")
    return {"notebook": name, "wall_s": seconds, "includes": "kernel start, imports, execution"}
