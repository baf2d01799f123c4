"""The federated loop's own speed (issue 15): sequential vs vmap *inside* ``run()``, fraction of peak,
and a fresh process end to end.

The task is the issue's: mnist5k, SGD lr 0.05, batch 32, one local epoch, every client every round,
the fp32 uplink.  For each configuration both trainers run ``run()`` in alternating blocks (so
background load hits them alike); a round's time is ``RoundRecord.wall_time_s`` (the whole round:
training, uplink, aggregation, evaluation), the first round of each run is left out as warm-up,
and the *steady* time is the median of the rest.  Reported per configuration:

* steady round seconds and client updates per second for each trainer, and their ratio;
* the **fraction of peak**: ledger FLOPs of the round ÷ round seconds ÷ the machine's measured
  fp32 matmul peak (a 2048² ``torch.mm``, best of several, on torch's threads);
* a fresh Python process running (32 clients, 3 rounds) end to end, for ``trainer='auto'`` and
  the sequential trainer (interpreter start, imports, data, model, three rounds);
* Flower's simulation engine on the same task when ``flwr[simulation]`` (Ray) is importable
  (``pip install -e '.[bench]'``); otherwise it is skipped and the result says so;
* what bounds the two targets that depend on the machine (``bounds``): the fraction of peak the
  vmap training at 100×40 would reach if it were nothing but its matrix products, at the speed
  torch's kernels give them (:func:`kernel_ceiling`), and the seconds a fresh ``python`` needs
  for ``import torch`` alone (:func:`import_floor`), with Flower's time over that floor.

Timings are ratios from one run on a possibly shared machine: the load average before and after
is recorded with them.  Nothing here is asserted.
"""
from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import time

import torch

from fedlab_utils.core import LocalTraining
from fedlab_utils.core import run as federated_run
from fedlab_utils.data import client_data, load_dataset, partition
from fedlab_utils.devices import get_device
from fedlab_utils.ledger import time_calls
from fedlab_utils.models import make_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDE = (200, 200)  # the MLP 784-200-200-10
DEFAULT = (64,)    # the course's default MLP 784-64-10
CONFIGS = [  # (name, hidden, clients, partition)
    ("mlp200x2_32x125", WIDE, 32, "iid"),
    ("mlp200x2_100x40", WIDE, 100, "iid"),
    ("mlp64_100x40", DEFAULT, 100, "iid"),
    ("mlp200x2_100_dirichlet0.3", WIDE, 100, "dirichlet"),
    ("mlp64_100_dirichlet0.3", DEFAULT, 100, "dirichlet"),
]
TRAINERS = ("sequential", "vmap")

E2E_SCRIPT = """
import sys
from fedlab_utils.data import client_data, load_dataset, partition
from fedlab_utils.core import LocalTraining, run
from fedlab_utils.models import make_model
import torch
torch.manual_seed(0)
ds = load_dataset("mnist5k", seed=0)
clients = client_data(ds, partition(ds.y_train, 32, "iid", seed=0), sys.argv[2])
h = run(make_model("mlp", ds.input_shape, ds.num_classes, hidden=(200, 200)), clients, (ds.x_test, ds.y_test),
        rounds=3, local=LocalTraining(lr=0.05, batch_size=32), trainer=sys.argv[1], progress=False)
print(h.config["trainer"], h.accuracy[-1])
"""


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 10) -> dict:
    """The device's fp32 matmul rate: best of ``repeats`` ``n×n @ n×n`` products (4096² on a GPU)."""
    n = 4096 if device.type == "cuda" else n
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    stats = time_calls(lambda: torch.mm(a, b), repeats=repeats, warmup=2, device=device)
    return {"n": n, "gflops": 2 * n ** 3 / stats.min_s / 1e9, "threads": torch.get_num_threads(), "device": str(device)}


