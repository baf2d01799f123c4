"""The efficiency ledger: FLOPs measured, bytes counted, joules modelled (or metered).

The energy model, every constant and its source are documented in ``docs/energy_model.md``.
In short, one client in one round costs::

    E = FLOPs × e_flop + bits_up × e_up + bits_down × e_down + E_radio_fixed

* FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on a real training step
  (forward + backward, 2 FLOPs per multiply-add, dense work only).  It sees no FLOPs inside
  PyTorch's fused ``nn.LSTM`` kernels, so an LSTM's gate matmuls are added in closed form
  (:func:`lstm_forward_flops_per_step`) for the shapes it really ran on.  The counting lives in
  :mod:`fedlab_utils.ledger.flops`.
* Bits come from ``len()`` of the serialized payload (see ``fedlab_utils.compression.wire``).
* e_up / e_down come from the throughput-based radio power model of Huang et al.,
  "A Close Examination of Performance and Power Characteristics of 4G LTE Networks",
  MobiSys 2012: P[mW] = α_u·t_u + α_d·t_d + β with t in Mbps, so one bit sent at t Mbps
  costs (α + β/t) nJ.  The paper's median LTE throughputs are 6 Mbps up and 13 Mbps down.
* E_radio_fixed is what the linear model leaves out: before a transfer the radio is
  *promoted* from idle, and after its last byte it stays in a high-power *tail* before it
  drops back to idle (the same paper's power-model table, Table 3; values as recalled from the
  paper, not verified against a copy here).  A per-client-round timeline (download, compute
  at the profile's FLOP/s, upload) decides how many promotions and how much tail a client
  pays: a tail is cut short when the next transfer starts inside it.  On LTE one radio
  session costs ~12.6 J, more than sending a few megabytes, so once payloads are small the
  number of radio sessions (rounds × clients per round) sets the bill, not the bytes.
* e_flop is an assumption for phones (100 pJ/FLOP, sweep 20–200), and 10 W / 236 GFLOPS
  (fp32) for a Jetson Nano.

Every constant is a field of a frozen dataclass: ``dataclasses.replace(PROFILES["phone-lte"],
joules_per_flop=20e-12)`` gives your own profile.  ``profile.energy(..., include_fixed=False)``
is the bytes-only view (no promotion, no tail) for teaching the contrast.  A real meter (NVML
on NVIDIA GPUs, RAPL where readable) is read only where it exists: :class:`EnergyMeter` says
which one it reads, or that none is available.

Every client-round is priced by one function, :func:`price_rows` (one :class:`Energy` per client
row, under any profile); the loop, :func:`price_history`, :func:`energy_by_profile` and the
capstone's tables all read it.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, cast

import torch

from fedlab_utils.i18n import N_, gettext
from fedlab_utils.validation import check_choice

__all__ = ["RadioModel", "LTE", "WIFI", "EnergyProfile", "PROFILES", "Energy", "RadioPhase",
           "get_profile", "price_history", "radio_timeline", "nvml_device_for", "HOROWITZ_45NM_PJ",
           "EnergyMeter", "RaplCounter", "energy_by_profile", "price_rows", "ENERGY_PART_LABELS", "energy_part_label",
           "METER_NOT_AVAILABLE", "METER_NVML", "METER_RAPL"]


@dataclass(frozen=True)
class RadioModel:
    """Huang et al. 2012 power model of a phone radio: linear while transferring, plus the
    fixed cost of each radio session (a promotion from idle before it, a tail after it)."""

    name: str
    alpha_up_mw_per_mbps: float
    alpha_down_mw_per_mbps: float
    beta_mw: float
    source: str
    promotion_mw: float = 0.0
    promotion_s: float = 0.0
    tail_mw: float = 0.0
    tail_s: float = 0.0

    def joules_per_bit(self, mbps: float, direction: str) -> float:
        """Energy of one bit at throughput ``mbps``: (α·t + β) mW / t Mbps = (α + β/t) nJ/bit."""
        alpha = self.alpha_up_mw_per_mbps if direction == "up" else self.alpha_down_mw_per_mbps
        return (alpha + self.beta_mw / mbps) * 1e-9

    @property
    def promotion_joules(self) -> float:
        return self.promotion_mw * 1e-3 * self.promotion_s

    @property
    def tail_joules(self) -> float:
        """A full tail: the radio waits ``tail_s`` at ``tail_mw`` after the last byte."""
        return self.tail_mw * 1e-3 * self.tail_s

    @property
    def session_joules(self) -> float:
        """Fixed cost of one isolated radio session: one promotion and one full tail."""
        return self.promotion_joules + self.tail_joules


_HUANG = ("Huang et al., MobiSys 2012: alpha/beta as quoted in the course's design notes; the median "
          "throughputs 6 Mbps up / 13 Mbps down were checked against the paper's abstract. Promotion "
          "and tail (power, duration) as recalled from the paper's power-model table (Table 3), not "
          "verified against a copy here. See docs/energy_model.md.")
# Promotion / tail: Huang et al. 2012, Table 3 (as recalled, not verified here):
#   LTE  promotion 1210.7 mW for 260.1 ms, tail 1060.0 mW for 11.576 s
#   WiFi promotion  124.4 mW for  79.1 ms, tail  119.3 mW for  0.2381 s
LTE = RadioModel("LTE", 438.39, 51.97, 1288.04, _HUANG,
                 promotion_mw=1210.7, promotion_s=0.2601, tail_mw=1060.0, tail_s=11.576)
WIFI = RadioModel("WiFi", 283.17, 137.01, 132.86, _HUANG,
                  promotion_mw=124.4, promotion_s=0.0791, tail_mw=119.3, tail_s=0.2381)

#: Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm, picojoules per operation.
HOROWITZ_45NM_PJ = {"fp32 add": 0.9, "fp32 multiply": 3.7, "int8 multiply": 0.2, "32-bit DRAM read": 640.0}


@dataclass(frozen=True)
class Energy:
    """Joules of one client-round (or a sum of them), split by where they go."""

    compute: float = 0.0
    uplink: float = 0.0
    downlink: float = 0.0
    radio_fixed: float = 0.0  # promotions + tails: the cost of radio sessions, whatever the bytes

    @property
    def total(self) -> float:
        return self.compute + self.uplink + self.downlink + self.radio_fixed

    def __add__(self, other: "Energy") -> "Energy":
        return Energy(self.compute + other.compute, self.uplink + other.uplink, self.downlink + other.downlink,
                      self.radio_fixed + other.radio_fixed)

    def to_dict(self) -> dict:
        return {"compute": self.compute, "uplink": self.uplink, "downlink": self.downlink,
                "radio_fixed": self.radio_fixed, "total": self.total}

    def __repr__(self) -> str:
        return gettext("Energy(total={total:.3g} J: compute {compute:.3g}, uplink {uplink:.3g}, "
                       "downlink {downlink:.3g}, radio fixed {radio_fixed:.3g})").format(total=self.total, **asdict(self))


#: what each key of :meth:`Energy.to_dict` (and of :func:`energy_by_profile`'s rows) is called where it is shown
ENERGY_PART_LABELS = {"compute": N_("compute"), "uplink": N_("uplink"), "downlink": N_("downlink"),
                      "radio_fixed": N_("radio fixed"), "total": N_("total")}


def energy_part_label(part: str, lang: str | None = None) -> str:
    """The display name of a part of the energy bill (``"radio_fixed"`` -> "radio fixed", 无线固定开销 in
    the Chinese edition).  Code keeps reading the English keys; only what is printed is translated."""
    check_choice("part", part, ENERGY_PART_LABELS)
    return gettext(ENERGY_PART_LABELS[part], lang)


@dataclass(frozen=True)
class RadioPhase:
    """One stretch of a client-round's timeline: what the device does, from when, for how long."""

    name: str  # "promotion", "download", "compute", "upload", "tail"
    start_s: float
    duration_s: float
    watts: float

    @property
    def joules(self) -> float:
        return self.watts * self.duration_s

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


