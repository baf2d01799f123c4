"""Diagrams of the course's key ideas, drawn with matplotlib from the objects the lessons use.

Each function draws one idea and takes its numbers from the same objects a lesson measures with,
so a diagram cannot disagree with the model it shows:

* :func:`draw_federated_round` – server, clients, download, local training, upload, aggregation (00);
* :func:`draw_radio_timeline` – one client-round of a device profile in time: the radio's
  promotion, transfers and tail, laid out by :meth:`EnergyProfile.timeline` (00, 06);
* :func:`draw_error_feedback_loop` – error feedback's residual loop around a lossy codec (02);
* :func:`draw_split_cut` – what crosses split learning's cut: activations up, their gradients
  down, with sizes from the model (05);
* :func:`draw_flower_processes` – Flower's SuperLink, SuperNodes and ClientApps as processes (07).

Every function returns ``(figure, axes)`` like :mod:`fedlab_utils.plotting`.  Text in plots is
English only (a fresh machine may have no CJK font).  Drawn shapes carry a ``gid`` (e.g.
``"tail"`` or ``"layer 3"``) so that tests and readers can find what stands for what.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyBboxPatch, Rectangle
from torch import nn

from .ledger import EnergyProfile, RadioPhase, get_profile
from .validation import check_int

__all__ = ["draw_federated_round", "draw_radio_timeline", "radio_timeline_phases", "draw_error_feedback_loop",
           "error_feedback_step", "draw_split_cut", "cut_payloads", "draw_flower_processes", "PHASE_COLORS"]

#: One colour per phase of a client-round's timeline (radio phases and the CPU's compute).
PHASE_COLORS = {"promotion": "#C44E52", "download": "#55A868", "compute": "#4C72B0", "upload": "#DD8452",
                "tail": "#8172B3"}
_SERVER, _CLIENT, _WIRE = "#E8EEF7", "#FDF1E6", "0.25"


def _fmt_bytes(n: float) -> str:
    """``1,234 B``, ``203.6 KB`` or ``2.1 MB`` (decimal units, as the ledger's MB)."""
    if n < 1e4:
        return f"{int(n):,} B"
    if n < 1e6:
        return f"{n / 1e3:,.1f} KB"
    return f"{n / 1e6:,.2f} MB"


def _new_axes(ax, figsize: tuple[float, float]):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str, gid: str, fontsize: float = 9):
    """A rounded box centred on (x, y) with ``text`` in it."""
    patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.04",
                           facecolor=color, edgecolor="0.3", lw=1, gid=gid)
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return patch


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], text: str = "", color: str = _WIRE,
           offset: tuple[float, float] = (0, 0), ls: str = "-", rad: float = 0.0, fontsize: float = 8, gid: str = ""):
    ax.annotate("", xy=end, xytext=start, gid=gid or None,
                arrowprops=dict(arrowstyle="-|>", color=color, lw=1.3, ls=ls, shrinkA=2, shrinkB=2,
                                connectionstyle=f"arc3,rad={rad}"))
    if text:
        mid = ((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1])
        ax.text(*mid, text, ha="center", va="center", fontsize=fontsize, color=color,
                bbox=dict(facecolor="white", edgecolor="none", alpha=0.85, pad=1), gid=gid or None)


def _blank(ax, xlim: tuple[float, float], ylim: tuple[float, float]) -> None:
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("auto")
    ax.axis("off")


