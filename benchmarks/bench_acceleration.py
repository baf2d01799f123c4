"""Acceleration benchmarks (notebook 04): faster rounds, measured.

* vmap vs sequential client training: client updates per second at 8, 32 and 128 clients
  (mnist5k and digits, IID split so clients have (nearly) the same size, MLP, 1 epoch of
  batch-32 SGD); goal: >= 3x at 32+ clients on 2 CPU cores.  The mnist5k MLP (784-64-10) is
  compute-bound per step, so batching clients saves little; the digits MLP (64-64-10) is
  bound by per-step Python/dispatch overhead, which vmap removes.
* one training step: fp32 vs bf16 autocast, eager vs torch.compile (first call reported apart).
* the notebook's runtime with default parameters.

Wall times depend on the machine and on what else runs on it: the load average is recorded.
"""
from __future__ import annotations

import os

import torch
from common import time_notebook

from fedlab_utils.core import TRAINERS, LocalTraining, make_trainer
from fedlab_utils.data import client_data, load_dataset, partition
from fedlab_utils.devices import get_device
from fedlab_utils.ledger import time_train_step, time_trainer
from fedlab_utils.lessons import acceleration as acc
from fedlab_utils.models import make_model


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bench_backends(ds, device, counts=(8, 32, 128)) -> dict:
    local = LocalTraining(epochs=1, batch_size=32, lr=0.05)
    model = make_model("mlp", ds.input_shape, ds.num_classes)
    out = {}
    for k in counts:
        clients = client_data(ds, partition(ds.y_train, k, "iid", seed=0), device)
        row = {"samples_per_client": len(clients[0])}
        for name in TRAINERS:
            row[name] = time_trainer(make_trainer(name), model, clients, local, repeats=3)
        row["speedup"] = row["vmap"]["client_updates_per_s"] / row["sequential"]["client_updates_per_s"]
        out[str(k)] = row
    return out


def bench_steps(ds, device) -> list[dict]:
    x, y = ds.x_train[:256].to(device), ds.y_train[:256].to(device)
    rows = []
    for name in ("mlp", "cnn"):
        torch.manual_seed(0)
        model = make_model(name, ds.input_shape, ds.num_classes).to(device)
        precisions = ("fp32", "bf16") + (("fp16",) if device.type == "cuda" else ())
        for precision in precisions:
            rows.append({"model": name, **time_train_step(model, x, y, precision=precision, steps=30)})
        rows.append({"model": name, **time_train_step(model, x, y, precision="fp32", compile=True, steps=30)})
    return rows


def run() -> dict:
    device = get_device("auto")
    ds = load_dataset("mnist5k", seed=0)
    result = {"device": str(device), "torch_threads": torch.get_num_threads(), "load_avg_before": _load()}
    result["backends"] = bench_backends(ds, device)  # 784-64-10 MLP: compute-bound per step
    result["backends_digits"] = bench_backends(load_dataset("digits", seed=0), device)  # 64-64-10: overhead-bound
    result["steps"] = bench_steps(ds, device)
    result["notebook"] = time_notebook("04")
    result["load_avg_after"] = _load()
    result["note"] = ("client updates/s = clients trained in one round / wall seconds; "
                      "the load average shows how busy the machine was (2 cores shared)")
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
