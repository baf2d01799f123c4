"""fedlab_utils.ledger.timing: which device gets synchronised, and the statistics -- never speeds."""
from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from fedlab_utils.ledger import (
    TimingStats,
    benchmark,
    inference_latency,
    synchronize,
    time_calls,
    time_interleaved,
    timing,
    wall_time,
)


@pytest.fixture
def syncs(monkeypatch):
    """Record every CUDA / MPS synchronisation instead of performing it (no GPU needed)."""
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(f"cuda:{device}"))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append("mps"))
    return calls


@pytest.fixture
def fake_clock(monkeypatch):
    """``perf_counter`` returns 0, 1, 3, 6, 10, ... (gaps 1, 2, 3, 4, ...): hand-computable times."""
    state = {"now": 0.0, "step": 0.0}

    def perf_counter() -> float:
        value = state["now"]
        state["step"] += 1
        state["now"] += state["step"]
        return value

    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=perf_counter))
    return state


@pytest.mark.parametrize("device, expected", [
    ("cuda", ["cuda:cuda"]), ("cuda:1", ["cuda:cuda:1"]), (torch.device("cuda", 0), ["cuda:cuda:0"]),
    ("mps", ["mps"]), ("cpu", []), (None, []),
])
def test_synchronize_dispatches_on_device_type(syncs, device, expected):
    synchronize(device)
    assert syncs == expected


def test_synchronize_rejects_a_bad_device_string():
    with pytest.raises(RuntimeError):
        synchronize("not-a-device")


def test_timing_stats_hand_computed():
    stats = TimingStats((0.3, 0.1, 0.2, 0.6))
    assert stats.min_s == 0.1
    assert stats.median_s == pytest.approx(0.25)
    assert stats.mean_s == pytest.approx(0.3)
    assert stats.repeats == 4
    assert stats["min_s"] == stats.to_dict()["min_s"] == 0.1


@pytest.mark.parametrize("times", [(), (0.1, -0.1)])
def test_timing_stats_rejects_empty_or_negative(times):
    with pytest.raises(ValueError):
        TimingStats(times)


def test_wall_time_synchronises_both_ends_and_reads_the_clock(syncs, fake_clock):
    with wall_time("mps") as watch:
        assert watch.seconds is None
        assert syncs == ["mps"]
    assert syncs == ["mps", "mps"]
    assert watch.seconds == 1.0  # clock read at 0, then at 1


def test_wall_time_sets_seconds_even_when_the_block_raises(fake_clock):
    with pytest.raises(KeyError):
        with wall_time() as watch:
            raise KeyError("boom")
    assert watch.seconds == 1.0


def test_time_calls_counts_warmup_and_times_each_call(syncs, fake_clock):
    calls = []
    stats = time_calls(lambda: calls.append(1), repeats=3, warmup=2, device="cuda:0")
    assert len(calls) == 5
    # clock readings 0,1 | 3,6 | 10,15 -> per-call times 1, 3, 5
    assert stats.times == (1.0, 3.0, 5.0)
    assert stats.median_s == 3.0 and stats.min_s == 1.0
    assert syncs == ["cuda:cuda:0"] * 6  # before and after each timed call, none during warm-up


@pytest.mark.parametrize("kwargs, word", [({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup")])
def test_time_calls_names_bad_parameters(kwargs, word):
    with pytest.raises(ValueError, match=word):
        time_calls(lambda: None, **kwargs)


def test_time_interleaved_rotates_the_order_and_keeps_every_time():
    order = []
    out = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b"),
                            "c": lambda: order.append("c")}, repeats=2, blocks=3, warmup=1)
    assert order[:3] == ["a", "b", "c"]  # warm-up
    assert order[3:] == ["a", "a", "b", "b", "c", "c", "b", "b", "c", "c", "a", "a", "c", "c", "a", "a", "b", "b"]
    assert set(out) == {"a", "b", "c"}
    assert all(s.repeats == 6 and s.min_s <= s.median_s for s in out.values())


def test_time_interleaved_rejects_nothing_to_time():
    with pytest.raises(ValueError, match="fns"):
        time_interleaved({})


@pytest.mark.parametrize("autorange", ["blocked", "adaptive"])
def test_benchmark_uses_torch_timer_with_a_synchronising_clock(syncs, autorange):
    x = torch.ones(8)
    stats = benchmark(lambda: x.add(1), device="cuda", min_run_time=0.01, autorange=autorange)
    assert stats.repeats >= 1 and stats.min_s > 0
    assert syncs and set(syncs) == {"cuda:cuda"}


def test_benchmark_names_a_bad_strategy():
    with pytest.raises(ValueError, match="autorange"):
        benchmark(lambda: None, autorange="fast")


def test_inference_latency_runs_forward_in_eval_without_grad():
    seen = []

    class Probe(nn.Linear):
        def forward(self, x):
            seen.append((self.training, torch.is_grad_enabled()))
            return super().forward(x)

    model = Probe(4, 2).train()
    seconds = inference_latency(model, torch.ones(3, 4), repeats=4, warmup=1)
    assert seconds >= 0
    assert seen == [(False, False)] * 5


def test_importing_timing_does_not_pull_in_torch_benchmark():
    """Plain timing stays cheap to import: torch.utils.benchmark (and its setuptools) load only in benchmark()."""
    import subprocess
    import sys

    code = "import sys, fedlab_utils.ledger.timing; print('torch.utils.benchmark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
