"""Diagrams of the course's key ideas, drawn with matplotlib from the objects the lessons use.

Each function draws one idea and takes its numbers from the same objects a lesson measures with,
so a diagram cannot disagree with the model it shows.  The helpers (:func:`box`, :func:`arrow`, ...)
draw the course's other diagrams too: the radio timeline (:mod:`fedlab_utils.ledger.radio_diagram`)
and split learning's cut (:mod:`fedlab_utils.lessons.parallel.split_learning`):


* :func:`draw_federated_round` – server, clients, download, local training, upload, aggregation (00);
* :func:`draw_error_feedback_loop` – error feedback's residual loop around a lossy codec (02);
* :func:`draw_flower_processes` – Flower's SuperLink, SuperNodes and ClientApps as processes (07).

Every function returns ``(figure, axes)`` like :mod:`fedlab_utils.viz.plotting`.  Text in plots is
the runtime catalog's (:func:`~fedlab_utils.viz.fonts.figure_label`): Chinese in the zh edition when
the CJK font draws it, English otherwise; a Chinese label keeps each ``$…$`` formula on a line of its own.  Drawn shapes carry a ``gid`` (e.g.
``"tail"`` or ``"layer 3"``) so that tests and readers can find what stands for what.
"""
from __future__ import annotations

import copy

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyBboxPatch

from fedlab_utils.i18n import N_
from fedlab_utils.validation import check_int
from fedlab_utils.viz.fonts import figure_label

__all__ = ["draw_federated_round", "draw_error_feedback_loop",
           "error_feedback_step", "draw_flower_processes", "PHASE_COLORS", "SERVER_COLOR", "CLIENT_COLOR", "WIRE_COLOR", "fmt_bytes",
           "new_axes", "box", "arrow", "blank"]

#: One colour per phase of a client-round's timeline (radio phases and the CPU's compute).
PHASE_COLORS = {"promotion": "#C44E52", "download": "#55A868", "compute": "#4C72B0", "upload": "#DD8452",
                "tail": "#8172B3"}
SERVER_COLOR, CLIENT_COLOR, WIRE_COLOR = "#E8EEF7", "#FDF1E6", "0.25"


def fmt_bytes(n: float) -> str:
    """``1,234 B``, ``203.6 KB`` or ``2.1 MB`` (decimal units, as the ledger's MB)."""
    if n < 1e4:
        return f"{int(n):,} B"
    if n < 1e6:
        return f"{n / 1e3:,.1f} KB"
    return f"{n / 1e6:,.2f} MB"


def new_axes(ax, figsize: tuple[float, float]):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def box(ax, x: float, y: float, w: float, h: float, text: str, color: str, gid: str, fontsize: float = 9):
    """A rounded box centred on (x, y) with ``text`` in it."""
    patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.04",
                           facecolor=color, edgecolor="0.3", lw=1, gid=gid)
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return patch


def arrow(ax, start: tuple[float, float], end: tuple[float, float], text: str = "", color: str = WIRE_COLOR,
           offset: tuple[float, float] = (0, 0), ls: str = "-", rad: float = 0.0, fontsize: float = 8, gid: str = ""):
    ax.annotate("", xy=end, xytext=start, gid=gid or None,
                arrowprops=dict(arrowstyle="-|>", color=color, lw=1.3, ls=ls, shrinkA=2, shrinkB=2,
                                connectionstyle=f"arc3,rad={rad}"))
    if text:
        mid = ((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1])
        ax.text(*mid, text, ha="center", va="center", fontsize=fontsize, color=color,
                bbox=dict(facecolor="white", edgecolor="none", alpha=0.85, pad=1), gid=gid or None)


