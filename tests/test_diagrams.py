"""The diagrams draw the lesson's own numbers: widths are the profile's durations, labels the
real payload sizes, and bad input is refused with the parameter's name."""
from __future__ import annotations

import dataclasses

import matplotlib

from fedlab_utils.ledger import draw_radio_timeline
from fedlab_utils.lessons.parallel import cut_payloads, draw_split_cut

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.patches import Rectangle

from fedlab_utils.compression import ErrorFeedback, TopKCodec
from fedlab_utils.ledger import PROFILES
from fedlab_utils.models import make_model
from fedlab_utils.viz import diagrams


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _rects(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid()]


def _texts(ax) -> str:
    return "\n".join(t.get_text() for t in ax.texts) + "\n" + ax.get_title()


@pytest.mark.parametrize("name", ["phone-lte", "phone-wifi", "edge-gpu-wifi"])
def test_timeline_boxes_are_the_profiles_phases(name):
    profile = PROFILES[name]
    flops, up, down = 2.0e9, 203_560, 203_560
    fig, (ax,) = draw_radio_timeline(name, flops=flops, bytes_up=up, bytes_down=down)
    phases = profile.timeline(flops, up, down)
    rects = _rects(ax)
    assert [r.get_gid() for r in rects] == [ph.name for ph in phases]
    for r, ph in zip(rects, phases):
        assert r.get_x() == pytest.approx(ph.start_s) and r.get_width() == pytest.approx(ph.duration_s)
    # the last box is a full tail at the radio's own tail duration; the legend states its power
    assert rects[-1].get_gid() == "tail" and rects[-1].get_width() == pytest.approx(profile.radio.tail_s)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    tail_line = next(t for t in legend if "tail:" in t)
    assert f"{profile.radio.tail_mw / 1e3:.3g} W" in tail_line
    promotion_line = next(t for t in legend if "promotion:" in t)
    assert f"{profile.radio.promotion_mw / 1e3:.3g} W" in promotion_line
    energy = profile.energy(flops, up, down)
    assert f"promotions + tails {energy.radio_fixed:.3g} J of {energy.total:.3g} J" in ax.get_title()


def test_lte_hand_computed_timeline():
    """Hand computation on LTE: 6 Mbps up, 13 Mbps down, 5 GFLOP/s: 130,000 B down is 80 ms,
    1e9 FLOPs are 0.2 s, the upload starts inside the 11.576 s tail so it pays no promotion."""
    fig, (ax,) = draw_radio_timeline("phone-lte", flops=1e9, bytes_up=75_000, bytes_down=130_000)
    widths = {r.get_gid(): r.get_width() for r in _rects(ax) if r.get_gid() != "tail"}
    assert widths == pytest.approx({"promotion": 0.2601, "download": 0.08, "compute": 0.2, "upload": 0.1})
    tails = [r.get_width() for r in _rects(ax) if r.get_gid() == "tail"]
    assert tails == pytest.approx([0.2, 11.576])  # cut short by the upload, then a full one


def test_two_promotions_when_compute_outlasts_the_tail():
    wifi = PROFILES["phone-wifi"]
    flops = 2 * wifi.radio.tail_s * wifi.flops_per_second  # compute twice as long as the tail
    fig, (ax,) = draw_radio_timeline(wifi, flops=flops, bytes_up=1000, bytes_down=1000)
    assert [r.get_gid() for r in _rects(ax)].count("promotion") == 2
    assert any(t.get_text().startswith("2x promotion") for t in ax.get_legend().get_texts())


def test_timeline_follows_a_replaced_profile():
    mine = dataclasses.replace(PROFILES["phone-lte"], radio=dataclasses.replace(PROFILES["phone-lte"].radio, tail_s=3.0))
    fig, (ax,) = draw_radio_timeline(mine, flops=1e9, bytes_up=1000, bytes_down=1000)
    assert _rects(ax)[-1].get_width() == pytest.approx(3.0)


def test_two_profiles_two_rows_and_no_legend_over_the_bars():
    fig, axes = draw_radio_timeline(["phone-lte", "phone-wifi"], flops=1e9, bytes_up=1000, bytes_down=1000)
    assert len(axes) == 2 and "LTE" in axes[0].get_title() and "WiFi" in axes[1].get_title()
    fig.canvas.draw()
    for ax in axes:
        legend_box, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert legend_box.x0 >= axes_box.x1 - 1  # the legend sits right of the plotting area


@pytest.mark.parametrize("kwargs, word", [({"bytes_up": 0, "bytes_down": 0}, "bytes_up=0"),
                                          ({"bytes_up": -1, "bytes_down": 5}, "bytes_up=-1"),
                                          ({"bytes_up": 5, "bytes_down": 5, "flops": -2.0}, "flops=-2.0")])
def test_timeline_refuses_bad_input(kwargs, word):
    with pytest.raises(ValueError, match=word.replace("-", "\\-")):
        draw_radio_timeline("phone-lte", **kwargs)


def test_timeline_refuses_unknown_profile():
    with pytest.raises(ValueError, match="phone-5g"):
        draw_radio_timeline("phone-5g", bytes_up=1, bytes_down=1)


