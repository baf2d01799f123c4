"""Run every ``benchmarks/bench_*.py`` (or those named) and write ``benchmarks/results/<name>.json``.

Each bench module exposes ``run() -> dict``.  Results carry the machine they were measured on;
quote ratios from one run, since wall times on shared machines are noisy.  On a machine where
CUDA is available the file is ``<name>-cuda.json``, so the committed CPU results stay.

    python benchmarks/run.py            # all
    python benchmarks/run.py baseline   # only bench_baseline.py
    python benchmarks/run.py loop       # the loop itself: sequential vs vmap in run(), peak, cold start
    python benchmarks/run.py claims     # every notebook's claims on seeds 0-19 (bench_claims.py; the
                                        # longest: BENCH_CLAIMS_JOBS=N runs N notebooks at a time,
                                        # default one per core; options: python benchmarks/bench_claims.py -h)
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))  # lets bench modules import common.py (benchmarks are scripts, not a package)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(HERE))
    return module


def main(names: list[str]) -> int:
    from common import machine  # noqa: E402  (same folder)

    from fedlab_utils.files import atomic_write_text

    paths = sorted(HERE.glob("bench_*.py"))
    if names:
        paths = [p for p in paths if p.stem.removeprefix("bench_") in names]
    if not paths:
        print(f"no benchmarks match {names}; available: {[p.stem for p in sorted(HERE.glob('bench_*.py'))]}")
        return 2
    for path in paths:
        name = path.stem.removeprefix("bench_")
        print(f"bench {name} ...", flush=True)
        start = time.perf_counter()
        results = load(path).run()
        record = {"benchmark": name, "machine": machine(), "elapsed_s": time.perf_counter() - start,
                  "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results}
        # A machine with CUDA measures the GPU path: its results sit beside the CPU reference files.
        out = HERE / "results" / f"{name}{'-cuda' if record['machine'].get('cuda') else ''}.json"
        atomic_write_text(out, json.dumps(record, indent=2))
        print(f"  -> {out.relative_to(HERE.parent)}: {json.dumps(results)[:300]}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main(sys.argv[1:]))
