"""The loop benchmark's measurements (benchmarks/bench_loop.py): what they count, on a small task.

Timings themselves are never asserted; these tests check that the numbers are what their names say.
"""
import importlib.util
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_loop():
    return _load("bench_loop")


def test_kernel_ceiling_counts_the_ledger_flops_and_only_matmul_time(bench_loop, digits):
    peak = 100.0  # GFLOP/s; any positive number: the fractions scale with it
    out = bench_loop.kernel_ceiling(digits, (16,), 6, torch.device("cpu"), peak, repeats=2)
    # 1437 training samples, MLP 64-16-10: per sample 4·64·16 (first layer: forward + weight gradient)
    # + 6·16·10 (forward, weight and input gradient), as FlopCounterMode counts them
    assert out["training_flops"] == 1437 * (4 * 64 * 16 + 6 * 16 * 10)
    assert 0 < out["matmul_kernel_s"] < out["training_s"]
    assert out["matmul_share_of_training"] == pytest.approx(out["matmul_kernel_s"] / out["training_s"])
    assert out["matmul_only_fraction_of_peak"] == pytest.approx(
        out["training_flops"] / out["matmul_kernel_s"] / (peak * 1e9))
    assert out["matmul_only_fraction_of_peak"] > out["training_fraction_of_peak"]


def test_results_of_a_cuda_machine_go_beside_the_cpu_files(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))  # run.py imports common.py from its own folder, as a script does
    run = _load("run")
    written = {}
    monkeypatch.setattr(run, "HERE", tmp_path)
    (tmp_path / "bench_tiny.py").write_text("def run():\n    return {'x': 1}\n")
    (tmp_path / "results").mkdir()
    import common

    for cuda in (False, True):
        monkeypatch.setattr(common, "machine", lambda cuda=cuda: {"cuda": cuda})
        assert run.main(["tiny"]) == 0
        written[cuda] = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert written[False] == ["tiny.json"]
    assert written[True] == ["tiny-cuda.json", "tiny.json"]