# ----------------------------------------------------------------------------- 00: a federated round
def draw_federated_round(clients_per_round: int = 3, *, num_clients: int | None = None,
                         local_epochs: int | None = None, batch_size: int | None = None,
                         bytes_down: int | None = None, bytes_up: int | None = None, ax=None):
    """One round of FedAvg: the server sends ``w_t`` down to the sampled clients, each trains
    locally, sends its update ``Δ_k`` up, and the server takes the sample-weighted average.

    Pass the lesson's own numbers (``clients_per_round``, ``num_clients``, ``local_epochs``,
    ``batch_size``, and the payload sizes ``bytes_down``/``bytes_up`` as ``len()`` of the real
    payloads); any left ``None`` is drawn as a symbol.  At most three clients are drawn; more
    are shown as "…" with the count in the label.
    """
    check_int("clients_per_round", clients_per_round, 1)
    if num_clients is not None:
        check_int("num_clients", num_clients, clients_per_round)
    fig, ax = _new_axes(ax, (9.0, 4.4))
    _blank(ax, (0, 10), (0, 5.2))
    sampled = f"{clients_per_round} of {num_clients}" if num_clients is not None else f"m = {clients_per_round}"
    _box(ax, 5, 4.45, 4.6, 0.8, f"server: global model $w_t$\n(samples {sampled} clients)", _SERVER, "server")
    shown = list(range(min(clients_per_round, 3)))
    xs = [1.8, 5.0, 8.2][: len(shown)] if len(shown) == 3 else ([3.2, 6.8] if len(shown) == 2 else [5.0])
    epochs = "E" if local_epochs is None else str(local_epochs)
    batch = "B" if batch_size is None else str(batch_size)
    down = "$w_t$" if bytes_down is None else f"$w_t$: {_fmt_bytes(bytes_down)}"
    up = "$\\Delta_k$" if bytes_up is None else f"$\\Delta_k$: {_fmt_bytes(bytes_up)}"
    for i, x in zip(shown, xs):
        name = f"client {i + 1}" if (i < 2 or clients_per_round == 3) else f"client {clients_per_round}"
        k = str(i + 1) if (i < 2 or clients_per_round == 3) else "m"
        _box(ax, x, 1.25, 2.5, 1.1, f"{name}: private data $n_{k}$\n{epochs} epochs of SGD, batch {batch}\n"
                                   f"$w_t \\to w_t^{{{k}}}$", _CLIENT, f"client {i + 1}")
        top = 5.0 + 0.4 * (x - 5.0)  # where this client's arrows meet the server box
        _arrow(ax, (top - 0.25, 4.05), (x - 0.45, 1.85), f"1  download (each)\n{down}" if i == 0 else "",
               color=PHASE_COLORS["download"], offset=(-0.7, 0), gid="download")
        _arrow(ax, (x + 0.45, 1.85), (top + 0.25, 4.05), f"3  upload (each)\n{up}" if i == len(shown) - 1 else "",
               color=PHASE_COLORS["upload"], offset=(0.7, 0), gid="upload")
    if clients_per_round > 3:
        ax.text((xs[1] + xs[2]) / 2, 1.25, "…", ha="center", va="center", fontsize=16)
    ax.text(5, 0.35, "2  local training on each client's own data (the data never leaves the device)",
            ha="center", fontsize=8.5, color=PHASE_COLORS["compute"], gid="train")
    ax.text(5, 5.1, "4  aggregate: $w_{t+1} = w_t + \\sum_k \\frac{n_k}{n}\\,\\Delta_k$,  $n = \\sum_k n_k$"
                    "  (sampled clients only)", ha="center", fontsize=9, gid="aggregate")
    ax.set_title("One round of federated averaging (FedAvg)", fontsize=10, pad=14)
    return fig, ax


# ----------------------------------------------------------------------------- 00, 06: the radio timeline
def radio_timeline_phases(profile: str | EnergyProfile, flops: float, bytes_up: float, bytes_down: float
                          ) -> list[RadioPhase]:
    """The phases :func:`draw_radio_timeline` draws: exactly ``profile.timeline(...)``."""
    return get_profile(profile).timeline(flops, bytes_up, bytes_down)


