"""The course's plots, in one style.  Every function returns matplotlib objects to tweak.

* :func:`plot_accuracy` – test accuracy against round, several runs on one axis;
* :func:`plot_accuracy_vs_mb` – accuracy against cumulative MB uploaded (the Pareto view);
* :func:`plot_energy` – modelled joules split into compute, uplink and downlink;
* :func:`plot_label_heatmap` – clients × classes label counts of a partition;
* :func:`plot_sensitivity` – accuracy against one layer's sparsity, one line per layer (pruning).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from fedlab_utils.core import History

__all__ = ["use_style", "integer_ticks", "legend_outside", "plot_accuracy", "plot_accuracy_vs_mb", "plot_energy", "plot_label_heatmap", "plot_sensitivity",
           "COLORS"]

COLORS = {"compute": "#4C72B0", "uplink": "#DD8452", "downlink": "#55A868", "radio_fixed": "#8172B3",
          "forward": "#4C72B0", "backward": "#DD8452"}
_STYLE = {"figure.figsize": (6.4, 3.8), "figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
          "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False, "font.size": 10}


def use_style() -> None:
    """Apply the course style to every later figure."""
    plt.rcParams.update(_STYLE)


def integer_ticks(axis) -> None:
    """Ticks at whole numbers only (rounds, clients, stages): no "round 2.5"."""
    axis.set_major_locator(MaxNLocator(integer=True))


def legend_outside(ax, handles=None, labels=None, **kwargs):
    """The legend to the right of the plotting area, where it can cover no bar or line."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    return ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), **kwargs)


def _runs(histories: Sequence[History] | dict[str, History]) -> list[tuple[str, History]]:
    """``(label, history)`` per run: a dict's keys label its runs, a list's runs their ``History.label``."""
    if isinstance(histories, dict):
        return [(str(key), h) for key, h in histories.items()]
    return [(h.label, h) for h in histories]


def axes_or_new(ax):
    """``(figure, ax)`` for a given axis, or a new course-styled figure when ``ax`` is None."""
    if ax is None:
        use_style()
        fig, ax = plt.subplots()
        return fig, ax
    return ax.figure, ax


def plot_accuracy(histories, ax=None, target: float | None = None, title: str = "Test accuracy per round"):
    """Accuracy (%) against round for each run (the evaluated rounds; with ``eval_every > 1`` the
    others have no accuracy); an optional dashed line at ``target``.  Runs are labelled by the keys
    of a dict, else by ``History.label``."""
    fig, ax = axes_or_new(ax)
    for label, h in _runs(histories):
        measured = h.evaluated_records()
        ax.plot([r.round for r in measured], [100 * r.accuracy for r in measured], label=label)
    if target is not None:
        ax.axhline(100 * target, ls="--", c="grey", lw=1, label=f"target {100 * target:.0f}%")
    ax.set(xlabel="round", ylabel="test accuracy (%)", title=title)
    integer_ticks(ax.xaxis)
    ax.legend()
    return fig, ax


def plot_accuracy_vs_mb(histories, ax=None, log_x: bool = True, title: str = "Accuracy vs data uploaded"):
    """Accuracy (%) against cumulative MB uploaded, at each evaluated round: up-and-left is better."""
    fig, ax = axes_or_new(ax)
    for label, h in _runs(histories):
        mb = h.cumulative("bytes_up") / 1e6
        measured = [i for i, r in enumerate(h.records) if r.evaluated and np.isfinite(r.accuracy)]
        ax.plot(mb[measured], [100 * h.records[i].accuracy for i in measured], marker=".", label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel="cumulative MB uploaded (all clients)", ylabel="test accuracy (%)", title=title)
    ax.legend()
    return fig, ax


def plot_energy(histories, ax=None, title: str | None = None):
    """Stacked bars of modelled joules (compute / uplink / downlink / radio fixed) per run, labelled
    by the keys of a dict, else by ``History.label``.

    "radio fixed" is the promotions and tails of the runs' radio sessions (docs/energy_model.md).
    The legend sits right of the bars, in the order of the stack (top first), so it covers none
    of them: inside the axes it used to hide the top of the stack, the radio-fixed part."""
    fig, ax = axes_or_new(ax)
    labels, runs = zip(*_runs(histories)) if len(histories) else ((), ())
    bottom = np.zeros(len(runs))
    handles = []
    for part in ("compute", "uplink", "downlink", "radio_fixed"):
        values = np.array([getattr(h.energy(), part) for h in runs])
        handles.append(ax.bar(list(labels), values, bottom=bottom, color=COLORS[part],
                              label=part.replace("_", " ")))
        bottom += values
    profiles = sorted({getattr(h.profile, "name", h.profile) for h in runs})  # History keeps the EnergyProfile
    ax.set(ylabel="joules (modelled, all clients)", title=title or f"Where the energy goes ({', '.join(profiles)})")
    legend_outside(ax, handles[::-1], [h.get_label() for h in handles[::-1]])
    return fig, ax


def plot_label_heatmap(counts: np.ndarray, ax=None, title: str = "Labels per client"):
    """Clients (rows) × classes (columns) heatmap of sample counts."""
    fig, ax = axes_or_new(ax)
    image = ax.imshow(counts, aspect="auto", cmap="Blues", interpolation="nearest")
    ax.set(xlabel="class", ylabel="client", title=title)
    ax.set_xticks(range(counts.shape[1]))
    integer_ticks(ax.yaxis)
    ax.grid(False)
    fig.colorbar(image, ax=ax, label="samples")
    return fig, ax


def plot_sensitivity(scan: Mapping[str, Sequence[float]], sparsities: Sequence[float], ax=None,
                     title: str = "Sensitivity: one layer pruned at a time"):
    """Accuracy (%) against sparsity (%), one line per layer (``pruning.sensitivity_scan``'s output)."""
    fig, ax = axes_or_new(ax)
    for name, curve in scan.items():
        ax.plot(100 * np.asarray(sparsities), 100 * np.asarray(curve), marker="o", label=name)
    ax.set(xlabel="sparsity of that layer (%)", ylabel="test accuracy (%)", title=title)
    ax.legend()
    return fig, ax
