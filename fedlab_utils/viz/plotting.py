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

from fedlab_utils.i18n import N_
from fedlab_utils.seeds import confidence_band, is_history, labelled
from fedlab_utils.viz.fonts import figure_label

if TYPE_CHECKING:
    from fedlab_utils.core.history import History

__all__ = ["use_style", "integer_ticks", "legend_outside", "plot_accuracy", "seed_curve", "plot_accuracy_vs_mb", "plot_energy", "plot_label_heatmap", "plot_sensitivity",
           "COLORS"]

COLORS = {"compute": "#4C72B0", "uplink": "#DD8452", "downlink": "#55A868", "radio_fixed": "#8172B3",
          "forward": "#4C72B0", "backward": "#DD8452"}
_STYLE = {"figure.figsize": (6.4, 3.8), "figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
          "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False, "font.size": 10}


def use_style() -> None:
    """Apply the course style to every later figure."""
    plt.rcParams.update(_STYLE)
    from fedlab_utils.viz.fonts import use_language_fonts
    use_language_fonts()


def integer_ticks(axis) -> None:
    """Ticks at whole numbers only (rounds, clients, stages): no "round 2.5"."""
    axis.set_major_locator(MaxNLocator(integer=True))


def legend_outside(ax, handles=None, labels=None, **kwargs):
    """The legend to the right of the plotting area, where it can cover no bar or line."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    return ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), **kwargs)


def _runs(histories) -> list[tuple[str, History | list[History]]]:
    """``(label, run)`` per run: a dict's keys label its runs, a list's runs their ``History.label``;
    a run is one History or a list of them, one per seed (:func:`~fedlab_utils.seeds.labelled`)."""
    return labelled(histories)


def seed_curve(seeds: Sequence[History], x_of=lambda h, i: h.records[i].round, level: float = 0.95):
    """``(x, mean %, half-width %)`` of the accuracy of the same configuration over several seeds, at
    each round every seed evaluated; ``x`` is ``x_of(history, record index)`` averaged over the seeds
    (the round itself, or e.g. cumulative MB).  The half-width is the Student-t interval of the mean
    (:func:`~fedlab_utils.seeds.confidence_band`), NaN with one seed."""
    common = sorted(set.intersection(*(set(h.evaluated_rounds) for h in seeds)))
    xs, means, halves = [], [], []
    for rnd in common:
        indices = [next(i for i, r in enumerate(h.records) if r.round == rnd) for h in seeds]
        accuracies = [100 * h.records[i].accuracy for h, i in zip(seeds, indices)]
        if not all(np.isfinite(accuracies)):
            continue
        mean, half, _ = confidence_band(accuracies, level)
        xs.append(float(np.mean([x_of(h, i) for h, i in zip(seeds, indices)])))
        means.append(mean)
        halves.append(half)
    return np.array(xs), np.array(means), np.array(halves)


def _draw_seeds(ax, seeds: Sequence[History], label: str, x_of, **line) -> None:
    """The mean line over the seeds and its shaded 95 % band, the legend saying so."""
    x, mean, half = seed_curve(seeds, x_of)
    if len(seeds) == 1:
        ax.plot(x, mean, label=figure_label(N_("{label} (1 seed)")).format(label=label), **line)
        return
    (drawn,) = ax.plot(x, mean, label=figure_label(N_("{label} (mean of {n} seeds, band 95% CI)")).format(
        label=label, n=len(seeds)), **line)
    ax.fill_between(x, mean - half, mean + half, color=drawn.get_color(), alpha=0.2, lw=0)


def axes_or_new(ax):
    """``(figure, ax)`` for a given axis, or a new course-styled figure when ``ax`` is None."""
    if ax is None:
        use_style()
        fig, ax = plt.subplots()
        return fig, ax
    return ax.figure, ax


def plot_accuracy(histories, ax=None, target: float | None = None, title: str | None = None):
    """Accuracy (%) against round for each run (the evaluated rounds; with ``eval_every > 1`` the
    others have no accuracy); an optional dashed line at ``target``.  Runs are labelled by the keys
    of a dict, else by ``History.label``.  A run given as a list of History objects (one per seed)
    is drawn as its mean with a shaded band, the 95 % Student-t interval of the mean over the
    seeds, and its legend entry says so.  The default title and the axis labels are in the reader's
    language where a CJK font draws them (:func:`~fedlab_utils.viz.fonts.figure_label`)."""
    fig, ax = axes_or_new(ax)
    for label, h in _runs(histories):
        if not is_history(h):
            _draw_seeds(ax, h, label, lambda one, i: one.records[i].round)
            continue
        measured = h.evaluated_records()
        ax.plot([r.round for r in measured], [100 * r.accuracy for r in measured], label=label)
    if target is not None:
        ax.axhline(100 * target, ls="--", c="grey", lw=1,
                   label=figure_label(N_("target {target:.0f}%")).format(target=100 * target))
    ax.set(xlabel=figure_label(N_("round")), ylabel=figure_label(N_("test accuracy (%)")),
           title=figure_label(N_("Test accuracy per round")) if title is None else title)
    integer_ticks(ax.xaxis)
    ax.legend()
    return fig, ax


def plot_accuracy_vs_mb(histories, ax=None, log_x: bool = True, title: str | None = None):
    """Accuracy (%) against cumulative MB uploaded, at each evaluated round: up-and-left is better.
    A run given as a list of History objects (one per seed) is drawn as the mean accuracy against
    the mean MB with a shaded 95 % band, as in :func:`plot_accuracy`."""
    fig, ax = axes_or_new(ax)
    for label, h in _runs(histories):
        if not is_history(h):
            _draw_seeds(ax, h, label, lambda one, i: one.cumulative("bytes_up")[i] / 1e6, marker=".")
            continue
        mb = h.cumulative("bytes_up") / 1e6
        measured = [i for i, r in enumerate(h.records) if r.evaluated and np.isfinite(r.accuracy)]
        ax.plot(mb[measured], [100 * h.records[i].accuracy for i in measured], marker=".", label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=figure_label(N_("cumulative MB uploaded (all clients)")), ylabel=figure_label(N_("test accuracy (%)")),
           title=figure_label(N_("Accuracy vs data uploaded")) if title is None else title)
    ax.legend()
    return fig, ax


def plot_energy(histories, ax=None, title: str | None = None):
    """Stacked bars of modelled joules (compute / uplink / downlink / radio fixed) per run, labelled
    by the keys of a dict, else by ``History.label``.  A run given as a list of History objects (one
    per seed) is drawn as the mean over its seeds, its label saying how many.

    "radio fixed" is the promotions and tails of the runs' radio sessions (docs/energy_model.md).
    The legend sits right of the bars, in the order of the stack (top first), so it covers none
    of them (inside the axes it would hide the top of the stack, the radio-fixed part)."""
    fig, ax = axes_or_new(ax)
    labels, runs = zip(*_runs(histories)) if len(histories) else ((), ())
    labels = [label if is_history(h) else figure_label(N_("{label}\n(mean of {n} seeds)")).format(label=label, n=len(h))
              for label, h in zip(labels, runs)]
    runs = [[h] if is_history(h) else h for h in runs]
    bottom = np.zeros(len(runs))
    handles = []
    parts = {"compute": N_("compute"), "uplink": N_("uplink"), "downlink": N_("downlink"), "radio_fixed": N_("radio fixed")}
    for part, name in parts.items():
        values = np.array([np.mean([getattr(h.energy(), part) for h in seeds]) for seeds in runs])
        handles.append(ax.bar(list(labels), values, bottom=bottom, color=COLORS[part],
                              label=figure_label(name)))
        bottom += values
    profiles = sorted({getattr(h.profile, "name", h.profile) for seeds in runs for h in seeds})  # History keeps the EnergyProfile
    ax.set(ylabel=figure_label(N_("joules (modelled, all clients)")),
           title=title or figure_label(N_("Where the energy goes ({profiles})")).format(profiles=", ".join(profiles)))
    legend_outside(ax, handles[::-1], [h.get_label() for h in handles[::-1]])
    return fig, ax


def plot_label_heatmap(counts: np.ndarray, ax=None, title: str | None = None):
    """Clients (rows) × classes (columns) heatmap of sample counts."""
    fig, ax = axes_or_new(ax)
    image = ax.imshow(counts, aspect="auto", cmap="Blues", interpolation="nearest")
    ax.set(xlabel=figure_label(N_("class")), ylabel=figure_label(N_("client")),
           title=figure_label(N_("Labels per client")) if title is None else title)
    ax.set_xticks(range(counts.shape[1]))
    integer_ticks(ax.yaxis)
    ax.grid(False)
    fig.colorbar(image, ax=ax, label=figure_label(N_("samples")))
    return fig, ax


def plot_sensitivity(scan: Mapping[str, Sequence[float]], sparsities: Sequence[float], ax=None,
                     title: str | None = None):
    """Accuracy (%) against sparsity (%), one line per layer (``pruning.sensitivity_scan``'s output)."""
    fig, ax = axes_or_new(ax)
    for name, curve in scan.items():
        ax.plot(100 * np.asarray(sparsities), 100 * np.asarray(curve), marker="o", label=name)
    ax.set(xlabel=figure_label(N_("sparsity of that layer (%)")), ylabel=figure_label(N_("test accuracy (%)")),
           title=figure_label(N_("Sensitivity: one layer pruned at a time")) if title is None else title)
    ax.legend()
    return fig, ax