def radio_timeline(radio: RadioModel, steps: list[tuple[str, float, float]]) -> list[RadioPhase]:
    """Lay out ``steps`` in time and add the radio's promotions and tails.

    ``steps`` is a list of ``(name, duration_s, watts)``; names ``"download"`` and ``"upload"``
    are radio transfers, anything else (e.g. ``"compute"``) keeps the radio otherwise unused.
    A transfer first pays a promotion unless the radio is still in the tail of the previous
    transfer; a tail is cut short when the next transfer starts inside it, and the last
    transfer is followed by a full tail.  Two transfers farther apart than the tail each pay
    a promotion and a full tail.
    """
    phases: list[RadioPhase] = []
    t, last_transfer_end = 0.0, None
    for name, duration, watts in steps:
        if name in ("download", "upload"):
            gap = None if last_transfer_end is None else t - last_transfer_end
            if gap is not None and gap < radio.tail_s:  # still in the tail: no promotion needed
                if gap > 0:
                    phases.append(RadioPhase("tail", last_transfer_end, gap, radio.tail_mw * 1e-3))
            else:
                if gap is not None:  # the previous tail ran out in full; the radio fell idle
                    phases.append(RadioPhase("tail", last_transfer_end, radio.tail_s, radio.tail_mw * 1e-3))
                phases.append(RadioPhase("promotion", t, radio.promotion_s, radio.promotion_mw * 1e-3))
                t += radio.promotion_s
            phases.append(RadioPhase(name, t, duration, watts))
            t += duration
            last_transfer_end = t
        else:
            phases.append(RadioPhase(name, t, duration, watts))
            t += duration
    if last_transfer_end is not None:
        phases.append(RadioPhase("tail", last_transfer_end, radio.tail_s, radio.tail_mw * 1e-3))
    return sorted(phases, key=lambda ph: ph.start_s)


