"""Aggregators, one per file: FedAvg's weighted mean (:mod:`.fedavg`), the coordinate-wise
median (:mod:`.median`) and the trimmed mean (:mod:`.trimmed_mean`).  Each is called as
``aggregate(results, global_model, round_idx)`` and returns one update.

Names load lazily from their modules on first use (:data:`_EXPORTS`).
"""
from fedlab_utils.facade import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "Aggregate": "fedlab_utils.core.aggregators.fedavg",
    "fedavg_aggregate": "fedlab_utils.core.aggregators.fedavg",
    "weighted_average": "fedlab_utils.core.aggregators.fedavg",
    "Median": "fedlab_utils.core.aggregators.median",
    "sorted_stack": "fedlab_utils.core.aggregators.median",
    "TrimmedMean": "fedlab_utils.core.aggregators.trimmed_mean",
}
__all__ = ["Aggregate", "Median", "TrimmedMean", "fedavg_aggregate", "sorted_stack",
           "weighted_average"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
