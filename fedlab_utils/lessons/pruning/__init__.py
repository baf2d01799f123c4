"""Lesson 01, pruning: masks and magnitude pruning (:mod:`.masks`), structured pruning
(:mod:`.structured`) and pruning during federated training (:mod:`.federated`).

Names load lazily from their modules on first use (:data:`_EXPORTS`).
"""
from fedlab_utils.facade import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "FederatedPruning": "fedlab_utils.lessons.pruning.federated",
    "MaskState": "fedlab_utils.lessons.pruning.federated",
    "MaskedTraining": "fedlab_utils.lessons.pruning.federated",
    "PruningSchedule": "fedlab_utils.lessons.pruning.federated",
    "PruningServer": "fedlab_utils.lessons.pruning.federated",
    "RELATIONS_01": "fedlab_utils.lessons.pruning.federated",
    "RULES_01": "fedlab_utils.lessons.pruning.federated",
    "SCHEDULES": "fedlab_utils.lessons.pruning.federated",
    "Masks": "fedlab_utils.lessons.pruning.masks",
    "PRUNABLE": "fedlab_utils.lessons.pruning.masks",
    "SCOPES": "fedlab_utils.lessons.pruning.masks",
    "accuracy_vs_sparsity": "fedlab_utils.lessons.pruning.masks",
    "apply_masks": "fedlab_utils.lessons.pruning.masks",
    "article_prune_model": "fedlab_utils.lessons.pruning.masks",
    "check_sparsity": "fedlab_utils.lessons.pruning.masks",
    "is_reparametrized": "fedlab_utils.lessons.pruning.masks",
    "layer_report": "fedlab_utils.lessons.pruning.masks",
    "magnitude_masks": "fedlab_utils.lessons.pruning.masks",
    "make_permanent": "fedlab_utils.lessons.pruning.masks",
    "mask_state": "fedlab_utils.lessons.pruning.masks",
    "nonzero_training_flops": "fedlab_utils.lessons.pruning.masks",
    "plain_state": "fedlab_utils.lessons.pruning.masks",
    "prunable_holder": "fedlab_utils.lessons.pruning.masks",
    "prunable_names": "fedlab_utils.lessons.pruning.masks",
    "prunable_weights": "fedlab_utils.lessons.pruning.masks",
    "sensitivity_scan": "fedlab_utils.lessons.pruning.masks",
    "sparsity_of": "fedlab_utils.lessons.pruning.masks",
    "weight_flops": "fedlab_utils.lessons.pruning.masks",
    "ZERO_PRESERVING": "fedlab_utils.lessons.pruning.structured",
    "shrink": "fedlab_utils.lessons.pruning.structured",
    "structured_masks": "fedlab_utils.lessons.pruning.structured",
}
__all__ = ["FederatedPruning", "MaskState", "MaskedTraining", "Masks", "PRUNABLE",
           "PruningSchedule", "PruningServer", "RELATIONS_01", "RULES_01", "SCHEDULES", "SCOPES",
           "ZERO_PRESERVING", "accuracy_vs_sparsity", "apply_masks", "article_prune_model",
           "check_sparsity", "is_reparametrized", "layer_report", "magnitude_masks",
           "make_permanent", "mask_state", "nonzero_training_flops", "plain_state",
           "prunable_holder", "prunable_names", "prunable_weights", "sensitivity_scan", "shrink",
           "sparsity_of", "structured_masks", "weight_flops"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
