"""Explorers: an interactive widget in JupyterLab, their default view when headless (FEDLAB_WIDGETS=0)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from fedlab_utils import widgets  # noqa: E402

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
    assert widgets.budget_planner(SUMMARIES, ["phone-wifi"], "phone-wifi", 0.8) is None
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
    assert isinstance(widgets.budget_planner(SUMMARIES, ["phone-wifi"], "phone-wifi", 0.8), ipywidgets.VBox)
