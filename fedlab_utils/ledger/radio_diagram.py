"""One client-round of a device profile in time (lessons 00 and 06): the radio's promotion, the
transfers, the compute and the tail, laid out by :meth:`EnergyProfile.timeline`, so the drawing
and the ledger's joules cannot disagree.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from fedlab_utils.ledger.energy import EnergyProfile, get_profile
from fedlab_utils.viz.diagrams import PHASE_COLORS, fmt_bytes

__all__ = ["draw_radio_timeline"]


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
    ax.set_title(f"{profile.name} ({profile.radio.name}): one client-round, {fmt_bytes(bytes_down)} down, "
                 f"{fmt_bytes(bytes_up)} up: promotions + tails {energy.radio_fixed:.3g} J of {energy.total:.3g} J",
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