def _draw_one_timeline(ax, profile: EnergyProfile, flops: float, bytes_up: float, bytes_down: float) -> None:
    phases = profile.timeline(flops, bytes_up, bytes_down)
    lanes = {"compute": 0.0}
    for ph in phases:
        lane = lanes.get(ph.name, 1.0)
        ax.add_patch(Rectangle((ph.start_s, lane - 0.35), ph.duration_s, 0.7, facecolor=PHASE_COLORS[ph.name],
                               edgecolor="none", gid=ph.name, label=ph.name))
    end = max(ph.end_s for ph in phases)
    ax.set_xlim(0, end * 1.02)
    ax.set_ylim(-0.6, 1.6)
    ax.set_yticks([0, 1], ["CPU", "radio"])
    ax.grid(axis="y", visible=False)
    energy = profile.energy(flops, bytes_up, bytes_down)
    ax.set_xlabel("time in the client-round (s)")
    ax.set_title(f"{profile.name} ({profile.radio.name}): one client-round, {_fmt_bytes(bytes_down)} down, "
                 f"{_fmt_bytes(bytes_up)} up: promotions + tails {energy.radio_fixed:.3g} J of {energy.total:.3g} J",
                 fontsize=9)
    # one legend entry per phase kind with its power, time and joules, outside the bars (right)
    handles, labels, seen = [], [], {}
    for ph in phases:
        seen.setdefault(ph.name, []).append(ph)
    for name, group in seen.items():
        seconds = sum(p.duration_s for p in group)
        joules = sum(p.joules for p in group)
        handles.append(Rectangle((0, 0), 1, 1, facecolor=PHASE_COLORS[name]))
        times = f"{len(group)}x " if len(group) > 1 else ""
        labels.append(f"{times}{name}: {group[0].watts:.3g} W, {_fmt_seconds(seconds)}, {joules:.3g} J")
    ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)


def _fmt_seconds(s: float) -> str:
    return f"{1e3 * s:.3g} ms" if s < 1 else f"{s:.3g} s"


def draw_radio_timeline(profile: str | EnergyProfile | Sequence[str | EnergyProfile], *, flops: float = 0.0,
                        bytes_up: float = 0.0, bytes_down: float = 0.0, axes=None):
    """One client-round in time for each profile: the radio's promotion from idle, the download,
    the compute (CPU lane), the upload's promotion (if the tail ran out) and the tail after the
    last byte, with each phase's power, duration and joules in the legend.

    The boxes are exactly :meth:`EnergyProfile.timeline` for ``flops`` of local training and the
    given payload sizes (``len()`` of the real payloads), so widths are the profile's durations
    and the legend's watts its powers.  ``profile`` is a name, a profile, or a list of them (one
    row each, e.g. ``["phone-lte", "phone-wifi"]``: their time axes differ by 50x, so each row has
    its own).  Returns ``(figure, axes)``, one axis per profile.
    """
    profiles = [profile] if isinstance(profile, (str, EnergyProfile)) else list(profile)
    if not profiles:
        raise ValueError("profile=[] is empty; pass a profile name, an EnergyProfile, or a list of them")
    profiles = [get_profile(p) for p in profiles]
    for label, value in (("flops", flops), ("bytes_up", bytes_up), ("bytes_down", bytes_down)):
        if value < 0:
            raise ValueError(f"{label}={value!r} is negative; pass a count (>= 0)")
    if bytes_up == 0 and bytes_down == 0:
        raise ValueError("bytes_up=0 and bytes_down=0: a client-round without a transfer has no radio phase to draw; "
                         "pass the payload sizes in bytes")
    if axes is None:
        fig, axes = plt.subplots(len(profiles), 1, figsize=(9.5, 1.9 * len(profiles) + 0.3), squeeze=False)
        axes = list(axes[:, 0])
    else:
        axes = list(np.atleast_1d(axes))
        if len(axes) != len(profiles):
            raise ValueError(f"axes has {len(axes)} axes for {len(profiles)} profiles; pass one axis per profile")
        fig = axes[0].figure
    for ax, p in zip(axes, profiles):
        _draw_one_timeline(ax, p, flops, bytes_up, bytes_down)
    fig.tight_layout()
    return fig, axes


