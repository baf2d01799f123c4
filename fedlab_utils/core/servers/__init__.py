"""Server optimizers, one per file: plain FedAvg (:mod:`.fedavg`), server momentum
(:mod:`.fedavgm`) and the adaptive FedOpt family (:mod:`.fedopt`).  Each has ``step(global_state,
update)``; a stateful one adds ``reset``, ``state_dict`` and ``load_state_dict``.

Names load lazily from their modules on first use (:data:`_EXPORTS`).
"""
from fedlab_utils.facade import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "FedAvgServer": "fedlab_utils.core.servers.fedavg",
    "ServerOptimizer": "fedlab_utils.core.servers.fedavg",
    "FedAvgM": "fedlab_utils.core.servers.fedavgm",
    "fedavgm_step": "fedlab_utils.core.servers.fedavgm",
    "FedAdagrad": "fedlab_utils.core.servers.fedopt",
    "FedAdam": "fedlab_utils.core.servers.fedopt",
    "FedOpt": "fedlab_utils.core.servers.fedopt",
    "FedYogi": "fedlab_utils.core.servers.fedopt",
}
__all__ = ["FedAdagrad", "FedAdam", "FedAvgM", "FedAvgServer", "FedOpt", "FedYogi",
           "ServerOptimizer", "fedavgm_step"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
