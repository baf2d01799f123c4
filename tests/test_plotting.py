"""Plot hygiene: whole-number ticks for rounds and clients, legends beside the bars (never over
them), accuracy in percent, and a forward/backward legend on the pipeline schedule."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from fedlab_utils.core import History, RoundRecord
from fedlab_utils.ledger import Energy
from fedlab_utils.lessons.parallel import PipelineReport, plot_schedule
from fedlab_utils.viz import plot_accuracy, plot_energy, plot_label_heatmap


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _history(label: str, accuracies: list[float], fixed: float = 5.0) -> History:
    records = [RoundRecord(i + 1, [0, 1], acc, 1.0, 1.0, 800, 800, 10 ** 6, 0.1,
                           Energy(compute=0.2, uplink=0.5, downlink=0.3, radio_fixed=fixed))
               for i, acc in enumerate(accuracies)]
    return History(label, records)


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 - 0.5 and b.x0 < a.x1 - 0.5 and a.y0 < b.y1 - 0.5 and b.y0 < a.y1 - 0.5


def test_accuracy_plot_has_whole_round_ticks_and_percent():
    fig, ax = plot_accuracy([_history("a", [0.5, 0.7]), _history("b", [0.4, 0.6])], target=0.85)
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)  # two rounds: no 1.25, 1.5 ...
    assert "%" in ax.get_ylabel() and max(ax.lines[0].get_ydata()) == pytest.approx(70.0)


def test_energy_legend_shows_radio_fixed_and_covers_no_bar():
    runs = [_history(f"run {i}", [0.5, 0.6, 0.7]) for i in range(4)]
    fig, ax = plot_energy(runs)
    fig.canvas.draw()
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["radio fixed", "downlink", "uplink", "compute"]  # top of the stack first
    box = legend.get_window_extent()
    assert not any(_overlaps(box, bar.get_window_extent()) for bar in ax.patches)
    # the radio-fixed bars are drawn, with their own colour, and sum as the ledger does
    fixed = [p for c in ax.containers if c.get_label() == "radio fixed" for p in c]
    assert [p.get_height() for p in fixed] == pytest.approx([15.0] * 4)
    swatch = legend.legend_handles[0]
    assert matplotlib.colors.same_color(swatch.get_facecolor(), fixed[0].get_facecolor())


def test_heatmap_client_ticks_are_whole_numbers():
    fig, ax = plot_label_heatmap(np.ones((7, 10)))
    fig.canvas.draw()
    ticks = [t for t in ax.get_yticks() if -0.5 <= t <= 6.5]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_schedule_has_a_forward_backward_legend():
    report = PipelineReport(2, 3, np.full((2, 3), 0.01), np.full((2, 3), 0.02), 0.0, torch.zeros(1))
    fig, ax = plot_schedule(report)
    fig.canvas.draw()
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["forward", "backward"]
    assert not any(_overlaps(legend.get_window_extent(), bar.get_window_extent()) for bar in ax.patches)


def test_seeds_are_drawn_as_their_mean_with_a_student_t_band_the_legend_says_so():
    from matplotlib.collections import PolyCollection

    seeds = [_history("FedAvg", [0.50, 0.70]), _history("FedAvg", [0.60, 0.74]), _history("FedAvg", [0.70, 0.78])]
    fig, ax = plot_accuracy({"FedAvg": seeds, "one run": _history("x", [0.4, 0.5])})
    lines = {line.get_label(): line for line in ax.get_lines()}
    label = "FedAvg (mean of 3 seeds, band 95% CI)"
    assert set(lines) == {label, "one run"}
    np.testing.assert_allclose(lines[label].get_ydata(), [60.0, 74.0])
    # round 1: 50, 60, 70 -> s = 10, half = t(0.975, 2) * 10 / sqrt(3); round 2: 70, 74, 78 -> s = 4
    half = 4.302652729911275 / np.sqrt(3) * np.array([10.0, 4.0])
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    y = band.get_paths()[0].vertices[:, 1]
    for edge in (60.0 - half[0], 60.0 + half[0], 74.0 - half[1], 74.0 + half[1]):
        assert np.isclose(y, edge).any(), f"band has no edge at {edge:.4f}: {sorted(set(np.round(y, 4)))}"
    assert matplotlib.colors.same_color(band.get_facecolor()[0][:3], lines[label].get_color())
    assert label in [t.get_text() for t in ax.get_legend().get_texts()]


def test_seeds_in_the_mb_and_energy_plots_are_their_means():
    from fedlab_utils.viz import plot_accuracy_vs_mb

    seeds = [_history("FedAvg", [0.5, 0.7], fixed=1.0), _history("FedAvg", [0.7, 0.9], fixed=3.0)]
    fig, ax = plot_accuracy_vs_mb({"FedAvg": seeds})
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), [60.0, 80.0])
    np.testing.assert_allclose(line.get_xdata(), [0.0008, 0.0016])
    fig, ax = plot_energy({"FedAvg": seeds})
    fixed = [p for c in ax.containers if c.get_label() == "radio fixed" for p in c]
    assert [p.get_height() for p in fixed] == pytest.approx([4.0])  # mean of 2 and 6 J over the two rounds
    assert "mean of 2 seeds" in ax.get_xticklabels()[0].get_text()