# ----------------------------------------------------------------------------- 02: error feedback
def error_feedback_step(codec, update: dict[str, torch.Tensor], residual: dict[str, torch.Tensor] | None = None
                        ) -> dict[str, object]:
    """One error-feedback step around ``codec`` (a copy: the caller's codec state is untouched).

    Returns ``corrected = update + residual``, ``payload`` (the bytes sent), ``sent`` (what the
    server decodes), ``residual`` (``corrected - sent``, kept for the next round) and counts of
    entries: ``entries``, ``sent_nonzero``, ``residual_nonzero``, ``both_zero`` and ``both_nonzero``.
    An :class:`~fedlab_utils.compression.ErrorFeedback` codec is unwrapped to its inner codec.
    """
    inner = copy.deepcopy(getattr(codec, "inner", codec))
    corrected = {k: v.detach() + (residual[k] if residual is not None else 0) for k, v in update.items()}
    payload = inner.encode(corrected, 0)
    sent = inner.decode(payload, corrected)
    new_residual = {k: corrected[k] - sent[k] for k in corrected}
    s = torch.cat([sent[k].flatten() != 0 for k in sent])
    r = torch.cat([new_residual[k].flatten() != 0 for k in new_residual])
    return {"corrected": corrected, "payload": payload, "sent": sent, "residual": new_residual,
            "entries": int(s.numel()), "sent_nonzero": int(s.sum()), "residual_nonzero": int(r.sum()),
            "both_zero": int((~s & ~r).sum()), "both_nonzero": int((s & r).sum())}


def draw_error_feedback_loop(codec=None, update: dict[str, torch.Tensor] | None = None,
                             residual: dict[str, torch.Tensor] | None = None, *, ax=None):
    """Error feedback's loop on one client: add the residual ``e_t`` to the update, compress,
    send ``C(Δ + e_t)``, and keep what compression dropped, ``e_{t+1} = Δ + e_t − C(Δ + e_t)``.

    With ``codec`` and ``update`` (and optionally the client's current ``residual``) the boxes
    carry this step's numbers from :func:`error_feedback_step`: bytes sent (``len()`` of the
    payload), nonzeros sent and kept, and the entries that are exactly zero in both.
    """
    fig, ax = _new_axes(ax, (9.0, 3.6))
    _blank(ax, (0, 10), (0, 4.2))
    step = None if codec is None or update is None else error_feedback_step(codec, update, residual)
    name = "C" if codec is None else getattr(getattr(codec, "inner", codec), "name", type(codec).__name__)
    upd = "local update $\\Delta$" + ("" if step is None else f"\n{step['entries']:,} entries")
    _box(ax, 1.2, 3.0, 2.0, 0.9, upd, _CLIENT, "update")
    ax.add_patch(plt.Circle((3.2, 3.0), 0.28, facecolor="white", edgecolor="0.3", gid="sum"))
    ax.text(3.2, 3.0, "+", ha="center", va="center", fontsize=14)
    _box(ax, 5.3, 3.0, 2.2, 0.9, f"compress\n{name}", "#F2F2F2", "codec")
    sent = "sent $C(\\Delta + e_t)$" + ("" if step is None else
                                        f"\n{_fmt_bytes(len(step['payload']))}, {step['sent_nonzero']:,} nonzeros")
    _box(ax, 8.5, 3.0, 2.6, 0.9, sent, _SERVER, "sent")
    kept = "residual $e_{t+1} = \\Delta + e_t - C(\\Delta + e_t)$" + (
        "" if step is None else f"\nkept on the client: {step['residual_nonzero']:,} nonzeros")
    _box(ax, 5.3, 0.9, 4.6, 0.9, kept, _CLIENT, "residual")
    _arrow(ax, (2.2, 3.0), (2.92, 3.0))
    _arrow(ax, (3.48, 3.0), (4.2, 3.0), "$\\Delta + e_t$", offset=(0, 0.3))
    _arrow(ax, (6.4, 3.0), (7.2, 3.0), "uplink", offset=(0, 0.3), color=PHASE_COLORS["upload"])
    _arrow(ax, (6.0, 2.55), (6.0, 1.35), "what C dropped", offset=(0.85, 0))
    _arrow(ax, (3.0, 0.9), (3.2, 2.72), "$e_t$ next round", offset=(-0.75, 0), rad=-0.3)
    if step is not None:
        note = f"exactly zero in both: {step['both_zero']:,}"
        if step["both_nonzero"]:
            note += f"; nonzero in both: {step['both_nonzero']:,}"
        ax.text(8.5, 2.3, note, ha="center", va="top", fontsize=8, color="0.35")
    ax.set_title("Error feedback: nothing is lost, only delayed", fontsize=10)
    return fig, ax


