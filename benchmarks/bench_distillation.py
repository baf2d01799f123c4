"""Distillation benchmarks: notebook 03's runtime, and what caching the teacher's logits saves.

Distilling from a teacher *module* runs the teacher forward on every student batch; passing the
teacher's logits (computed once) gives the same batches and loss but skips that work.  Ratios
are only meaningful within one run on one machine.
"""
from __future__ import annotations

import resource

import torch
from common import time_call, time_notebook

from fedlab_utils.data import load_dataset
from fedlab_utils.lessons.distillation import LogitCodec, distill, distill_flops, weight_payload_bytes
from fedlab_utils.models import count_parameters, make_model


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run() -> dict:
    data = load_dataset("mnist5k", seed=0)
    x, y = data.x_train[:500], data.y_train[:500]
    torch.manual_seed(0)
    teacher = make_model("mlp", data.input_shape, 10, hidden=(128,)).eval()
    with torch.no_grad():
        cached = teacher(x)

    def student():
        torch.manual_seed(0)
        return make_model("mlp", data.input_shape, 10, hidden=(16,))

    kw = dict(temperature=4.0, alpha=0.9, epochs=2, batch_size=64, lr=3e-3, seed=0)
    from_module = time_call(lambda: distill(student(), x, y, teacher=teacher, **kw), repeats=5)
    from_logits = time_call(lambda: distill(student(), x, y, teacher=cached, **kw), repeats=5)
    labels_only = time_call(lambda: distill(student(), x, y, teacher=None, **kw), repeats=5)
    s = student()
    before = _cpu_children()
    notebook = time_notebook("03")
    notebook["cpu_s_user_plus_sys"] = _cpu_children() - before
    return {
        "notebook": notebook,
        "distill_2_epochs_500_images": {
            "teacher_module_median_s": from_module["median_s"],
            "cached_teacher_logits_median_s": from_logits["median_s"],
            "labels_only_median_s": labels_only["median_s"],
            "speedup_from_caching_logits": from_module["median_s"] / from_logits["median_s"],
            "flops_with_teacher_forward": distill_flops(s, tuple(data.input_shape), 2 * 500, teacher),
            "flops_student_only": distill_flops(s, tuple(data.input_shape), 2 * 500),
        },
        "parameters": {"teacher_mlp128": count_parameters(teacher), "student_mlp16": count_parameters(s)},
        "uplink_bytes_per_client_round": {
            "fedavg_weights_mlp128_fp32": weight_payload_bytes(teacher),
            "fedmd_logits_500x10_fp16": len(LogitCodec("fp16").encode(torch.zeros(500, 10))),
            "fd_class_logits_10x10_fp16": len(LogitCodec("fp16").encode(torch.zeros(10, 10))),
        },
    }