def steady_rounds(ds, hidden, num_clients: int, method: str, device: torch.device, rounds: int = 5,
                  blocks: int = 2) -> dict:
    """Both trainers on one configuration, in alternating blocks; per trainer the steady round times."""
    parts = partition(ds.y_train, num_clients, method, alpha=0.3, seed=0)
    clients = client_data(ds, parts, device)
    torch.manual_seed(0)
    model = make_model("mlp", ds.input_shape, ds.num_classes, hidden=hidden)
    local = LocalTraining(lr=0.05, batch_size=32)
    times: dict[str, list[float]] = {t: [] for t in TRAINERS}
    flops, accuracy, ran = {}, {}, {}
    for block in range(blocks):
        for name in (TRAINERS if block % 2 == 0 else TRAINERS[::-1]):
            h = federated_run(model, clients, (ds.x_test, ds.y_test), rounds=rounds, local=local, trainer=name, progress=False)
            times[name] += [r.wall_time_s for r in h.records[1:]]
            flops[name] = h.records[-1].client_flops
            accuracy[name], ran[name] = h.accuracy[-1], h.config.get("trainer", name)
    sizes = [len(p) for p in parts]
    out = {"clients": num_clients, "partition": method, "hidden": list(hidden),
           "client_sizes": {"min": min(sizes), "median": statistics.median(sizes), "max": max(sizes)},
           "round_flops": flops["vmap"], "final_accuracy": accuracy}
    for name in TRAINERS:
        med = statistics.median(times[name])
        out[name] = {"trainer": ran[name], "steady_round_s": med, "min_round_s": min(times[name]),
                     "client_updates_per_s": num_clients / med, "rounds_timed": len(times[name])}
    out["vmap_speedup"] = out["sequential"]["steady_round_s"] / out["vmap"]["steady_round_s"]
    return out


MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::baddbmm_", "aten::matmul"}


def kernel_ceiling(ds, hidden, num_clients: int, device: torch.device, peak_gflops: float, repeats: int = 5) -> dict:
    """How close to peak *any* schedule built on torch's own matmul kernels could get.

    The vmap trainer's local training of one round (the trainer call alone: no uplink,
    aggregation or evaluation) runs under ``torch.profiler``; the time spent inside its matrix
    products (``mm``/``addmm``/``bmm``/``baddbmm``, outermost calls only) is summed.  The stack holds
    weights (``stack='weights'``), so these products are exactly the ones the ledger counts: ledger
    FLOPs ÷ that time ÷ peak is the fraction of peak a round would reach if it did nothing but one
    client-by-client SGD's matrix products, at the speed torch's kernels deliver for these shapes.
    Medians over ``repeats`` calls.
    """
    from torch.profiler import ProfilerActivity, profile

    from fedlab_utils.core import ClientTransform, VmapTrainer
    from fedlab_utils.core.vmap_trainer import _mlp_layers
    from fedlab_utils.ledger import mlp_training_flops_per_sample

    clients = client_data(ds, partition(ds.y_train, num_clients, "iid", seed=0), device)
    torch.manual_seed(0)
    model = make_model("mlp", ds.input_shape, ds.num_classes, hidden=hidden).to(device)
    received = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pairs, local, trainer = list(enumerate(clients)), LocalTraining(lr=0.05, batch_size=32), VmapTrainer(stack="weights")
    flops = mlp_training_flops_per_sample(_mlp_layers(model)) * sum(len(c) for c in clients)
    trainer(model, received, pairs, local, 1, 0, ClientTransform())  # warm-up
    walls, kernels = [], []
    for r in range(repeats):
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            trainer(model, received, pairs, local, 2 + r, 0, ClientTransform())
            if device.type == "cuda":
                torch.cuda.synchronize()
            walls.append(time.perf_counter() - start)
        end, busy = -1, 0.0
        for e in sorted((e for e in prof.events() if e.name.startswith("aten::")), key=lambda e: e.time_range.start):
            if e.time_range.start >= end:  # outermost aten calls only
                end = e.time_range.end
                if e.name in MATMULS:
                    busy += (e.device_time_total if device.type == "cuda" else e.time_range.end - e.time_range.start) / 1e6
        kernels.append(busy)
    wall, kernel = statistics.median(walls), statistics.median(kernels)
    peak = peak_gflops * 1e9
    return {"clients": num_clients, "hidden": list(hidden), "training_flops": flops,
            "training_s": wall, "matmul_kernel_s": kernel, "matmul_share_of_training": kernel / wall,
            "training_fraction_of_peak": flops / wall / peak, "matmul_only_fraction_of_peak": flops / kernel / peak,
            "note": "training under the profiler (slightly slower than unprofiled); matmul_only_fraction_of_peak "
                    "is the ceiling of a round that does nothing but these matrix products with torch's kernels"}