# ----------------------------------------------------------------------------- 05: the split cut
def cut_payloads(model: nn.Sequential, cut_layer: int, input_shape: Sequence[int], *, batch_size: int = 1,
                 codec=None) -> dict[str, object]:
    """What crosses split learning's cut for one mini-batch, measured on ``model``.

    ``cut_layer`` is the index of the first server layer: the client runs layers
    ``0 … cut_layer−1``.  Returns the activation's shape, and ``activation_bytes`` and
    ``gradient_bytes`` as ``len()`` of the payloads ``codec`` (fp32 by default) would send,
    the same encoding as :class:`~fedlab_utils.split_learning.SplitFed`.
    """
    from .split_learning import split_at
    from .wire import Fp32Codec

    check_int("batch_size", batch_size, 1)
    codec = codec or Fp32Codec()
    client, server = split_at(model, cut_layer)
    device = next(model.parameters()).device
    x = torch.zeros(batch_size, *input_shape, device=device)
    probe_client, probe_server = copy.deepcopy(client), copy.deepcopy(server)
    act = probe_client(x)
    server_in = act.detach().requires_grad_()
    probe_server(server_in).sum().backward()
    return {"activation_shape": tuple(act.shape), "activation_bytes": len(copy.deepcopy(codec).encode({"a": act})),
            "gradient_bytes": len(copy.deepcopy(codec).encode({"g": server_in.grad})),
            "client_layers": [type(m).__name__ for m in client], "server_layers": [type(m).__name__ for m in server]}


def draw_split_cut(model: nn.Sequential, cut_layer: int, input_shape: Sequence[int], *, batch_size: int = 1,
                   codec=None, ax=None):
    """Split learning's cut: the model's layers in a row, the client's before the cut and the
    server's after it, with what crosses in each direction for one mini-batch of ``batch_size``:
    activations forward (up to the server), their gradients backward (down to the client).

    Sizes come from :func:`cut_payloads` on ``model`` itself.  ``cut_layer`` is the index of the
    first server layer, as in ``split_at``: "cut_layer=4" means the client runs the first 4 layers (0-3).
    """
    info = cut_payloads(model, cut_layer, input_shape, batch_size=batch_size, codec=codec)
    layers = [type(m).__name__ for m in model]
    n = len(layers)
    fig, ax = _new_axes(ax, (max(8.0, 1.05 * n + 1.5), 3.8))
    _blank(ax, (-0.2, n + 0.2), (0, 4.0))
    for i, name in enumerate(layers):
        side = _CLIENT if i < cut_layer else _SERVER
        _box(ax, i + 0.5, 2.0, 0.9, 0.8, f"{i}\n{name}", side, f"layer {i}", fontsize=10)
    ax.axvline(cut_layer, ymin=0.08, ymax=0.92, color="#C44E52", ls="--", lw=1.5, gid="cut")
    ax.text(cut_layer / 2, 3.55, f"client: layers 0-{cut_layer - 1}", ha="center", fontsize=12)
    ax.text((cut_layer + n) / 2, 3.55, f"server: layers {cut_layer}-{n - 1}", ha="center", fontsize=12)
    shape = "×".join(str(d) for d in info["activation_shape"])
    _arrow(ax, (cut_layer - 0.45, 2.75), (cut_layer + 0.45, 2.75),
           f"forward: activations {shape} = {_fmt_bytes(info['activation_bytes'])}",
           color=PHASE_COLORS["upload"], offset=(0, 0.35), fontsize=11, gid="activations")
    _arrow(ax, (cut_layer + 0.45, 1.25), (cut_layer - 0.45, 1.25),
           f"backward: their gradients = {_fmt_bytes(info['gradient_bytes'])}",
           color=PHASE_COLORS["download"], offset=(0, -0.35), fontsize=11, gid="gradients")
    ax.set_title(f"Split learning, cut_layer={cut_layer}: client runs layers 0-{cut_layer - 1}, server the rest;\n"
                 f"what crosses per mini-batch of {batch_size}", fontsize=12)
    return fig, ax


