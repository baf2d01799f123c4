"""Notebook 01's runtime and the CPU latency of dense vs structurally pruned vs unstructured-pruned models.

Latency does not depend on the weights' values, only on shapes (and, for unstructured pruning,
on nothing at all with dense kernels), so the models here are untrained.  Ratios > 1 mean the
pruned model is faster than the dense one.
"""
from __future__ import annotations

import copy
import os
import resource

import torch
from common import time_notebook
from torch import nn

from fedlab_utils import load_dataset, make_model
from fedlab_utils.ledger import time_interleaved
from fedlab_utils.lessons.pruning import masks as P
from fedlab_utils.lessons.pruning import structured as SP


def latency_ratios(structured: float = 0.6, sparsity: float = 0.9, batch_size: int = 32, repeats: int = 20) -> dict:
    data = load_dataset("mnist5k")
    torch.manual_seed(0)
    dense = make_model("mlp", data.input_shape, data.num_classes)
    small = SP.shrink(dense, SP.structured_masks(dense, structured))
    unstructured = P.apply_masks(copy.deepcopy(dense), P.magnitude_masks(dense, sparsity))
    xb, yb = data.x_train[:batch_size], data.y_train[:batch_size]

    def step(model):
        model = copy.deepcopy(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)

        def go():
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        return go

    def infer(model):
        def go():
            with torch.no_grad():
                model(data.x_test)
        return go

    out = {"structured_fraction": structured, "unstructured_sparsity": sparsity, "batch_size": batch_size,
           "test_samples": len(data.y_test), "statistic": "min over interleaved calls (timing.time_interleaved)"}
    models = {"dense": dense, "structured": small, "unstructured": unstructured}
    for kind, make in (("train_step", step), ("inference", infer)):
        measured = time_interleaved({name: make(m) for name, m in models.items()}, repeats=repeats, blocks=5)
        times = {name: t.min_s for name, t in measured.items()}
        out[f"{kind}_s"] = {name: t.to_dict() for name, t in measured.items()}
        out[f"{kind}_dense_over_structured"] = times["dense"] / times["structured"]
        out[f"{kind}_dense_over_unstructured"] = times["dense"] / times["unstructured"]
    return out


def notebook_runtime() -> dict:
    """Wall time of notebook 01 (defaults), plus its CPU time and the machine's load: on a shared
    machine the wall time overstates what an idle 2-core laptop needs; CPU time bounds it better."""
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    timing = time_notebook("01")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    timing["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    timing["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    return timing


def run() -> dict:
    return {"notebook_01": notebook_runtime(), "cpu_latency_mlp_mnist5k": latency_ratios()}
