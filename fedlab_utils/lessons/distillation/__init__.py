"""Lesson 03, distillation: knowledge distillation on one machine (:mod:`.knowledge`) and its
federated protocols, FedDF and logit sharing (:mod:`.federated`).

Names load lazily from their modules on first use (:data:`_EXPORTS`).
"""
from fedlab_utils.facade import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "EnsembleDistillation": "fedlab_utils.lessons.distillation.federated",
    "FedDFHeterogeneous": "fedlab_utils.lessons.distillation.federated",
    "LogitCodec": "fedlab_utils.lessons.distillation.federated",
    "LogitSharing": "fedlab_utils.lessons.distillation.federated",
    "RULES_03": "fedlab_utils.lessons.distillation.federated",
    "class_average_logits": "fedlab_utils.lessons.distillation.federated",
    "run_feddf_heterogeneous": "fedlab_utils.lessons.distillation.federated",
    "run_logit_sharing": "fedlab_utils.lessons.distillation.federated",
    "weight_payload_bytes": "fedlab_utils.lessons.distillation.federated",
    "check_alpha": "fedlab_utils.lessons.distillation.knowledge",
    "check_proxy_size": "fedlab_utils.lessons.distillation.knowledge",
    "check_temperature": "fedlab_utils.lessons.distillation.knowledge",
    "distill": "fedlab_utils.lessons.distillation.knowledge",
    "distill_flops": "fedlab_utils.lessons.distillation.knowledge",
    "distill_step": "fedlab_utils.lessons.distillation.knowledge",
    "ensemble_logits": "fedlab_utils.lessons.distillation.knowledge",
    "kd_loss": "fedlab_utils.lessons.distillation.knowledge",
    "proxy_split": "fedlab_utils.lessons.distillation.knowledge",
}
__all__ = ["EnsembleDistillation", "FedDFHeterogeneous", "LogitCodec", "LogitSharing", "RULES_03",
           "check_alpha", "check_proxy_size", "check_temperature", "class_average_logits",
           "distill", "distill_flops", "distill_step", "ensemble_logits", "kd_loss", "proxy_split",
           "run_feddf_heterogeneous", "run_logit_sharing", "weight_payload_bytes"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
