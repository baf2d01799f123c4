"""Capstone benchmark: notebook 06's runtime with default parameters, the energy-budget planner's
choice per device profile, and the headline factors of that run -> benchmarks/results/capstone.json.

The notebook runs once through the course runner (which writes its results JSON); everything
below is read from that run.  Whether 06's claims hold on seeds 0-19 is measured by
``bench_claims.py`` with the other notebooks.  Wall times on a shared machine are noisy: quote
them as measured here, on this machine.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run() -> dict:
    with tempfile.TemporaryDirectory() as out:
        before, start = _cpu_children(), time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fedlab_utils", "run", "06", "--out", out, "--no-html"],
                              cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "MPLBACKEND": "Agg", "FEDLAB_PROGRESS": "0"})
        wall = time.perf_counter() - start
        cpu = _cpu_children() - before
        if proc.returncode != 0:
            raise RuntimeError(f"notebook 06 failed:\n{proc.stderr[-2000:]}")
        record = json.loads((Path(out) / "results" / "06_capstone.json").read_text())
    metrics = record["metrics"]
    planner = metrics["planner"]
    return {
        "notebook": {"notebook": "06", "wall_s": wall, "cpu_s_user_plus_sys": cpu,
                     "target_s": 60, "includes": "kernel start, imports, execution"},
        "planner_choice_per_profile": {
            profile: (None if choice is None else {"config": choice["config"], "round": choice["round"],
                                                    "joules": choice["joules"], "accuracy": choice["accuracy"]})
            for profile, choice in planner["choices"].items()},
        "planner_target_accuracy": planner["target"],
        "headline": {k: metrics[k] for k in ("accuracy_gap_points", "final_round_gap_points", "uplink_reduction",
                                             "energy_reduction", "lte_floor_fraction", "lte_floor_limited_factor",
                                             "lte_fixed_joules_per_session")},
        "claims": [{"claim": c["claim"], "holds": c["holds"], "margin": c.get("margin")} for c in record["claims"]],
        "parameters": record["parameters"],
    }
