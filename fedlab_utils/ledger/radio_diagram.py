"""One client-round of a device profile in time (lessons 00 and 06): the radio's promotion, the
transfers, the compute and the tail, laid out by :meth:`EnergyProfile.timeline`, so the drawing
and the ledger's joules cannot disagree.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from fedlab_utils.i18n import N_
from fedlab_utils.ledger.energy import EnergyProfile, get_profile
from fedlab_utils.viz.diagrams import PHASE_COLORS, fmt_bytes
from fedlab_utils.viz.fonts import figure_label

__all__ = ["draw_radio_timeline"]

#: the legend's name of each phase of :meth:`EnergyProfile.timeline` (the phases keep their English names)
PHASE_LABELS = {"promotion": N_("promotion"), "download": N_("download"), "compute": N_("compute"),
                "upload": N_("upload"), "tail": N_("tail")}


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
    ax.set_yticks([0, 1], [figure_label(N_("CPU")), figure_label(N_("radio"))])
    ax.grid(axis="y", visible=False)
    energy = profile.energy(flops, bytes_up, bytes_down)
    ax.set_xlabel(figure_label(N_("time in the client-round (s)")))
    ax.set_title(figure_label(N_("{profile} ({radio}): one client-round, {down} down, {up} up: promotions + tails "
                                 "{fixed:.3g} J of {total:.3g} J")).format(
        profile=profile.name, radio=profile.radio.name, down=fmt_bytes(bytes_down), up=fmt_bytes(bytes_up),
        fixed=energy.radio_fixed, total=energy.total), fontsize=9)
    # one legend entry per phase kind with its power, time and joules, outside the bars (right)
    handles, labels = [], []
    seen: dict[str, list] = {}
    for ph in phases:
        seen.setdefault(ph.name, []).append(ph)
    for name, group in seen.items():
        seconds = sum(p.duration_s for p in group)
        joules = sum(p.joules for p in group)
        handles.append(Rectangle((0, 0), 1, 1, facecolor=PHASE_COLORS[name]))
        facts = {"phase": figure_label(PHASE_LABELS.get(name, name)), "watts": group[0].watts,
                 "seconds": _fmt_seconds(seconds), "joules": joules}
        labels.append(figure_label(N_("{phase}: {watts:.3g} W, {seconds}, {joules:.3g} J")).format(**facts)
                      if len(group) == 1 else
                      figure_label(N_("{count}x {phase}: {watts:.3g} W, {seconds}, {joules:.3g} J")).format(
                          count=len(group), **facts))
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
    resolved = [get_profile(p) for p in profiles]
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
    for ax, p in zip(axes, resolved):
        _draw_one_timeline(ax, p, flops, bytes_up, bytes_down)
    fig.tight_layout()
    return fig, axes
