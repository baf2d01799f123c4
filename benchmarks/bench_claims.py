"""Do the notebooks' claims hold on every seed with default parameters?  -> benchmarks/results/claims.json

Runs every notebook (``notebooks/[0-9][0-9]_*.ipynb``) for seeds 0-19 with otherwise default
parameters through the sweep machinery (:mod:`fedlab_utils.course.sweep`: one process per run,
``--jobs`` at a time) and writes, per notebook and claim: the seeds run, how many held, the
hold rate, the failing seeds, and the worst (smallest) measured margin with its seed.  A claim's
margin is what the notebook passes to ``Claims.check(..., margin=...)``: the signed distance from
the claim's threshold in the claim's own units, ``>= 0`` exactly when it holds (see
``fedlab_utils/course/claims.py``); claims without one report ``worst_margin: null``.

By default every claim is evaluated without raising (``--claims record``, the record-everything
mode), so one run measures every claim's margin even where an earlier claim fails; with
``--claims auto`` a failing claim stops its notebook as it would for a student, and the failure is
recorded with its error.  A notebook that fails (any error) is recorded with the error, never
stops the benchmark.

    python benchmarks/run.py claims                          # as make bench: seeds 0-19, all notebooks
    python benchmarks/bench_claims.py --seeds 0:20 --jobs 16 --out benchmarks/results/claims.json
    python benchmarks/bench_claims.py --notebooks 01 04 --seeds 0,6,9 --jobs 2 --out /tmp/claims.json

Uses ``sys.executable`` for the runs, so it works with whatever Python and torch it is started
with; set ``CUDA_VISIBLE_DEVICES=`` to keep the notebooks on the CPU.  Each run gets
``OMP_NUM_THREADS = cores // jobs`` unless it is set.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_SEEDS = list(range(20))


def select_notebooks(names: list[str] | None) -> list[Path]:
    from fedlab_utils.course import find_notebooks

    return find_notebooks(names or [])


def summarize_claims(records: list[dict]) -> dict:
    """Per claim text: seeds run, held, hold rate, failing seeds, worst margin and its seed."""
    claims: dict[str, dict] = {}
    observations: dict[str, list] = defaultdict(list)
    for record in records:
        seed = record["parameters"]["seed"]
        results = record.get("results") or {}
        for item in results.get("claims", []):
            entry = claims.setdefault(item["claim"], {"claim": item["claim"], "seeds": [], "held": 0,
                                                      "failing_seeds": [], "worst_margin": None,
                                                      "worst_margin_seed": None, "worst_failure": None})
            entry["seeds"].append(seed)
            if item["holds"]:
                entry["held"] += 1
            else:
                entry["failing_seeds"].append(seed)
                if entry["worst_failure"] is None:
                    entry["worst_failure"] = {"seed": seed, "measured": item.get("measured")}
            margin = item.get("margin")
            if margin is not None and (entry["worst_margin"] is None or margin < entry["worst_margin"]):
                entry["worst_margin"], entry["worst_margin_seed"] = margin, seed
        for item in results.get("observations", []):
            observations[item["observation"]].append({"seed": seed, **item.get("measured", {})})
    for entry in claims.values():
        entry["hold_rate"] = entry["held"] / len(entry["seeds"])
    return {"claims": list(claims.values()),
            "observations": [{"observation": k, "per_seed": v} for k, v in observations.items()]}


def measure(seeds: list[int], notebooks: list[Path], jobs: int, work: Path, claims_policy: str = "record",
            timeout: float | None = None) -> dict:
    from fedlab_utils.course import Point, point_slug, run_points

    points = [Point(nb, {"seed": seed}, work / nb.stem / point_slug({"seed": seed}))
              for nb in notebooks for seed in seeds]
    start = time.perf_counter()
    records = run_points(points, jobs=jobs, claims_policy=claims_policy, timeout=timeout, progress=True)
    by_notebook: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_notebook[record["notebook"]].append(record)
    result = {"seeds": seeds, "claims_policy": claims_policy, "jobs": jobs,
              "wall_s": round(time.perf_counter() - start, 1), "notebooks": {}}
    all_hold = True
    for name, runs in by_notebook.items():
        failed = [{"seed": r["parameters"]["seed"], "error": r["error"]} for r in runs if r["status"] != "ok"]
        summary = summarize_claims(runs)
        all_hold &= not failed and all(c["hold_rate"] == 1.0 for c in summary["claims"])
        seconds = [r["seconds"] for r in runs if r["status"] == "ok"]
        result["notebooks"][name] = {
            "runs": len(runs), "ok": len(runs) - len(failed), "failed_runs": failed,
            "seconds_per_run": {"min": min(seconds), "max": max(seconds)} if seconds else None,
            **summary}
    result["every_claim_holds_on_every_seed"] = bool(all_hold)
    return result


def run(seeds: list[int] | None = None, notebooks: list[str] | None = None, jobs: int | None = None,
        claims_policy: str = "record", work: Path | None = None) -> dict:
    """Entry point for ``benchmarks/run.py``: seeds 0-19, every notebook, one job per core."""
    seeds = list(DEFAULT_SEEDS if seeds is None else seeds)
    jobs = jobs or int(os.environ.get("BENCH_CLAIMS_JOBS", 0)) or os.cpu_count() or 1
    if work is not None:
        return measure(seeds, select_notebooks(notebooks), jobs, work, claims_policy)
    with tempfile.TemporaryDirectory(prefix="bench-claims-") as tmp:
        return measure(seeds, select_notebooks(notebooks), jobs, Path(tmp), claims_policy)


def parse_seeds(text: str) -> list[int]:
    from fedlab_utils.course import parse_values

    try:
        seeds = parse_values("seed", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: seeds are integers >= 0 (e.g. 0:20 or 0,1,5)")
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=parse_seeds, default=DEFAULT_SEEDS, help="a:b (half-open) or a,b,c (default 0:20)")
    parser.add_argument("--notebooks", nargs="*", default=None, help="names or prefixes (default: all)")
    parser.add_argument("--jobs", type=int, default=None, help="runs at the same time (default: one per core)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "claims.json")
    parser.add_argument("--claims", choices=("record", "auto"), default="record",
                        help="record (default): evaluate every claim without raising; auto: as a student runs it")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the executed notebooks here (resumable); default: a temporary folder")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before one run is stopped")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs {args.jobs} is not valid; use 1 or more")
    sys.path.insert(0, str(HERE))
    from common import machine

    from fedlab_utils.files import atomic_write_text

    start = time.perf_counter()
    notebooks = select_notebooks(args.notebooks)
    jobs = args.jobs or os.cpu_count() or 1
    if args.work is not None:
        results = measure(args.seeds, notebooks, jobs, args.work, args.claims, args.timeout)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-claims-") as tmp:
            results = measure(args.seeds, notebooks, jobs, Path(tmp), args.claims, args.timeout)
    record = {"benchmark": "claims", "machine": machine(), "elapsed_s": time.perf_counter() - start,
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results}
    atomic_write_text(args.out, json.dumps(record, indent=2))
    print(f"-> {args.out}")
    for name, nb in results["notebooks"].items():
        weak = [c for c in nb["claims"] if c["hold_rate"] < 1]
        print(f"{name}: {nb['ok']}/{nb['runs']} runs ok, {len(nb['claims']) - len(weak)}/{len(nb['claims'])} "
              "claims hold on every seed")
        for c in weak:
            print(f"   ✗ {c['hold_rate']:.0%} (fails on seeds {c['failing_seeds']}): {c['claim']}")
        for f in nb["failed_runs"]:
            print(f"   run failed, seed {f['seed']}: {(f['error'] or '').splitlines()[0][:200]}")
    return 0 if results["every_claim_holds_on_every_seed"] else 1


if __name__ == "__main__":
    sys.exit(main())