def import_floor(repeats: int = 5) -> dict:
    """Seconds a fresh ``python`` needs to start, ``import torch`` and exit (best of ``repeats``): plainly,
    and with the garbage collector paused during the import and the result frozen (``gc.freeze()``, a
    choice left to the caller: the package no longer does it on import); and to import
    ``fedlab_utils.core.loop``.
    The faster of the two torch imports is the floor under any fresh-process run of a torch loop."""
    out = {}
    for name, script in (("python_start", "pass"), ("import_torch", "import torch"),
                         ("import_torch_gc_paused", "import gc; gc.disable(); import torch; gc.freeze(); gc.enable()"),
                         ("import_fedlab_utils_federated", "import fedlab_utils.core.loop")):
        times, _ = _timed_process(script + "\nprint('ok')", repeats=repeats)
        out[f"{name}_min_s"] = min(times)
    return out


def _timed_process(script: str, *args: str, repeats: int) -> tuple[list[float], str]:
    env = {**os.environ, "FEDLAB_PROGRESS": "0", "FLWR_TELEMETRY_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
    times, said = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"fresh-process run failed:\n{proc.stderr[-2000:]}")
        said = proc.stdout.strip().splitlines()[-1]
    return times, said


def fresh_process(trainer: str, device: torch.device, repeats: int = 3) -> dict:
    """Seconds from spawning ``python`` to its exit, running (32 clients, 3 rounds) with ``trainer``."""
    times, said = _timed_process(E2E_SCRIPT, trainer, str(device), repeats=repeats)
    return {"trainer": said.split()[0], "final_accuracy": float(said.split()[-1]), "min_s": min(times),
            "median_s": statistics.median(times), "repeats": repeats}


FLOWER_TASK = dict(num_clients=32, rounds=3, partition="iid", seed=0)  # notebook 00's MLP and data, 32 clients
OURS_SCRIPT = """
import sys
from fedlab_utils.deploy import DeploymentConfig, simulate
h = simulate(DeploymentConfig(**eval(sys.argv[1])), trainer=sys.argv[2])
print(h.config["trainer"], " ".join(str(a) for a in h.accuracy))
"""
FLOWER_SCRIPT = """
import json, sys
from flwr.simulation import run_simulation
from fedlab_utils.deploy import DeploymentConfig, make_client_app, make_server_app
config = DeploymentConfig(**eval(sys.argv[1]), out_dir=sys.argv[2], round_timeout=600.0, node_wait=600.0)
run_simulation(make_server_app(config), make_client_app(config), num_supernodes=config.num_clients,
               backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
records = json.load(open(sys.argv[2] + "/flower_rounds.json"))["records"]
print("flower", " ".join(str(r["accuracy"]) for r in records))
"""


def flower_simulation(repeats: int = 2) -> dict:
    """The same task, each in a fresh process: the course's ``run()`` (via ``flower.simulate``)
    and Flower's simulation engine (Ray) running the course's own ClientApp/ServerApp
    (``flwr.simulation.run_simulation``, 32 virtual SuperNodes).  Needs ``flwr[simulation]``;
    without Ray this part is skipped and says so."""
    if importlib.util.find_spec("flwr") is None or importlib.util.find_spec("ray") is None:
        return {"skipped": True, "reason": "flwr[simulation] (Ray) is not importable here; "
                                           "pip install -e '.[bench]' to compare with Flower's simulation engine"}
    import tempfile

    import flwr
    import ray

    task = repr(FLOWER_TASK)
    result = {"task": {**FLOWER_TASK, "dataset": "mnist5k", "model": "mlp 784-64-10", "lr": 0.05, "batch_size": 32},
              "flwr": flwr.__version__, "ray": ray.__version__, "repeats": repeats}
    with tempfile.TemporaryDirectory() as out:
        flower_times, flower_said = _timed_process(FLOWER_SCRIPT, task, out, repeats=repeats)
    flower_acc = [float(a) for a in flower_said.split()[1:]]
    result["flower_simulation"] = {"min_s": min(flower_times), "median_s": statistics.median(flower_times),
                                   "accuracy": flower_acc}
    for trainer in ("sequential", "auto"):
        times, said = _timed_process(OURS_SCRIPT, task, trainer, repeats=repeats)
        acc = [float(a) for a in said.split()[1:]]
        result[f"ours_{trainer}"] = {"trainer": said.split()[0], "min_s": min(times),
                                     "median_s": statistics.median(times), "accuracy": acc,
                                     "max_accuracy_gap_vs_flower": max(abs(a - b) for a, b in zip(acc, flower_acc)),
                                     "flower_over_ours": min(flower_times) / min(times)}
    result["flower_over_ours"] = result["ours_auto"]["flower_over_ours"]
    return result


