"""ipywidgets explorers.  Each returns a widget, draws from cached results, and does nothing
heavy at import (ipywidgets itself is imported only when an explorer is built).

Headless runs get no widget: with ``FEDLAB_WIDGETS=0`` (which the course runner, ``sweep`` and
the classroom grader set for their kernels) an explorer draws or prints its default selection
and returns ``None``.  A saved notebook cannot move a slider anyway, and nbclient (under
papermill and nbgrader) intermittently blocks on a cell that displays an ipywidget
(jupyter/nbclient#312): one run in about 15 hung that way here before this switch.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping

import matplotlib.pyplot as plt
import numpy as np

from fedlab_utils.i18n import N_, gettext
from fedlab_utils.viz.fonts import figure_label

__all__ = ["slider_explorer", "alpha_explorer", "widgets_enabled", "static_note", "WIDGETS_ENV"]

WIDGETS_ENV = "FEDLAB_WIDGETS"


def widgets_enabled() -> bool:
    """Build interactive widgets? Yes unless ``FEDLAB_WIDGETS=0`` (headless runs)."""
    return os.environ.get(WIDGETS_ENV, "1") != "0"


STATIC_NOTE = N_("Static view: {what} = {value!r}, this notebook's value. "
               "In JupyterLab this is a live slider: move it to compare {others}.")


def static_note(description: str, value, keys) -> str:
    """The line a headless explorer prints: which value it shows, and that the slider is live in
    JupyterLab."""
    others = ", ".join(repr(k) for k in keys if k != value) or gettext("other values")
    return gettext(STATIC_NOTE).format(what=description, value=value, others=others)


def _initial_key(keys: list, initial, description: str):
    """The key the explorer opens on: ``initial`` (the notebook's own value) or the middle key."""
    if initial is None:
        return keys[len(keys) // 2]
    for key in keys:
        if key == initial:
            return key
    raise ValueError(f"initial={initial!r} is not one of the explorer's {description} values; valid: {keys}")


def slider_explorer(cache: Mapping[Hashable, object], draw: Callable[[object, plt.Axes], None],
                    description: str = "value", title: Callable[[Hashable], str] | None = None, *,
                    initial: Hashable | None = None):
    """A selection slider over ``cache``'s keys that redraws ``draw(cache[key], ax)``.

    ``initial`` is the key it opens on: pass the notebook's own parameter (e.g. ``initial=bits``)
    so that the static view (``FEDLAB_WIDGETS=0``: HTML, ``run``, the grader) shows the value the
    notebook uses, with a line saying that the slider is live in JupyterLab.  It must be one of
    the keys (``ValueError`` otherwise); ``None`` opens on the middle key.  All the work is done
    before: the slider only looks results up, so it is instant.
    """
    keys = list(cache)
    if not keys:
        raise ValueError("cache={} is empty; pass at least one precomputed result")
    start = _initial_key(keys, initial, description)

    def render(key) -> None:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        draw(cache[key], ax)
        if title:
            ax.set_title(title(key))
        plt.show()

    if not widgets_enabled():
        print(static_note(description, start, keys))
        render(start)
        return None
    import ipywidgets as widgets

    output = widgets.Output()

    def show(change=None) -> None:
        with output:
            output.clear_output(wait=True)
            render(slider.value)

    slider = widgets.SelectionSlider(options=keys, value=start, description=description,
                                     continuous_update=False)
    slider.observe(show, names="value")
    show()
    return widgets.VBox([slider, output])


def alpha_explorer(labels, num_clients: int, num_classes: int, alphas=(0.01, 0.05, 0.1, 0.3, 1.0, 3.0, 100.0),
                   seed: int = 0, *, initial: float | None = None):
    """Slider over Dirichlet α showing the label heatmap and the skew it produces.

    ``initial`` is the notebook's own α: the explorer opens on it (and adds it to ``alphas`` if
    it is not there), so the static view shows the partition the lesson trains on.
    """
    from fedlab_utils.data import label_counts, label_skew, partition
    from fedlab_utils.viz.plotting import plot_label_heatmap

    alphas = sorted({*alphas, *(() if initial is None else (initial,))})
    cache = {a: label_counts(partition(labels, num_clients, "dirichlet", alpha=a, seed=seed), labels, num_classes)
             for a in alphas}

    def draw(counts: np.ndarray, ax) -> None:
        plot_label_heatmap(counts, ax=ax)

    def title(a) -> str:
        return figure_label(N_("Dirichlet α={alpha}: skew {skew:.2f}")).format(alpha=a, skew=label_skew(cache[a]))

    return slider_explorer(cache, draw, "α", title=title, initial=initial)
