"""Lesson 03, distillation: knowledge distillation on one machine (:mod:`.knowledge`) and its
federated protocols, FedDF and logit sharing (:mod:`.federated`).

Names load lazily from their modules on first use (:data:`_EXPORTS`).
"""
from importlib import import_module

#: public name -> the module that defines it
_EXPORTS = {
    "EnsembleDistillation": "fedlab_utils.lessons.distillation.federated",
    "FedDFHeterogeneous": "fedlab_utils.lessons.distillation.federated",
    "LogitCodec": "fedlab_utils.lessons.distillation.federated",
    "LogitSharing": "fedlab_utils.lessons.distillation.federated",
    "class_average_logits": "fedlab_utils.lessons.distillation.federated",
    "run_feddf_heterogeneous": "fedlab_utils.lessons.distillation.federated",
    "run_logit_sharing": "fedlab_utils.lessons.distillation.federated",
    "weight_payload_bytes": "fedlab_utils.lessons.distillation.federated",
}
__all__ = ["EnsembleDistillation", "FedDFHeterogeneous", "LogitCodec", "LogitSharing",
           "class_average_logits", "run_feddf_heterogeneous", "run_logit_sharing",
           "weight_payload_bytes"]


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