@dataclass(frozen=True)
class EnergyProfile:
    """A device class: joules per FLOP, a compute speed, and a radio at given throughputs."""

    name: str
    joules_per_flop: float
    radio: RadioModel
    uplink_mbps: float
    downlink_mbps: float
    flop_source: str
    flops_per_second: float = 5e9  # sustained training speed: turns FLOPs into compute time
    speed_source: str = "assumption: 5 GFLOP/s sustained fp32 training on a phone SoC (sweep 1-20)"

    @property
    def joules_per_bit_up(self) -> float:
        return self.radio.joules_per_bit(self.uplink_mbps, "up")

    @property
    def joules_per_bit_down(self) -> float:
        return self.radio.joules_per_bit(self.downlink_mbps, "down")

    def transfer_seconds(self, n_bytes: float, direction: str) -> float:
        mbps = self.uplink_mbps if direction == "up" else self.downlink_mbps
        return 8 * n_bytes / (mbps * 1e6)

    def compute_seconds(self, flops: float) -> float:
        return flops / self.flops_per_second

    def timeline(self, flops: float, bytes_up: float, bytes_down: float) -> list[RadioPhase]:
        """One client-round in time: [promotion] download, compute, [promotion] upload, tail.

        A zero-byte direction makes no transfer (and so no promotion or tail of its own).
        """
        steps: list[tuple[str, float, float]] = []
        transfers = {"download": (bytes_down, "down"), "upload": (bytes_up, "up")}
        for name in ("download", "compute", "upload"):
            if name == "compute":
                seconds = self.compute_seconds(flops)
                steps.append((name, seconds, self.joules_per_flop * self.flops_per_second))
                continue
            n_bytes, direction = transfers[name]
            if n_bytes > 0:
                seconds = self.transfer_seconds(n_bytes, direction)
                joules = 8 * n_bytes * (self.joules_per_bit_up if direction == "up" else self.joules_per_bit_down)
                steps.append((name, seconds, joules / seconds))
        return radio_timeline(self.radio, steps)

    def energy(self, flops: float, bytes_up: float, bytes_down: float, *, include_fixed: bool = True) -> Energy:
        """Modelled joules of ONE client in ONE round: ``flops`` of local training, then the
        uplink payload; the downlink payload arrives before training.

        ``radio_fixed`` holds the promotions and tails of the client-round's timeline (see
        :meth:`timeline`); ``include_fixed=False`` gives the bytes-only (linear) view.  Sum this
        over clients and rounds; never call it once with bytes summed over several clients,
        which would count one radio session for many.
        """
        for label, value in (("flops", flops), ("bytes_up", bytes_up), ("bytes_down", bytes_down)):
            if value < 0:
                raise ValueError(f"{label}={value!r} is negative; pass a count of FLOPs or bytes (>= 0)")
        fixed = 0.0
        if include_fixed:
            fixed = sum(ph.joules for ph in self.timeline(flops, bytes_up, bytes_down)
                        if ph.name in ("promotion", "tail"))
        return Energy(flops * self.joules_per_flop, 8 * bytes_up * self.joules_per_bit_up,
                      8 * bytes_down * self.joules_per_bit_down, fixed)

    def energy_for(self, flops: float, bytes_up: float, bytes_down: float, client_rounds: int, *,
                   include_fixed: bool = True) -> Energy:
        """Joules of ``client_rounds`` client-rounds whose totals (FLOPs, bytes) are given, each
        client-round taken to carry an equal share: ``client_rounds × energy(totals / client_rounds)``.

        Use it to price a whole run's totals under another profile.  The linear terms are exact;
        ``radio_fixed`` is exact when every client computes for the same time (otherwise the
        tails cut short by compute are averaged).
        """
        if client_rounds < 1:
            raise ValueError(f"client_rounds={client_rounds!r}; need >= 1 (rounds x clients per round)")
        one = self.energy(flops / client_rounds, bytes_up / client_rounds, bytes_down / client_rounds,
                          include_fixed=include_fixed)
        return Energy(one.compute * client_rounds, one.uplink * client_rounds, one.downlink * client_rounds,
                      one.radio_fixed * client_rounds)

    def radio_floor(self, flops: float = 0.0) -> float:
        """Fixed radio joules of one client-round that downloads and uploads anything at all
        (however few bytes): the floor that no compression can go below."""
        return self.energy(flops, 1, 1).radio_fixed

    def describe(self) -> str:
        """One line of the profile's prices, in the reader's language (notebook 00 prints every profile)."""
        return gettext("{name}: {pj_per_flop:.0f} pJ/FLOP at {gflops:g} GFLOP/s, up {nj_up:.0f} nJ/bit @ {up_mbps} Mbps, "
                       "down {nj_down:.0f} nJ/bit @ {down_mbps} Mbps ({radio}; {session:.3g} J per radio session)").format(
            name=self.name, pj_per_flop=self.joules_per_flop * 1e12, gflops=self.flops_per_second / 1e9,
            nj_up=self.joules_per_bit_up * 1e9, up_mbps=self.uplink_mbps, nj_down=self.joules_per_bit_down * 1e9,
            down_mbps=self.downlink_mbps, radio=self.radio.name, session=self.radio.session_joules)

    def to_dict(self) -> dict:
        return {**asdict(self), "joules_per_bit_up": self.joules_per_bit_up,
                "joules_per_bit_down": self.joules_per_bit_down,
                "radio_session_joules": self.radio.session_joules}