def blank(ax, xlim: tuple[float, float], ylim: tuple[float, float]) -> None:
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
    fig, ax = new_axes(ax, (9.0, 4.4))
    blank(ax, (0, 10), (0, 5.2))
    server = (figure_label(N_("server: global model $w_t$\n(samples {k} of {n} clients)")).format(k=clients_per_round, n=num_clients)
              if num_clients is not None else
              figure_label(N_("server: global model $w_t$\n(samples m = {k} clients)")).format(k=clients_per_round))
    box(ax, 5, 4.45, 4.6, 0.8, server, SERVER_COLOR, "server")
    shown = list(range(min(clients_per_round, 3)))
    xs = [1.8, 5.0, 8.2][: len(shown)] if len(shown) == 3 else ([3.2, 6.8] if len(shown) == 2 else [5.0])
    epochs = "E" if local_epochs is None else str(local_epochs)
    batch = "B" if batch_size is None else str(batch_size)
    down = "$w_t$" if bytes_down is None else f"$w_t$: {fmt_bytes(bytes_down)}"
    up = "$\\Delta_k$" if bytes_up is None else f"$\\Delta_k$: {fmt_bytes(bytes_up)}"
    for i, x in zip(shown, xs):
        number = i + 1 if (i < 2 or clients_per_round == 3) else clients_per_round
        k = str(i + 1) if (i < 2 or clients_per_round == 3) else "m"
        text = figure_label(N_("client {number}: private data $n_{k}$\n{epochs} epochs of SGD, batch {batch}\n"
                                "$w_t \\to w_t^{{{k}}}$")).format(number=number, k=k, epochs=epochs, batch=batch)
        box(ax, x, 1.25, 2.5, 1.1, text, CLIENT_COLOR, f"client {i + 1}")
        top = 5.0 + 0.4 * (x - 5.0)  # where this client's arrows meet the server box
        arrow(ax, (top - 0.25, 4.05), (x - 0.45, 1.85),
              figure_label(N_("1  download (each)\n{down}")).format(down=down) if i == 0 else "",
               color=PHASE_COLORS["download"], offset=(-0.7, 0), gid="download")
        arrow(ax, (x + 0.45, 1.85), (top + 0.25, 4.05),
              figure_label(N_("3  upload (each)\n{up}")).format(up=up) if i == len(shown) - 1 else "",
               color=PHASE_COLORS["upload"], offset=(0.7, 0), gid="upload")
    if clients_per_round > 3:
        ax.text((xs[1] + xs[2]) / 2, 1.25, "…", ha="center", va="center", fontsize=16)
    ax.text(5, 0.35, figure_label(N_("2  local training on each client's own data (the data never leaves the device)")),
            ha="center", fontsize=8.5, color=PHASE_COLORS["compute"], gid="train")
    aggregate = figure_label(N_("4  aggregate: $w_{t+1} = w_t + \\sum_k \\frac{n_k}{n}\\,\\Delta_k$,  $n = \\sum_k n_k$"
                                "  (sampled clients only)"))
    ax.text(5, 5.1, aggregate, ha="center", fontsize=9, gid="aggregate")
    # a label on two lines (the formula on a line of its own) lifts the title by one line
    ax.set_title(figure_label(N_("One round of federated averaging (FedAvg)")), fontsize=10,
                 pad=14 + 13 * aggregate.count("\n"))
    return fig, ax


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
    fig, ax = new_axes(ax, (9.0, 3.6))
    blank(ax, (0, 10), (0, 4.2))
    step = None if codec is None or update is None else error_feedback_step(codec, update, residual)
    name = "C" if codec is None else getattr(getattr(codec, "inner", codec), "name", type(codec).__name__)
    upd = figure_label(N_("local update $\\Delta$")) + ("" if step is None else "\n" + figure_label(
        N_("{entries:,} entries")).format(entries=step["entries"]))
    box(ax, 1.2, 3.0, 2.0, 0.9, upd, CLIENT_COLOR, "update")
    ax.add_patch(plt.Circle((3.2, 3.0), 0.28, facecolor="white", edgecolor="0.3", gid="sum"))
    ax.text(3.2, 3.0, "+", ha="center", va="center", fontsize=14)
    box(ax, 5.3, 3.0, 2.2, 0.9, figure_label(N_("compress\n{name}")).format(name=name), "#F2F2F2", "codec")
    sent = figure_label(N_("sent $C(\\Delta + e_t)$")) + ("" if step is None else "\n" + figure_label(
        N_("{size}, {count:,} nonzeros")).format(size=fmt_bytes(len(step["payload"])), count=step["sent_nonzero"]))
    box(ax, 8.5, 3.0, 2.6, 0.9, sent, SERVER_COLOR, "sent")
    kept = figure_label(N_("residual $e_{t+1} = \\Delta + e_t - C(\\Delta + e_t)$")) + (
        "" if step is None else "\n" + figure_label(N_("kept on the client: {count:,} nonzeros")).format(
            count=step["residual_nonzero"]))
    box(ax, 5.3, 0.9, 4.6, 0.9, kept, CLIENT_COLOR, "residual")
    arrow(ax, (2.2, 3.0), (2.92, 3.0))
    arrow(ax, (3.48, 3.0), (4.2, 3.0), "$\\Delta + e_t$", offset=(0, 0.3))
    arrow(ax, (6.4, 3.0), (7.2, 3.0), figure_label(N_("uplink")), offset=(0, 0.3), color=PHASE_COLORS["upload"])
    arrow(ax, (6.0, 2.55), (6.0, 1.35), figure_label(N_("what C dropped")), offset=(0.85, 0))
    arrow(ax, (3.0, 0.9), (3.2, 2.72), figure_label(N_("$e_t$ next round")), offset=(-0.75, 0), rad=-0.3)
    if step is not None:
        note = (figure_label(N_("exactly zero in both: {zero:,}; nonzero in both: {nonzero:,}")) if step["both_nonzero"]
                else figure_label(N_("exactly zero in both: {zero:,}"))).format(zero=step["both_zero"],
                                                                                nonzero=step["both_nonzero"])
        ax.text(8.5, 2.3, note, ha="center", va="top", fontsize=8, color="0.35")
    ax.set_title(figure_label(N_("Error feedback: nothing is lost, only delayed")), fontsize=10)
    return fig, ax


