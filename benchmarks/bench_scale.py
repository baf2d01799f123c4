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
10,000 within 1.5x of that at 1,000.  ``codecs`` (issue 30): the same 10,000-client round with the
``q8`` and ``ef:topk:0.01`` uplinks, which declare that they fold (their decoded updates may be
averaged in any grouping), so the vmap path encodes and averages them stack by stack as it does
fp32: peak RSS at most 2 GB each, and time per client update within 1.5x of fp32's at 10,000,
measured in the same run.  Error feedback keeps one dense float32 residual per client that has sent
(``residual_mb``: 4 bytes per parameter per client), the algorithm's own state, which no folding can
save: its :class:`~fedlab_utils.compression.codecs.ResidualStore` keeps 256 MiB of them in RAM
(``residual_ram_bytes``, inside peak RSS) and the rest in an unnamed temporary file read and written
with ``preadv``/``pwritev`` (``residual_file_bytes``: held by the kernel's page cache or the disk, not
in the process's resident set), so peak RSS alone does not count them.  Two controls, without
targets: ``floor``, the same round with a codec that does no work but has no native fold (each decoded
row is the update itself, 1-byte payloads, folded by a multiply and an add per client), what the
folded path costs a codec of the user's own; and ``ef:floor``, error feedback around a codec that
sends and folds nothing (each client's whole update stays in its residual): reading, correcting and
writing 10,000 residuals with no compression work at all, the least that error feedback around any
codec costs here.  fp32 takes another path (its rows are sent as they lie, never copied).
fp32 and the codecs run ``CODEC_REPEATS`` times in turn and their median round times are compared
(:func:`codecs_at`).  ``engines``: at 100 and 1,000 clients per round, ``run()`` and Flower's
simulation runtime (Ray, the ``[scale]`` extra) run the same task in the same run
(:func:`engines_at`): round time, client updates per second and peak RSS of both, and their
ratios.  Nothing here is asserted: timings are ratios from one run on a possibly shared machine.
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

n, uplink = int(sys.argv[1]), sys.argv[2]


class Floor:  # a folding codec that does no work: the folded path's own cost
    folds, name = True, "floor"

    def encode(self, update, client_id=0):
        return b"x"

    def decode(self, payload, template):
        raise NotImplementedError("the floor codec is folded only")

    def encode_rows(self, rows, client_ids, template):
        return [b"x"] * len(client_ids), rows


class DropAll(Floor):  # sends nothing, folds nothing: error feedback around it keeps every update
    def folds_rows(self, template):
        return True

    def fold_rows(self, rows, client_ids, template, weights, average, keep_dropped=False):
        return [b"x"] * len(client_ids), [True] * len(client_ids)


from fedlab_utils.compression import ErrorFeedback
from fedlab_utils.core import registry
controls = {"floor": Floor, "ef:floor": lambda: ErrorFeedback(DropAll())}
codec = controls[uplink]() if uplink in controls else registry.resolve_codec(uplink, "uplink")
ds = load_dataset("mnist5k", seed=0)
rng = np.random.default_rng(0)
picks = rng.integers(0, len(ds.y_train), size=(n, %(per)d))
clients = [ClientData(ds.x_train[p], ds.y_train[p]) for p in picks]
model = make_model("mlp", ds.input_shape, ds.num_classes, seed=0)
h = run(model, clients, (ds.x_test, ds.y_test), rounds=%(rounds)d, seed=0, trainer="auto", progress=False,
        local=LocalTraining(epochs=1, batch_size=%(per)d, lr=0.05), uplink=codec)
last = h.records[-1]
store = getattr(codec, "residuals", None)
spilled = {"residual_file_bytes": store.file_bytes, "residual_ram_bytes": store.ram_row_bytes} \
    if hasattr(store, "file_bytes") else {}
times = [r.wall_time_s for r in h.records]
stacks = len(VmapTrainer().stack_slices(model, n)) if h.config.get("trainer", "").startswith("VmapTrainer") else None
print(json.dumps({"clients": n, "uplink": uplink, "round_s": statistics.median(times[1:]), "round_times_s": times,
                  "trainer": h.config.get("trainer"), "stacks": stacks,
                  "accuracy": last.accuracy, "bytes_up": last.bytes_up,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **spilled}))
""" % {"per": SAMPLES_PER_CLIENT, "rounds": ROUNDS}


CODECS = ("q8", "ef:topk:0.01", "floor", "ef:floor")  # at 10,000 clients, against fp32 in the same run
PARAMETERS = 50_890  # the MLP 784-64-10


def one_size(clients: int, uplink: str = "fp32", timeout_s: int = 1800) -> dict:
    """Run ``clients`` clients for ``ROUNDS`` rounds with ``uplink`` in a fresh process and read its measurements."""
    env = {**os.environ, "FEDLAB_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(clients), uplink], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout_s, env=env)
    if proc.returncode != 0:
        return {"clients": clients, "uplink": uplink, "error": proc.stderr[-1500:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["client_updates_per_s"] = clients / result["round_s"]
    result["s_per_client_update"] = result["round_s"] / clients
    return result


FLOWER_SIZES = (100, 1_000)
FLOWER_ROUNDS = 3  # round 1 starts Ray's workers; the median of the others is timed

SAME_TASK_SCRIPT = """
import json, resource, statistics, sys
from fedlab_utils.deploy import DeploymentConfig, simulate

config = DeploymentConfig(**json.loads(sys.argv[1]))
h = simulate(config, trainer="auto")
times = [r.wall_time_s for r in h.records]
print(json.dumps({"round_s": statistics.median(times[1:]), "round_times_s": times, "trainer": h.config.get("trainer"),
                  "accuracy": h.accuracy, "bytes_up": [r.bytes_up for r in h.records],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def flower_task(clients: int) -> dict:
    """The task both engines run: the course's deployment task (mnist5k, the MLP, iid shares of the
    training set, fp32 uplink, FedAvg) with ``clients`` clients, every one sampled each round."""
    return dict(num_clients=clients, rounds=FLOWER_ROUNDS, local_epochs=1, batch_size=8, lr=0.05, seed=0,
                round_timeout=3600.0, node_wait=600.0)


def ours_on(task: dict, timeout_s: int = 1800) -> dict:
    """``run()`` (trainer='auto', the vmap fast path) on ``task``, in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", SAME_TASK_SCRIPT, json.dumps(task)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout_s, env={**os.environ, "FEDLAB_PROGRESS": "0"})
    if proc.returncode != 0:
        return {"error": proc.stderr[-1500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def flower_simulation_on(task: dict) -> dict:
    """The course's ServerApp and ClientApp on Flower's simulation runtime (Ray), on ``task``.

    Round time: between consecutive ``round`` records the ServerApp writes (median of rounds 2..);
    peak RSS: the largest sum, sampled every 0.25 s, of the resident memory of every process of the
    federation (SuperLink, simulation process, Ray's daemons and workers)."""
    import statistics
    import tempfile
    import threading

    import psutil

    from fedlab_utils.deploy import DeploymentConfig, DeploymentError, local_federation, submit

    if importlib.util.find_spec("ray") is None:
        return {"skipped": True, "reason": "Ray is not importable; pip install -e '.[scale]'"}
    config = DeploymentConfig(**task)
    peak, stop = [0.0], threading.Event()

    def sample(federation) -> None:
        while not stop.is_set():
            total = 0
            for pid in federation.pids():
                try:
                    total += psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    pass
            peak[0] = max(peak[0], total / 2**20)
            stop.wait(0.25)

    rounds: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="fedlab-scale-") as work:
        try:
            with local_federation(config.num_clients, workdir=work, simulation=True, announce=None) as federation:
                sampler = threading.Thread(target=sample, args=(federation,), daemon=True)
                sampler.start()
                try:
                    result = submit(federation, config, os.path.join(work, "out"),
                                    on_round=lambda r: rounds.append(r) if r.get("event") == "round" else None)
                finally:
                    stop.set()
                    sampler.join()
        except DeploymentError as err:
            return {"error": str(err)}
    stamps = [r["time"] for r in rounds]
    times = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"round_s": statistics.median(times), "round_times_s": times, "accuracy": result.accuracy,
            "bytes_up": [r["ledger_bytes_up"] for r in result.records], "peak_rss_mb": peak[0]}


def engines_at(clients: int) -> dict:
    """``run()`` and Flower's simulation runtime on the same task, measured in the same run."""
    task = flower_task(clients)
    ours, flower = ours_on(task), flower_simulation_on(task)
    row = {"clients": clients, "run": ours, "flower_simulation": flower}
    for side in (ours, flower):
        if "round_s" in side:
            side["client_updates_per_s"] = clients / side["round_s"]
    if "round_s" in ours and "round_s" in flower:
        row["flower_over_run_round_time"] = flower["round_s"] / ours["round_s"]
        row["flower_over_run_peak_rss"] = flower["peak_rss_mb"] / ours["peak_rss_mb"]
        row["same_payload_bytes"] = ours["bytes_up"] == flower["bytes_up"]
    return row


CODEC_REPEATS = 3  # fp32 and every codec, interleaved: load that comes and goes falls on all of them


def codecs_at(clients: int, fp32: dict, repeats: int = CODEC_REPEATS) -> dict:
    """``CODECS`` at ``clients`` clients per round against ``fp32`` (the same task with the fp32 uplink,
    measured in the same run), each in its own fresh process, ``repeats`` times in turn (fp32 again,
    then each codec, then again): a codec's row is its first run, with ``round_s`` the median over its
    repeats (``repeat_round_s``), and the ratio of time per client update is of those medians.  Peak
    RSS is the largest of the repeats; the load average before and after each run is recorded, as
    the machine may be shared."""
    runs: dict[str, list[dict]] = {"fp32": [fp32]}
    for turn in range(repeats):
        for uplink in (("fp32",) if turn else ()) + CODECS:
            before = os.getloadavg()
            row = one_size(clients, uplink)
            row["load_avg_before"], row["load_avg_after"] = before, os.getloadavg()
            runs.setdefault(uplink, []).append(row)
    reference = _over_repeats(runs["fp32"])
    rows = [_over_repeats(runs[uplink]) for uplink in CODECS]
    targets = {}
    for row in rows:
        if row["uplink"].startswith("ef:"):
            row["residual_mb"] = clients * PARAMETERS * 4 / 2**20
        if "s_per_client_update" in row and "s_per_client_update" in reference:
            row["s_per_update_over_fp32"] = row["s_per_client_update"] / reference["s_per_client_update"]
        if row["uplink"] in ("floor", "ef:floor"):  # controls, not codecs: no target
            continue
        if "peak_rss_mb" in row:
            targets[f"peak_rss_mb_at_{clients}_{row['uplink']} <= 2048"] = row["peak_rss_mb"]
        if "s_per_update_over_fp32" in row:
            targets[f"s_per_update_{row['uplink']}_over_fp32_at_{clients} <= 1.5"] = row["s_per_update_over_fp32"]
    return {"clients": clients, "fp32": reference, "sizes": rows, "targets": targets}


def _over_repeats(rows: list[dict]) -> dict:
    """The first run's row, with ``round_s`` (and the rates) the median over every run that finished."""
    import statistics

    done = [r for r in rows if "round_s" in r]
    if not done:
        return rows[0]
    row = {**done[0], "repeat_round_s": [r["round_s"] for r in done],
           "repeat_load_avg_before": [r["load_avg_before"] for r in done if "load_avg_before" in r],
           "round_s": statistics.median(r["round_s"] for r in done),
           "peak_rss_mb": max(r["peak_rss_mb"] for r in done)}
    row["client_updates_per_s"] = row["clients"] / row["round_s"]
    row["s_per_client_update"] = row["round_s"] / row["clients"]
    return row


def run() -> dict:  # the entry point benchmarks/run.py calls
    sizes = [one_size(n) for n in SIZES]
    by_n = {s["clients"]: s for s in sizes}
    targets = {}
    big, mid = by_n.get(10_000, {}), by_n.get(1_000, {})
    if "peak_rss_mb" in big:
        targets["peak_rss_mb_at_10000 <= 2048"] = big["peak_rss_mb"]
    if "s_per_client_update" in big and "s_per_client_update" in mid:
        targets["s_per_update_10000_over_1000 <= 1.5"] = big["s_per_client_update"] / mid["s_per_client_update"]
    codecs = codecs_at(10_000, big)
    targets.update(codecs.pop("targets"))
    result = {"task": f"mnist5k, MLP 784-64-10, {SAMPLES_PER_CLIENT} samples per client drawn with replacement, "
                      "1 local epoch SGD lr 0.05 batch 8, fp32 uplink, FedAvg, trainer='auto', "
                      f"median of rounds 2-{ROUNDS} timed",
              "sizes": sizes, "codecs": codecs, "targets": targets, "load_avg": os.getloadavg()}
    result["engines"] = {"task": "the deployment task (mnist5k, MLP, iid shares, fp32 uplink, FedAvg, 1 local "
                                  "epoch, batch 8, every client each round): run() with trainer='auto' in a fresh "
                                  "process against Flower's simulation runtime (Ray) running the course's "
                                  f"ServerApp/ClientApp, {FLOWER_ROUNDS} rounds, median of rounds 2..",
                         "sizes": [engines_at(n) for n in FLOWER_SIZES]}
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