_PHONE_FLOP = "assumption: 100 pJ/FLOP for a phone SoC running fp32 training (sweep 20-200)"
PROFILES: dict[str, EnergyProfile] = {
    "phone-lte": EnergyProfile("phone-lte", 100e-12, LTE, 6.0, 13.0, _PHONE_FLOP),
    # WiFi throughputs chosen so the model gives the guide's ~300 / ~145 nJ/bit.
    "phone-wifi": EnergyProfile("phone-wifi", 100e-12, WIFI, 8.0, 16.0, _PHONE_FLOP),
    "edge-gpu-wifi": EnergyProfile("edge-gpu-wifi", 10.0 / 236e9, WIFI, 8.0, 16.0,
                                   "Jetson Nano: 10 W at 236 GFLOPS fp32 = 42 pJ/FLOP (21 pJ in fp16)",
                                   flops_per_second=236e9,
                                   speed_source="Jetson Nano peak fp32 236 GFLOP/s (an upper bound; sweep lower)"),
}


def price_rows(history, profile: "str | EnergyProfile", *, include_fixed: bool = True) -> list[list[Energy]]:
    """Every client-round of a finished run priced under ``profile``: one list of :class:`Energy` per
    round, one entry per client row (what :meth:`EnergyProfile.energy` charges that client).

    ``history`` is a :class:`~fedlab_utils.core.history.History` (anything whose ``records`` carry
    ``client_rows`` dicts with ``flops``, ``bytes_up`` and ``bytes_down``).  Each client-round
    pays its own radio session.  A record without ``client_rows`` (a protocol that logs only round
    totals) is priced as ``len(record.clients)`` equal shares of its totals, as one entry
    (:meth:`EnergyProfile.energy_for`).
    """
    p = get_profile(profile)
    priced = []
    for record in history.records:
        rows = getattr(record, "client_rows", None)
        if rows:
            priced.append([p.energy(row["flops"], row["bytes_up"], row["bytes_down"], include_fixed=include_fixed)
                           for row in rows])
        elif record.clients:
            priced.append([p.energy_for(record.client_flops, record.bytes_up, record.bytes_down, len(record.clients),
                                        include_fixed=include_fixed)])
        else:
            priced.append([])
    return priced


