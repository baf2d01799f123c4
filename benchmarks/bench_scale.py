"""How the loop's cost and memory grow with the number of clients per round (cross-device FL).

The course's default MLP (784-64-10) on mnist5k, every client of a round holding 8 samples
drawn with replacement from the training set (as cross-device clients hold a handful each),
one local epoch of SGD (batch 8), fp32 uplink, FedAvg.  For 100, 1,000 and 10,000 clients per
round, each size runs in its own fresh process (so its peak resident memory is its own):

* ``round_s``: the median wall time of rounds 2 to 4 (the first one warms caches up; the median
  damps what other processes on a shared machine take), each round's in ``round_times_s``;
* ``client_updates_per_s`` and ``s_per_client_update``;
* ``peak_rss_mb``: the process's peak resident set (``resource.getrusage``), imports included;
* ``trainer``: which trainer ``trainer='auto'`` picked, and ``stacks``: how many stacks it trains a
  round in (``VmapTrainer.stack_slices``: one copy of the model per client in a stack, at most
  ``max_stack_bytes``; FedAvg folds each stack's updates into its sum before the next is trained).

Targets (issue 23): 10,000 clients with peak RSS at most 2 GB, and time per client update at
10,000 within 1.5x of that at 1,000.  Where ``flwr[simulation]`` (Ray) is importable, Flower's
simulation engine runs the 1,000-client round in the same run, for a ratio.  Nothing here is
asserted: timings are ratios from one run on a possibly shared machine.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = (100, 1_000, 10_000)
SAMPLES_PER_CLIENT = 8
ROUNDS = 4  # round 1 warms up; the median of the others is timed

SCRIPT = """
import json, resource, statistics, sys
import numpy as np
from fedlab_utils.data import ClientData, load_dataset
from fedlab_utils.core import LocalTraining, run
from fedlab_utils.models import make_model
from fedlab_utils.core import VmapTrainer

n = int(sys.argv[1])
ds = load_dataset("mnist5k", seed=0)
rng = np.random.default_rng(0)
picks = rng.integers(0, len(ds.y_train), size=(n, %(per)d))
clients = [ClientData(ds.x_train[p], ds.y_train[p]) for p in picks]
model = make_model("mlp", ds.input_shape, ds.num_classes, seed=0)
h = run(model, clients, (ds.x_test, ds.y_test), rounds=%(rounds)d, seed=0, trainer="auto", progress=False,
        local=LocalTraining(epochs=1, batch_size=%(per)d, lr=0.05))
last = h.records[-1]
times = [r.wall_time_s for r in h.records]
stacks = len(VmapTrainer().stack_slices(model, n)) if h.config.get("trainer", "").startswith("VmapTrainer") else None
print(json.dumps({"clients": n, "round_s": statistics.median(times[1:]), "round_times_s": times,
                  "trainer": h.config.get("trainer"), "stacks": stacks,
                  "accuracy": last.accuracy, "bytes_up": last.bytes_up,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""" % {"per": SAMPLES_PER_CLIENT, "rounds": ROUNDS}


def one_size(clients: int, timeout_s: int = 1800) -> dict:
    """Run ``clients`` clients for ``ROUNDS`` rounds in a fresh process and read its measurements."""
    env = {**os.environ, "FEDLAB_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(clients)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, env=env)
    if proc.returncode != 0:
        return {"clients": clients, "error": proc.stderr[-1500:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["client_updates_per_s"] = clients / result["round_s"]
    result["s_per_client_update"] = result["round_s"] / clients
    return result


def flower_at(clients: int) -> dict:
    """Flower's simulation engine on the same round, where ``flwr[simulation]`` is installed."""
    if importlib.util.find_spec("flwr") is None or importlib.util.find_spec("ray") is None:
        return {"skipped": True, "reason": "flwr[simulation] (Ray) is not importable here; "
                                           "pip install -e '.[bench]' to compare with Flower's simulation engine"}
    import tempfile

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import bench_loop
    finally:
        sys.path.pop(0)
    task = repr({**bench_loop.FLOWER_TASK, "num_clients": clients, "rounds": 1})
    with tempfile.TemporaryDirectory() as out:
        times, _ = bench_loop._timed_process(bench_loop.FLOWER_SCRIPT, task, out, repeats=1)
    return {"clients": clients, "rounds": 1, "process_s": min(times),
            "note": "a whole fresh process (Ray start, imports, one round of every client)"}


def run() -> dict:  # the entry point benchmarks/run.py calls
    sizes = [one_size(n) for n in SIZES]
    by_n = {s["clients"]: s for s in sizes}
    targets = {}
    big, mid = by_n.get(10_000, {}), by_n.get(1_000, {})
    if "peak_rss_mb" in big:
        targets["peak_rss_mb_at_10000 <= 2048"] = big["peak_rss_mb"]
    if "s_per_client_update" in big and "s_per_client_update" in mid:
        targets["s_per_update_10000_over_1000 <= 1.5"] = big["s_per_client_update"] / mid["s_per_client_update"]
    result = {"task": f"mnist5k, MLP 784-64-10, {SAMPLES_PER_CLIENT} samples per client drawn with replacement, "
                      "1 local epoch SGD lr 0.05 batch 8, fp32 uplink, FedAvg, trainer='auto', "
                      f"median of rounds 2-{ROUNDS} timed",
              "sizes": sizes, "targets": targets, "load_avg": os.getloadavg()}
    result["flower_simulation_1000"] = flower_at(1_000)
    if "process_s" in result["flower_simulation_1000"] and "round_s" in mid:
        result["flower_simulation_1000"]["flower_process_over_our_round"] = (
            result["flower_simulation_1000"]["process_s"] / mid["round_s"])
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