# ----------------------------------------------------------------------------- 07: Flower's processes
def draw_flower_processes(supernodes: int, *, rounds: int | None = None, ax=None):
    """Flower's Deployment Engine as processes: ``flwr run`` submits the app to the SuperLink,
    which runs the ServerApp; each of the ``supernodes`` SuperNodes (one per device) pulls
    messages from the SuperLink and starts a ClientApp process for each message it gets.

    At most four SuperNodes are drawn; more are shown as "…" with the count in the label.
    """
    check_int("supernodes", supernodes, 1)
    fig, ax = _new_axes(ax, (9.5, 4.6))
    _blank(ax, (0, 10), (0, 5.2))
    _box(ax, 1.3, 4.4, 2.2, 0.8, "flwr run\n(your laptop)", "#F2F2F2", "flwr run")
    _box(ax, 5.0, 4.4, 3.2, 0.8, "flower-superlink\n(one process, the server)", _SERVER, "superlink")
    _box(ax, 8.7, 4.4, 2.2, 0.8, "ServerApp\n(strategy, rounds)", _SERVER, "serverapp")
    _arrow(ax, (2.4, 4.4), (3.4, 4.4), "submit app", offset=(0, 0.3))
    _arrow(ax, (6.6, 4.4), (7.6, 4.4), "starts", offset=(0, 0.3))
    shown = min(supernodes, 4)
    xs = np.linspace(1.4, 8.6, shown) if shown > 1 else np.array([5.0])
    for i, x in enumerate(xs):
        node = i if (i < shown - 1 or supernodes <= 4) else supernodes - 1
        _box(ax, x, 2.5, 1.9, 0.8, f"flower-supernode\nnode {node} (device)", _CLIENT, f"supernode {node}", fontsize=8)
        _box(ax, x, 0.9, 1.9, 0.7, "ClientApp\n(new process per message)", _CLIENT, f"clientapp {node}", fontsize=7.5)
        _arrow(ax, (x + 0.15, 2.9), (5.0 + 0.3 * (x - 5.0) / 4, 4.0), "pull / push" if i == 0 else "",
               color=PHASE_COLORS["download"], offset=(-0.4, 0))
        _arrow(ax, (x, 2.1), (x, 1.25), "starts" if i == 0 else "", offset=(0.35, 0))
    if supernodes > 4:
        ax.text((xs[-2] + xs[-1]) / 2, 2.5, "…", ha="center", va="center", fontsize=16)
    per = "" if rounds is None else f", {rounds} rounds"
    ax.set_title(f"Flower's Deployment Engine: 1 SuperLink, {supernodes} SuperNodes{per} (each box a process)",
                 fontsize=10)
    return fig, ax