def price_history(history, profile: "str | EnergyProfile", *, include_fixed: bool = True) -> Energy:
    """A finished run's modelled joules under another ``profile``: the sum of :func:`price_rows`."""
    total = Energy()
    for round_rows in price_rows(history, profile, include_fixed=include_fixed):
        for e in round_rows:
            total = total + e
    return total


def get_profile(profile: str | EnergyProfile) -> EnergyProfile:
    """A profile by name (``'phone-lte'``, ``'phone-wifi'``, ``'edge-gpu-wifi'``) or as given."""
    if isinstance(profile, EnergyProfile):
        return profile
    check_choice("energy_profile", profile, PROFILES)
    return PROFILES[profile]


# ----------------------------------------------------------------------------- real meters
class RaplCounter:
    """A RAPL energy counter (``energy_uj``) unwrapped into a monotone joule count.

    The kernel's counter wraps to zero after ``max_energy_range_uj`` microjoules (minutes at a
    few tens of watts), so a plain difference of two readings can be hugely negative.  Each
    read adds the wrapped difference to a running total; call :meth:`read` at least once per
    wrap period (any round of training does).
    """

    def __init__(self, zone: Path):
        self.zone = Path(zone)
        self.max_range_uj = int((self.zone / "max_energy_range_uj").read_text())
        self._last = int((self.zone / "energy_uj").read_text())
        self._total_uj = 0

    def read(self) -> float:
        raw = int((self.zone / "energy_uj").read_text())
        delta = raw - self._last
        if delta < 0:  # wrapped past max_energy_range_uj
            delta += self.max_range_uj + 1
        self._total_uj += delta
        self._last = raw
        return self._total_uj / 1e6  # µJ -> J