# ----------------------------------------------------------------------------- 07: Flower's processes
def draw_flower_processes(supernodes: int, *, rounds: int | None = None, ax=None):
    """Flower's Deployment Engine as processes: ``flwr run`` submits the app to the SuperLink,
    which runs the ServerApp; each of the ``supernodes`` SuperNodes (one per device) pulls
    messages from the SuperLink and starts a ClientApp process for each message it gets.

    At most four SuperNodes are drawn; more are shown as "…" with the count in the label.
    """
    check_int("supernodes", supernodes, 1)
    fig, ax = new_axes(ax, (9.5, 4.6))
    blank(ax, (0, 10), (0, 5.2))
    box(ax, 1.3, 4.4, 2.2, 0.8, figure_label(N_("flwr run\n(your laptop)")), "#F2F2F2", "flwr run")
    box(ax, 5.0, 4.4, 3.2, 0.8, figure_label(N_("flower-superlink\n(one process, the server)")), SERVER_COLOR, "superlink")
    box(ax, 8.7, 4.4, 2.2, 0.8, figure_label(N_("ServerApp\n(strategy, rounds)")), SERVER_COLOR, "serverapp")
    arrow(ax, (2.4, 4.4), (3.4, 4.4), figure_label(N_("submit app")), offset=(0, 0.3))
    arrow(ax, (6.6, 4.4), (7.6, 4.4), figure_label(N_("starts")), offset=(0, 0.3))
    shown = min(supernodes, 4)
    xs = np.linspace(1.4, 8.6, shown) if shown > 1 else np.array([5.0])
    for i, x in enumerate(xs):
        node = i if (i < shown - 1 or supernodes <= 4) else supernodes - 1
        box(ax, x, 2.5, 1.9, 0.8, figure_label(N_("flower-supernode\nnode {node} (device)")).format(node=node), CLIENT_COLOR,
            f"supernode {node}", fontsize=8)
        box(ax, x, 0.9, 1.9, 0.7, figure_label(N_("ClientApp\n(new process per message)")), CLIENT_COLOR,
            f"clientapp {node}", fontsize=7.5)
        arrow(ax, (x + 0.15, 2.9), (5.0 + 0.3 * (x - 5.0) / 4, 4.0), figure_label(N_("pull / push")) if i == 0 else "",
               color=PHASE_COLORS["download"], offset=(-0.4, 0))
        arrow(ax, (x, 2.1), (x, 1.25), figure_label(N_("starts")) if i == 0 else "", offset=(0.35, 0))
    if supernodes > 4:
        ax.text((xs[-2] + xs[-1]) / 2, 2.5, "…", ha="center", va="center", fontsize=16)
    title = (figure_label(N_("Flower's Deployment Engine: 1 SuperLink, {supernodes} SuperNodes (each box a process)"))
             if rounds is None else
             figure_label(N_("Flower's Deployment Engine: 1 SuperLink, {supernodes} SuperNodes, {rounds} rounds "
                             "(each box a process)")))
    ax.set_title(title.format(supernodes=supernodes, rounds=rounds), fontsize=10)
    return fig, ax