@pytest.mark.parametrize("cut, shape", [(3, "20×8×14×14"), (6, "20×16×7×7"), (7, "20×784")])
def test_split_cut_labels_are_the_real_activation_size(cut, shape):
    torch.manual_seed(0)
    model = make_model("cnn", (1, 28, 28), 10)
    x = torch.zeros(20, 1, 28, 28)
    with torch.no_grad():
        act = torch.nn.Sequential(*list(model)[:cut])(x)
    real_bytes = 4 * act.numel()  # fp32 on the wire
    info = cut_payloads(model, cut, (1, 28, 28), batch_size=20)
    assert info["activation_bytes"] == real_bytes == info["gradient_bytes"]
    fig, ax = draw_split_cut(model, cut, (1, 28, 28), batch_size=20)
    text = _texts(ax)
    assert f"activations {shape} = {diagrams.fmt_bytes(real_bytes)}" in text
    assert f"gradients = {diagrams.fmt_bytes(real_bytes)}" in text
    assert f"client: layers 0-{cut - 1}" in text and f"cut_layer={cut}: client runs layers 0-{cut - 1}" in text
    client_boxes = [p for p in ax.patches if (p.get_gid() or "").startswith("layer ")]
    assert len(client_boxes) == len(model)
    assert len({tuple(p.get_facecolor()) for p in client_boxes[:cut]}) == 1
    assert client_boxes[0].get_facecolor() != client_boxes[cut].get_facecolor()


def test_split_cut_hand_computed_bytes():
    assert diagrams.fmt_bytes(20 * 8 * 14 * 14 * 4) == "125.4 KB"  # 125,440 bytes
    info = cut_payloads(make_model("cnn", (1, 28, 28), 10), 3, (1, 28, 28), batch_size=20)
    assert info["activation_bytes"] == 125_440 and info["activation_shape"] == (20, 8, 14, 14)


def test_split_cut_refuses_a_cut_outside_the_model():
    with pytest.raises(ValueError, match="cut_layer=8"):
        draw_split_cut(make_model("cnn", (1, 28, 28), 10), 8, (1, 28, 28))


def test_error_feedback_step_keeps_what_it_drops():
    torch.manual_seed(0)
    update = {"w": torch.randn(40, 25), "b": torch.zeros(7)}
    residual = {"w": torch.randn(40, 25) * 0.1, "b": torch.zeros(7)}
    codec = ErrorFeedback(TopKCodec(0.02))
    step = diagrams.error_feedback_step(codec, update, residual)
    for k in update:  # sent + kept == update + old residual, exactly
        assert torch.equal(step["sent"][k] + step["residual"][k], update[k] + residual[k])
    assert codec.residuals == {}  # the caller's codec is untouched
    assert step["entries"] == 1007
    assert step["sent_nonzero"] == 21  # ceil(2 % of 1,007): top-k picks the 21 largest weights, never a zero bias
    assert step["sent_nonzero"] + step["residual_nonzero"] + step["both_zero"] == step["entries"]
    assert step["both_nonzero"] == 0 and step["both_zero"] == 7
    fig, ax = diagrams.draw_error_feedback_loop(codec, update, residual)
    text = _texts(ax)
    assert f"{diagrams.fmt_bytes(len(TopKCodec(0.02).encode(step['corrected'])))}, 21 nonzeros" in text
    assert f"kept on the client: {step['residual_nonzero']:,} nonzeros" in text
    assert "exactly zero in both: 7" in text


def test_error_feedback_loop_without_numbers_draws_symbols():
    fig, ax = diagrams.draw_error_feedback_loop()
    assert "nonzeros" not in _texts(ax) and {"update", "codec", "sent", "residual"} <= {
        p.get_gid() for p in ax.patches}


def test_federated_round_shows_the_lessons_numbers():
    fig, ax = diagrams.draw_federated_round(10, num_clients=20, local_epochs=2, batch_size=20,
                                            bytes_down=203_560, bytes_up=203_560)
    text = _texts(ax)
    assert "samples 10 of 20 clients" in text and "2 epochs of SGD, batch 20" in text
    assert "download (each)\n$w_t$: 203.6 KB" in text and "upload (each)\n$\\Delta_k$: 203.6 KB" in text
    assert "client 10" in text and "…" in text
    assert sum((p.get_gid() or "").startswith("client ") for p in ax.patches) == 3


@pytest.mark.parametrize("kwargs, word", [({"clients_per_round": 0}, "clients_per_round=0"),
                                          ({"clients_per_round": 5, "num_clients": 3}, "num_clients=3")])
def test_federated_round_refuses_bad_counts(kwargs, word):
    with pytest.raises(ValueError, match=word):
        diagrams.draw_federated_round(**kwargs)


@pytest.mark.parametrize("n, drawn", [(1, 1), (2, 2), (4, 4), (9, 4)])
def test_flower_processes_one_box_per_supernode(n, drawn):
    fig, ax = diagrams.draw_flower_processes(n, rounds=2)
    gids = [p.get_gid() or "" for p in ax.patches]
    assert sum(g.startswith("supernode ") for g in gids) == drawn == sum(g.startswith("clientapp ") for g in gids)
    assert gids.count("superlink") == 1 and f"{n} SuperNodes, 2 rounds" in ax.get_title()
    if n > 4:
        assert f"supernode {n - 1}" in gids


def test_flower_processes_refuses_zero_nodes():
    with pytest.raises(ValueError, match="supernodes=0"):
        diagrams.draw_flower_processes(0)