def nvml_device_for(cuda_index: int, visible: str | None = None) -> tuple[str, int | str]:
    """How NVML names the GPU that torch calls ``cuda:<cuda_index>``.

    NVML enumerates every GPU on the machine and ignores ``CUDA_VISIBLE_DEVICES``; torch counts
    only the visible ones.  Returns ``("index", i)`` or ``("uuid", "GPU-...")`` from the visible
    list (``visible`` defaults to the environment variable); with no list, the indices agree.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if not visible or not visible.strip():
        return ("index", cuda_index)
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if cuda_index >= len(entries):
        raise ValueError(f"cuda:{cuda_index} is not among CUDA_VISIBLE_DEVICES={visible!r} "
                         f"({len(entries)} visible device(s))")
    entry = entries[cuda_index]
    return ("index", int(entry)) if entry.isdigit() else ("uuid", entry)


def _nvml_handle(pynvml, cuda_index: int):
    """The NVML handle of torch's ``cuda:<cuda_index>``: by PCI bus id where torch reports it,
    else through the ``CUDA_VISIBLE_DEVICES`` list."""
    props = torch.cuda.get_device_properties(cuda_index)
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        domain, device = getattr(props, "pci_domain_id", 0), getattr(props, "pci_device_id", 0)
        return pynvml.nvmlDeviceGetHandleByPciBusId(f"{domain:08x}:{bus:02x}:{device:02x}.0")
    kind, key = nvml_device_for(cuda_index)
    if kind == "uuid":
        return pynvml.nvmlDeviceGetHandleByUUID(key)
    return pynvml.nvmlDeviceGetHandleByIndex(key)


#: what an :class:`EnergyMeter` reads (its ``source``), as runs record it; shown through ``gettext``
METER_NOT_AVAILABLE = N_("not available")
METER_NVML = N_("NVML total energy counter (GPU board)")
METER_RAPL = N_("RAPL package-0 counter (CPU socket)")


class EnergyMeter:
    """Reads a real cumulative energy counter where one exists: NVML (NVIDIA) or RAPL (Linux).

    ``available`` is False on machines without either; ``read()`` then returns ``None`` and
    ``source`` says "not available" -- the course never invents a measured figure.  ``source`` stays
    English (runs record it); :meth:`describe` and the repr show it in the reader's language.
    """

    _RAPL_ZONE = Path("/sys/class/powercap/intel-rapl:0")

    def __init__(self, device: torch.device | str = "cpu", rapl_zone: Path | None = None):
        self.source = METER_NOT_AVAILABLE
        self._read: Callable[[], float] | None = None
        device = torch.device(device)
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                handle = _nvml_handle(pynvml, torch.cuda.current_device() if device.index is None else device.index)
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                self._read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3  # mJ -> J
                self.source = METER_NVML
            except Exception:  # no pynvml, or the GPU lacks the counter
                self._read = None
        if self._read is None:
            try:
                counter = RaplCounter(self._RAPL_ZONE if rapl_zone is None else rapl_zone)
            except (OSError, ValueError):
                counter = None
            if counter is not None:
                self._read = counter.read
                self.source = METER_RAPL

    @property
    def available(self) -> bool:
        return self._read is not None

    def read(self) -> float | None:
        """Cumulative joules since an arbitrary origin, or ``None`` where no meter exists."""
        return None if self._read is None else float(self._read())

    def describe(self, lang: str | None = None) -> str:
        """Where the measured joules come from, in the reader's language."""
        return gettext(self.source, lang)

    def __repr__(self) -> str:
        return f"EnergyMeter({self.describe()})"


def energy_by_profile(run_or_flops, bytes_up: float | None = None, bytes_down: float | None = None,
                      client_rounds: int = 1) -> dict[str, dict]:
    """Modelled joules (compute, uplink, downlink, radio_fixed, total) under every profile of the ledger.

    Pass a ``History``: each of its client-rounds (``RoundRecord.client_rows``) is priced on its
    own, which is exact.  Or pass totals (FLOPs, bytes up, bytes down) and how many client-rounds
    they cover (:meth:`EnergyProfile.energy_for`).
    """
    priced_by_rows = hasattr(run_or_flops, "records")
    if not priced_by_rows and (bytes_up is None or bytes_down is None):
        raise ValueError(f"energy_by_profile({run_or_flops!r}, bytes_up={bytes_up!r}, bytes_down={bytes_down!r}): "
                         "with a FLOP total, pass the byte totals too (or pass a History)")
    result = {}
    for name, profile in PROFILES.items():
        e = (price_history(run_or_flops, profile) if priced_by_rows else
             profile.energy_for(run_or_flops, cast(float, bytes_up), cast(float, bytes_down), client_rounds))
        result[name] = {**asdict(e), "total": e.total}
    return result
