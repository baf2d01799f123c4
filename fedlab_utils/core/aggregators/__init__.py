"""Aggregators, one per file: FedAvg's weighted mean (:mod:`.fedavg`), the coordinate-wise
median (:mod:`.median`) and the trimmed mean (:mod:`.trimmed_mean`).  Each is called as
``aggregate(results, global_model, round_idx)`` and returns one update.

Names load lazily from their modules on first use (:data:`_EXPORTS`).
"""
from importlib import import_module

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