def run_bench() -> dict:
    device = get_device("auto")
    result = {"device": str(device), "torch_threads": torch.get_num_threads(), "load_avg_before": _load()}
    result["matmul_peak"] = matmul_peak(device)
    ds = load_dataset("mnist5k", seed=0)
    configs = {}
    for name, hidden, k, method in CONFIGS:
        row = steady_rounds(ds, hidden, k, method, device)
        for trainer in TRAINERS:
            row[trainer]["fraction_of_peak"] = (row["round_flops"] / row[trainer]["steady_round_s"]
                                                / (result["matmul_peak"]["gflops"] * 1e9))
        configs[name] = row
        print(f"  {name}: vmap {row['vmap_speedup']:.2f}x, vmap at {100 * row['vmap']['fraction_of_peak']:.0f}% "
              f"of peak", flush=True)
    result["configs"] = configs
    result["kernel_ceiling_mlp200x2_100x40"] = ceiling = kernel_ceiling(ds, WIDE, 100, device,
                                                                          result["matmul_peak"]["gflops"])
    print(f"  kernel ceiling at 100x40: matmuls alone would reach {100 * ceiling['matmul_only_fraction_of_peak']:.0f}% "
          f"of peak", flush=True)
    result["import_floor"] = floor = import_floor()
    result["fresh_process_32x3"] = {t: fresh_process(t, device) for t in ("auto", "sequential")}
    torch_floor = min(floor["import_torch_min_s"], floor["import_torch_gc_paused_min_s"])
    for row in result["fresh_process_32x3"].values():
        row["above_import_torch_s"] = row["min_s"] - torch_floor
    result["flower_simulation"] = flower_simulation()
    if not result["flower_simulation"].get("skipped"):
        result["flower_simulation"]["flower_over_import_torch"] = (result["flower_simulation"]["flower_simulation"]["min_s"]
                                                                   / torch_floor)
    result["peak_after"] = matmul_peak(device)
    result["load_avg_after"] = _load()
    result["targets"] = {
        "vmap_speedup_mlp200x2_100x40 >= 2": configs["mlp200x2_100x40"]["vmap_speedup"],
        "vmap_speedup_mlp200x2_32x125 >= 2": configs["mlp200x2_32x125"]["vmap_speedup"],
        "vmap_speedup_mlp64_100x40 >= 3": configs["mlp64_100x40"]["vmap_speedup"],
        "vmap_speedup_dirichlet0.3 >= 1.5": min(configs["mlp200x2_100_dirichlet0.3"]["vmap_speedup"],
                                                configs["mlp64_100_dirichlet0.3"]["vmap_speedup"]),
        "vmap_fraction_of_peak_mlp200x2_100x40 >= 0.4": configs["mlp200x2_100x40"]["vmap"]["fraction_of_peak"],
        "fresh_process_32x3_auto_s <= 0.6": result["fresh_process_32x3"]["auto"]["min_s"],
    }
    result["bounds"] = {  # what limits the machine-dependent targets (fraction of peak, fresh process, vs Flower)
        "matmul_only_fraction_of_peak_mlp200x2_100x40": ceiling["matmul_only_fraction_of_peak"],
        "import_torch_min_s": torch_floor,
    }
    if not result["flower_simulation"].get("skipped"):
        result["targets"]["flower_simulation_over_ours >= 20"] = result["flower_simulation"]["flower_over_ours"]
    result["note"] = ("steady round = median RoundRecord.wall_time_s after the first round, both trainers in "
                      "alternating blocks; fraction of peak = ledger FLOPs / round seconds / matmul peak; "
                      "the load average (2 cores shared) says how busy the machine was")
    return result


def run() -> dict:  # the entry point benchmarks/run.py calls
    return run_bench()


if __name__ == "__main__":
    import json

    print(json.dumps(run_bench(), indent=2))
