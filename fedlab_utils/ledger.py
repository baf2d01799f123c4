"""The efficiency ledger: FLOPs measured, bytes counted, joules modelled (or metered).

Energy of one client in one round (COURSE_GUIDE §4)::

    E = FLOPs × e_flop + bits_up × e_up + bits_down × e_down

* FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on a real training step
  (forward + backward, 2 FLOPs per multiply-add, dense work only).
* Bits come from ``len()`` of the serialized payload (see ``fedlab_utils.wire``).
* e_up / e_down come from the throughput-based radio power model of Huang et al.,
  "A Close Examination of Performance and Power Characteristics of 4G LTE Networks",
  MobiSys 2012: P[mW] = α_u·t_u + α_d·t_d + β with t in Mbps, so one bit sent at t Mbps
  costs (α + β/t) nJ.  The paper's median LTE throughputs are 6 Mbps up and 13 Mbps down.
* e_flop is an assumption for phones (100 pJ/FLOP, sweep 20–200), and 10 W / 236 GFLOPS
  (fp32) for a Jetson Nano.

Every constant is a field of a frozen dataclass: ``dataclasses.replace(PROFILES["phone-lte"],
joules_per_flop=20e-12)`` gives your own profile.  A real meter (NVML on NVIDIA GPUs, RAPL
where readable) is read only where it exists; otherwise :func:`read_energy_meter` says so.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .validation import check_choice

__all__ = ["RadioModel", "LTE", "WIFI", "EnergyProfile", "PROFILES", "Energy", "get_profile",
           "training_flops_per_sample", "forward_flops", "HOROWITZ_45NM_PJ", "EnergyMeter", "read_energy_meter"]


@dataclass(frozen=True)
class RadioModel:
    """Huang et al. 2012 linear power model of a phone radio while transferring data."""

    name: str
    alpha_up_mw_per_mbps: float
    alpha_down_mw_per_mbps: float
    beta_mw: float
    source: str

    def joules_per_bit(self, mbps: float, direction: str) -> float:
        """Energy of one bit at throughput ``mbps``: (α·t + β) mW / t Mbps = (α + β/t) nJ/bit."""
        alpha = self.alpha_up_mw_per_mbps if direction == "up" else self.alpha_down_mw_per_mbps
        return (alpha + self.beta_mw / mbps) * 1e-9


_HUANG = ("Huang et al., MobiSys 2012 (coefficients as quoted in the course guide; the median "
          "throughputs 6 Mbps up / 13 Mbps down were checked against the paper's abstract)")
LTE = RadioModel("LTE", 438.39, 51.97, 1288.04, _HUANG)
WIFI = RadioModel("WiFi", 283.17, 137.01, 132.86, _HUANG)

#: Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm, picojoules per operation.
HOROWITZ_45NM_PJ = {"fp32 add": 0.9, "fp32 multiply": 3.7, "int8 multiply": 0.2, "32-bit DRAM read": 640.0}


@dataclass(frozen=True)
class Energy:
    """Joules of one client-round (or a sum of them), split by where they go."""

    compute: float = 0.0
    uplink: float = 0.0
    downlink: float = 0.0

    @property
    def total(self) -> float:
        return self.compute + self.uplink + self.downlink

    def __add__(self, other: "Energy") -> "Energy":
        return Energy(self.compute + other.compute, self.uplink + other.uplink, self.downlink + other.downlink)

    def __repr__(self) -> str:
        return (f"Energy(total={self.total:.3g} J: compute {self.compute:.3g}, "
                f"uplink {self.uplink:.3g}, downlink {self.downlink:.3g})")


@dataclass(frozen=True)
class EnergyProfile:
    """A device class: joules per FLOP and a radio at given throughputs."""

    name: str
    joules_per_flop: float
    radio: RadioModel
    uplink_mbps: float
    downlink_mbps: float
    flop_source: str

    @property
    def joules_per_bit_up(self) -> float:
        return self.radio.joules_per_bit(self.uplink_mbps, "up")

    @property
    def joules_per_bit_down(self) -> float:
        return self.radio.joules_per_bit(self.downlink_mbps, "down")

    def energy(self, flops: float, bytes_up: float, bytes_down: float) -> Energy:
        """Modelled joules for ``flops`` of compute and the given payload sizes."""
        return Energy(flops * self.joules_per_flop, 8 * bytes_up * self.joules_per_bit_up,
                      8 * bytes_down * self.joules_per_bit_down)

    def describe(self) -> str:
        return (f"{self.name}: {self.joules_per_flop * 1e12:.0f} pJ/FLOP, "
                f"up {self.joules_per_bit_up * 1e9:.0f} nJ/bit @ {self.uplink_mbps} Mbps, "
                f"down {self.joules_per_bit_down * 1e9:.0f} nJ/bit @ {self.downlink_mbps} Mbps ({self.radio.name})")

    def to_dict(self) -> dict:
        return {**asdict(self), "joules_per_bit_up": self.joules_per_bit_up,
                "joules_per_bit_down": self.joules_per_bit_down}


_PHONE_FLOP = "assumption: 100 pJ/FLOP for a phone SoC running fp32 training (sweep 20-200)"
PROFILES: dict[str, EnergyProfile] = {
    "phone-lte": EnergyProfile("phone-lte", 100e-12, LTE, 6.0, 13.0, _PHONE_FLOP),
    # WiFi throughputs chosen so the model gives the guide's ~300 / ~145 nJ/bit.
    "phone-wifi": EnergyProfile("phone-wifi", 100e-12, WIFI, 8.0, 16.0, _PHONE_FLOP),
    "edge-gpu-wifi": EnergyProfile("edge-gpu-wifi", 10.0 / 236e9, WIFI, 8.0, 16.0,
                                   "Jetson Nano: 10 W at 236 GFLOPS fp32 = 42 pJ/FLOP (21 pJ in fp16)"),
}


def get_profile(profile: str | EnergyProfile) -> EnergyProfile:
    """A profile by name (``'phone-lte'``, ``'phone-wifi'``, ``'edge-gpu-wifi'``) or as given."""
    if isinstance(profile, EnergyProfile):
        return profile
    check_choice("energy_profile", profile, PROFILES)
    return PROFILES[profile]


# ----------------------------------------------------------------------------- FLOPs
def _count(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def training_flops_per_sample(model: nn.Module, input_shape: tuple[int, ...], batch: int = 4,
                              loss_fn: Callable = nn.functional.cross_entropy, num_classes: int | None = None) -> int:
    """FLOPs of one training step (forward + backward) per sample, measured by ``FlopCounterMode``.

    The model is deep-copied, so its weights and gradients are untouched.  Dense FLOPs: a
    zero weight still costs a multiply in a dense kernel (pruning lessons count nonzeros).
    """
    probe = copy.deepcopy(model).train()
    device = next(probe.parameters()).device
    x = torch.zeros(batch, *input_shape, device=device)
    out = probe(x)
    target = torch.zeros(batch, dtype=torch.long, device=device)

    def step() -> None:
        loss_fn(probe(x), target).backward()

    del out
    return _count(step) // batch


def forward_flops(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1) -> int:
    """FLOPs of one inference forward pass per sample."""
    probe = copy.deepcopy(model).eval()
    device = next(probe.parameters()).device
    x = torch.zeros(batch, *input_shape, device=device)
    with torch.no_grad():
        return _count(lambda: probe(x)) // batch


# ----------------------------------------------------------------------------- real meters
class EnergyMeter:
    """Reads a real cumulative energy counter where one exists: NVML (NVIDIA) or RAPL (Linux).

    ``available`` is False on machines without either; ``read()`` then returns ``None`` and
    ``source`` says "not available" -- the course never invents a measured figure.
    """

    _RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")

    def __init__(self, device: torch.device | str = "cpu"):
        self.source = "not available"
        self._read: Callable[[], float] | None = None
        device = torch.device(device)
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                self._read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3  # mJ -> J
                self.source = "NVML total energy counter (GPU board)"
            except Exception:  # no pynvml, or the GPU lacks the counter
                self._read = None
        if self._read is None and self._rapl_readable():
            self._read = lambda: int(self._RAPL.read_text()) / 1e6  # µJ -> J
            self.source = "RAPL package-0 counter (CPU socket)"

    def _rapl_readable(self) -> bool:
        try:
            int(self._RAPL.read_text())
            return True
        except (OSError, ValueError):
            return False

    @property
    def available(self) -> bool:
        return self._read is not None

    def read(self) -> float | None:
        """Cumulative joules since an arbitrary origin, or ``None`` where no meter exists."""
        return None if self._read is None else float(self._read())

    def __repr__(self) -> str:
        return f"EnergyMeter({self.source})"


def read_energy_meter(device: torch.device | str = "cpu") -> EnergyMeter:
    """The best real energy meter for ``device`` (check ``.available`` before using it)."""
    return EnergyMeter(device)
