"""ipywidgets explorers.  Each returns a widget, draws from cached results, and does nothing
heavy at import (ipywidgets itself is imported only when an explorer is built)."""
from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["slider_explorer", "alpha_explorer"]


def slider_explorer(cache: Mapping[Hashable, object], draw: Callable[[object, plt.Axes], None],
                    description: str = "value", title: Callable[[Hashable], str] | None = None):
    """A selection slider over ``cache``'s keys that redraws ``draw(cache[key], ax)``.

    All the work is done before: the slider only looks results up, so it is instant.
    """
    import ipywidgets as widgets

    keys = list(cache)
    output = widgets.Output()

    def show(change=None) -> None:
        key = slider.value
        with output:
            output.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6.4, 3.6))
            draw(cache[key], ax)
            if title:
                ax.set_title(title(key))
            plt.show()

    slider = widgets.SelectionSlider(options=keys, value=keys[len(keys) // 2], description=description,
                                     continuous_update=False)
    slider.observe(show, names="value")
    show()
    return widgets.VBox([slider, output])


def alpha_explorer(labels, num_clients: int, num_classes: int, alphas=(0.01, 0.05, 0.1, 0.3, 1.0, 3.0, 100.0),
                   seed: int = 0):
    """Slider over Dirichlet α showing the label heatmap and the skew it produces."""
    from .data import label_counts, label_skew, partition
    from .plotting import plot_label_heatmap

    cache = {a: label_counts(partition(labels, num_clients, "dirichlet", alpha=a, seed=seed), labels, num_classes)
             for a in alphas}

    def draw(counts: np.ndarray, ax) -> None:
        plot_label_heatmap(counts, ax=ax)

    return slider_explorer(cache, draw, "α", title=lambda a: f"Dirichlet α={a}: skew {label_skew(cache[a]):.2f}")
