"""The efficiency ledger: FLOP counting (:mod:`.flops`), energy profiles with cited constants and
real meters (:mod:`.energy`), synchronised timing (:mod:`.timing`) and the radio timeline drawn
from a profile (:mod:`.radio_diagram`).  Part of the core.

Names load lazily from their modules on first use (:data:`_EXPORTS`).
"""
from fedlab_utils.facade import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "ENERGY_PART_LABELS": "fedlab_utils.ledger.energy",
    "Energy": "fedlab_utils.ledger.energy",
    "energy_part_label": "fedlab_utils.ledger.energy",
    "EnergyMeter": "fedlab_utils.ledger.energy",
    "EnergyProfile": "fedlab_utils.ledger.energy",
    "HOROWITZ_45NM_PJ": "fedlab_utils.ledger.energy",
    "LTE": "fedlab_utils.ledger.energy",
    "PROFILES": "fedlab_utils.ledger.energy",
    "RadioModel": "fedlab_utils.ledger.energy",
    "RadioPhase": "fedlab_utils.ledger.energy",
    "RaplCounter": "fedlab_utils.ledger.energy",
    "WIFI": "fedlab_utils.ledger.energy",
    "energy_by_profile": "fedlab_utils.ledger.energy",
    "get_profile": "fedlab_utils.ledger.energy",
    "nvml_device_for": "fedlab_utils.ledger.energy",
    "price_history": "fedlab_utils.ledger.energy",
    "price_rows": "fedlab_utils.ledger.energy",
    "radio_timeline": "fedlab_utils.ledger.energy",
    "forward_flops": "fedlab_utils.ledger.flops",
    "lstm_forward_flops_per_step": "fedlab_utils.ledger.flops",
    "lstm_training_flops_per_sample": "fedlab_utils.ledger.flops",
    "mlp_layers": "fedlab_utils.ledger.flops",
    "mlp_training_flops_per_sample": "fedlab_utils.ledger.flops",
    "training_flops_per_layer": "fedlab_utils.ledger.flops",
    "training_flops_per_sample": "fedlab_utils.ledger.flops",
    "draw_radio_timeline": "fedlab_utils.ledger.radio_diagram",
    "AUTORANGE": "fedlab_utils.ledger.timing",
    "Stopwatch": "fedlab_utils.ledger.timing",
    "TimingStats": "fedlab_utils.ledger.timing",
    "benchmark": "fedlab_utils.ledger.timing",
    "inference_latency": "fedlab_utils.ledger.timing",
    "synchronize": "fedlab_utils.ledger.timing",
    "time_calls": "fedlab_utils.ledger.timing",
    "time_interleaved": "fedlab_utils.ledger.timing",
    "time_train_step": "fedlab_utils.ledger.timing",
    "time_trainer": "fedlab_utils.ledger.timing",
    "wall_time": "fedlab_utils.ledger.timing",
}
__all__ = ["AUTORANGE", "ENERGY_PART_LABELS", "Energy", "energy_part_label", "EnergyMeter", "EnergyProfile", "HOROWITZ_45NM_PJ", "LTE",
           "PROFILES", "RadioModel", "RadioPhase", "RaplCounter", "Stopwatch", "TimingStats",
           "WIFI", "benchmark", "draw_radio_timeline", "energy_by_profile", "forward_flops",
           "get_profile", "inference_latency", "lstm_forward_flops_per_step",
           "lstm_training_flops_per_sample", "mlp_layers", "mlp_training_flops_per_sample",
           "nvml_device_for", "price_history", "price_rows", "radio_timeline", "synchronize",
           "time_calls", "time_interleaved", "time_train_step", "time_trainer",
           "training_flops_per_layer", "training_flops_per_sample", "wall_time"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
