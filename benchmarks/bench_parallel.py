"""Lesson 05 benchmarks: the GPipe bubble (measured vs ideal), the multi-process start-up cost,
SplitFed's round cost against FedAvg, and the notebook's runtime.

The bubble is measured by timing every (stage, micro-batch) cell of a real training step and
replaying the GPipe schedule on those times; on a CPU-only machine the stages are "virtual
devices", so the replayed time is what separate devices would take.
"""
from __future__ import annotations

import copy
import time

import torch
from common import time_call, time_notebook

from fedlab_utils.core import LocalTraining
from fedlab_utils.core import run as fedavg_run
from fedlab_utils.data import client_data, load_dataset, partition
from fedlab_utils.devices import get_devices
from fedlab_utils.lessons.parallel import (
    StagedModel,
    ideal_bubble,
    pipeline_train_step,
    reference_step,
    run_multiprocess_pipeline,
    split_sequential,
    splitfed_run,
)
from fedlab_utils.models import make_model


def _bubble(model, x, y, stages: int, micro: list[int], repeats: int = 3) -> dict:
    staged = StagedModel(split_sequential(copy.deepcopy(model), stages, input_shape=tuple(x.shape[1:])),
                         get_devices(stages, verbose=False))
    pipeline_train_step(staged, x, y, micro[0])  # warm-up
    rows = {}
    for m in micro:
        reports = []
        for _ in range(repeats):
            staged.zero_grad(set_to_none=True)
            reports.append(pipeline_train_step(staged, x, y, m))
        best = min(reports, key=lambda r: r.makespan_s)
        rows[m] = {"measured_bubble": best.bubble, "ideal_bubble": ideal_bubble(stages, m),
                   "replayed_step_ms": 1e3 * best.makespan_s, "stage_busy_ms": [1e3 * t for t in best.stage_busy_s]}
    return rows


def run() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_dataset("mnist5k", seed=0)
        torch.manual_seed(0)
        cnn = make_model("cnn", data.input_shape, data.num_classes)
        x, y = data.x_train[:64], data.y_train[:64]
        out = {"bubble_S3_batch64": _bubble(cnn, x, y, 3, [1, 2, 4, 8, 16]),
               "bubble_S2_batch64": _bubble(cnn, x, y, 2, [1, 2, 4, 8, 16])}

        ref_out, _, ref_grads = reference_step(cnn, x, y)
        start = time.perf_counter()
        mp = run_multiprocess_pipeline(cnn, x, y, world_size=2, micro_batches=4, timeout_s=300)
        out["multiprocess_2"] = {"backend": mp.backend, "startup_s": mp.startup_s, "wall_s": mp.wall_s,
                                 "call_s": time.perf_counter() - start, "rank_busy_ms": [1e3 * b for b in mp.rank_busy_s],
                                 "rank_step_ms": [1e3 * t for t in mp.rank_step_s],
                                 "rank_idle_fraction": mp.rank_idle_fraction,
                                 "max_output_err": (mp.output - ref_out).abs().max().item(),
                                 "max_grad_err": max((mp.grads[k] - ref_grads[k]).abs().max().item() for k in ref_grads)}

        clients = client_data(data, partition(data.y_train, 10, "iid", seed=0))
        test = (data.x_test, data.y_test)
        local = LocalTraining(epochs=1, batch_size=32, lr=0.05, optimizer="sgdm")
        fa = time_call(lambda: fedavg_run(cnn, clients, test, rounds=1, local=local, progress=False), repeats=2)
        sf = time_call(lambda: splitfed_run(cnn, clients, test, cut=3, rounds=1, local=local), repeats=2)
        out["round_wall_s_10_clients_mnist5k"] = {"fedavg": fa, "splitfed_cut3": sf,
                                                  "splitfed_over_fedavg": sf["median_s"] / fa["median_s"]}
    finally:
        torch.set_num_threads(threads)
    out["notebook"] = time_notebook("05")
    return out
