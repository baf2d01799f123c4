"""Explorers: an interactive widget in JupyterLab, their default view when headless (FEDLAB_WIDGETS=0)."""
from __future__ import annotations

import matplotlib

from fedlab_utils.lessons.capstone import budget_planner

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from fedlab_utils.viz import widgets

SUMMARIES = {
    "cheap": {"accuracy": [0.5, 0.85], "cumulative_joules": {"phone-wifi": [1.0, 2.0]},
              "radio_floor_joules": {"phone-wifi": 1.0}, "rounds": 2},
    "dear": {"accuracy": [0.9, 0.9], "cumulative_joules": {"phone-wifi": [5.0, 10.0]},
             "radio_floor_joules": {"phone-wifi": 2.0}, "rounds": 2},
}


def test_headless_slider_draws_the_middle_key_and_returns_none(monkeypatch):
    monkeypatch.setenv(widgets.WIDGETS_ENV, "0")
    drawn = []
    plt.close("all")
    out = widgets.slider_explorer({1: "a", 2: "b", 3: "c"}, lambda value, ax: drawn.append(value), "k")
    assert out is None and drawn == ["b"]


def test_headless_planner_prints_the_default_choice(monkeypatch, capsys):
    monkeypatch.setenv(widgets.WIDGETS_ENV, "0")
    assert budget_planner(SUMMARIES, ["phone-wifi"], "phone-wifi", 0.8) is None
    text = capsys.readouterr().out
    assert "'cheap', round 2, 2.00 J" in text and "dear" in text


@pytest.mark.parametrize("value", [None, "1"])
def test_interactive_explorers_are_widgets(monkeypatch, value):
    ipywidgets = pytest.importorskip("ipywidgets")
    if value is None:
        monkeypatch.delenv(widgets.WIDGETS_ENV, raising=False)
    else:
        monkeypatch.setenv(widgets.WIDGETS_ENV, value)
    drawn = []
    box = widgets.slider_explorer({1: "a", 2: "b"}, lambda v, ax: drawn.append(v), "k")
    assert isinstance(box, ipywidgets.VBox) and drawn == ["b"]
    box.children[0].value = 1  # moving the slider redraws from the cache
    assert drawn == ["b", "a"]
    assert isinstance(budget_planner(SUMMARIES, ["phone-wifi"], "phone-wifi", 0.8), ipywidgets.VBox)


def test_headless_slider_opens_on_the_notebooks_value_and_says_the_slider_is_live(monkeypatch, capsys):
    monkeypatch.setenv(widgets.WIDGETS_ENV, "0")
    drawn = []
    plt.close("all")
    assert widgets.slider_explorer({2: "a", 4: "b", 8: "c"}, lambda v, ax: drawn.append(v), "bits", initial=8) is None
    assert drawn == ["c"]
    text = capsys.readouterr().out
    assert "bits = 8, this notebook's value" in text and "live slider" in text and "2, 4" in text


def test_slider_refuses_an_initial_value_it_has_not_computed(monkeypatch):
    monkeypatch.setenv(widgets.WIDGETS_ENV, "0")
    with pytest.raises(ValueError, match=r"initial=5 .*valid: \[2, 4\]"):
        widgets.slider_explorer({2: "a", 4: "b"}, lambda v, ax: None, "bits", initial=5)


def test_alpha_explorer_shows_the_notebooks_alpha_even_if_not_listed(monkeypatch, capsys):
    import torch

    monkeypatch.setenv(widgets.WIDGETS_ENV, "0")
    plt.close("all")
    labels = torch.arange(10).repeat(20)
    widgets.alpha_explorer(labels, 4, 10, alphas=(0.1, 1.0), initial=0.07)
    assert "α = 0.07, this notebook's value" in capsys.readouterr().out
    assert "α=0.07" in plt.gcf().axes[0].get_title()


def test_interactive_slider_opens_on_initial(monkeypatch):
    ipywidgets = pytest.importorskip("ipywidgets")
    monkeypatch.delenv(widgets.WIDGETS_ENV, raising=False)
    box = widgets.slider_explorer({1: "a", 2: "b", 3: "c"}, lambda v, ax: None, "k", initial=1)
    assert isinstance(box, ipywidgets.VBox) and box.children[0].value == 1
