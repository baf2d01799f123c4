"""ipywidgets explorers.  Each returns a widget, draws from cached results, and does nothing
heavy at import (ipywidgets itself is imported only when an explorer is built)."""
from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["slider_explorer", "alpha_explorer", "budget_planner"]


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


def budget_planner(summaries, profiles, default_profile: str = "phone-wifi", default_target: float = 0.8,
                   targets=None):
    """Energy-budget planner over cached runs (notebook 06): pick a device profile and a target
    accuracy; it shows the cheapest configuration that reached the target (nothing is retrained).

    ``summaries`` maps a configuration's name to :func:`fedlab_utils.capstone.config_summary`.
    """
    import ipywidgets as widgets

    from .capstone import plan_budget

    targets = targets or [round(t, 2) for t in np.arange(0.50, 0.96, 0.01)]
    if default_target not in targets:
        targets = sorted({*targets, default_target})
    output = widgets.Output()
    profile = widgets.Dropdown(options=list(profiles), value=default_profile, description="profile")
    target = widgets.SelectionSlider(options=targets, value=default_target, description="target acc",
                                     continuous_update=False)

    def show(change=None) -> None:
        with output:
            output.clear_output(wait=True)
            choice = plan_budget(summaries, profile.value, target.value)
            if choice is None:
                print(f"no configuration run here reached {100 * target.value:.0f}% accuracy")
                return
            s = summaries[choice["config"]]
            floor = s["radio_floor_joules"][profile.value] * choice["round"] / s["rounds"]
            print(f"cheapest on {profile.value} to reach {100 * target.value:.0f}%: {choice['config']!r}, "
                  f"round {choice['round']}, {choice['joules']:.2f} J modelled "
                  f"(radio-session floor of those rounds about {floor:.2f} J)")
            costs = {name: plan_budget({name: summ}, profile.value, target.value) for name, summ in summaries.items()}
            for name, c in sorted(costs.items(), key=lambda kv: np.inf if kv[1] is None else kv[1]["joules"]):
                print(f"  {name:24s} " + ("never reached" if c is None else f"{c['joules']:10.2f} J at round {c['round']}"))

    profile.observe(show, names="value")
    target.observe(show, names="value")
    show()
    return widgets.VBox([widgets.HBox([profile, target]), output])
