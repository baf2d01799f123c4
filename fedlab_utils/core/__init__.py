"""The federated core a researcher extends: the loop (:func:`run`), the round protocol and its
strategies, client training, the vmap trainer, server optimizers, aggregators, the registry of
named parts, faults, checkpoints and the run's history.

It imports no lesson, course or deploy module (``lint-imports`` checks it).

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
    "Callback": "fedlab_utils.core.callbacks",
    "Checkpointing": "fedlab_utils.core.callbacks",
    "ProgressBar": "fedlab_utils.core.callbacks",
    "FORMAT": "fedlab_utils.core.checkpoint",
    "config_mismatches": "fedlab_utils.core.checkpoint",
    "load_checkpoint": "fedlab_utils.core.checkpoint",
    "load_object_state": "fedlab_utils.core.checkpoint",
    "object_state": "fedlab_utils.core.checkpoint",
    "reset_state": "fedlab_utils.core.checkpoint",
    "save_checkpoint": "fedlab_utils.core.checkpoint",
    "CLIENT_STATUSES": "fedlab_utils.core.faults",
    "Faults": "fedlab_utils.core.faults",
    "RoundWarning": "fedlab_utils.core.faults",
    "update_is_finite": "fedlab_utils.core.faults",
    "History": "fedlab_utils.core.history",
    "RoundRecord": "fedlab_utils.core.history",
    "joules_to_target": "fedlab_utils.core.history",
    "rounds_to_target": "fedlab_utils.core.history",
    "seeds_summary": "fedlab_utils.core.history",
    "summary_table": "fedlab_utils.core.history",
    "ON_CLIENT_ERROR": "fedlab_utils.core.loop",
    "progress_enabled": "fedlab_utils.core.loop",
    "run": "fedlab_utils.core.loop",
    "sample_clients": "fedlab_utils.core.loop",
    "check_clients": "fedlab_utils.core.preflight",
    "check_local": "fedlab_utils.core.preflight",
    "check_test": "fedlab_utils.core.preflight",
    "check_trainer": "fedlab_utils.core.preflight",
    "probe_model": "fedlab_utils.core.preflight",
    "FedAvgProtocol": "fedlab_utils.core.protocol",
    "RoundContext": "fedlab_utils.core.protocol",
    "RoundProtocol": "fedlab_utils.core.protocol",
    "per_client": "fedlab_utils.core.protocol",
    "Entry": "fedlab_utils.core.registry",
    "KINDS": "fedlab_utils.core.registry",
    "SERVERS": "fedlab_utils.core.registry",
    "SPECS": "fedlab_utils.core.registry",
    "TRAINERS": "fedlab_utils.core.registry",
    "make_server": "fedlab_utils.core.registry",
    "make_trainer": "fedlab_utils.core.registry",
    "parse_spec": "fedlab_utils.core.registry",
    "register": "fedlab_utils.core.registry",
    "resolve": "fedlab_utils.core.registry",
    "resolve_aggregate": "fedlab_utils.core.registry",
    "resolve_codec": "fedlab_utils.core.registry",
    "resolve_server": "fedlab_utils.core.registry",
    "resolve_trainer": "fedlab_utils.core.registry",
    "resolve_transform": "fedlab_utils.core.registry",
    "spec_of": "fedlab_utils.core.registry",
    "FedAvgServer": "fedlab_utils.core.servers.fedavg",
    "ServerOptimizer": "fedlab_utils.core.servers.fedavg",
    "FedAvgM": "fedlab_utils.core.servers.fedavgm",
    "fedavgm_step": "fedlab_utils.core.servers.fedavgm",
    "FedAdagrad": "fedlab_utils.core.servers.fedopt",
    "FedAdam": "fedlab_utils.core.servers.fedopt",
    "FedOpt": "fedlab_utils.core.servers.fedopt",
    "FedYogi": "fedlab_utils.core.servers.fedopt",
    "ClientResult": "fedlab_utils.core.training",
    "ClientTrainer": "fedlab_utils.core.training",
    "ClientTransform": "fedlab_utils.core.training",
    "FedProx": "fedlab_utils.core.training",
    "LocalTraining": "fedlab_utils.core.training",
    "OPTIMIZERS": "fedlab_utils.core.training",
    "PRECISIONS": "fedlab_utils.core.training",
    "PlainSGD": "fedlab_utils.core.training",
    "SequentialTrainer": "fedlab_utils.core.training",
    "StackedUpdates": "fedlab_utils.core.training",
    "apply_delta": "fedlab_utils.core.training",
    "autocast_context": "fedlab_utils.core.training",
    "backward_and_step": "fedlab_utils.core.training",
    "client_generator": "fedlab_utils.core.training",
    "evaluate": "fedlab_utils.core.training",
    "make_optimizer": "fedlab_utils.core.training",
    "minibatches": "fedlab_utils.core.training",
    "model_state": "fedlab_utils.core.training",
    "state_delta": "fedlab_utils.core.training",
    "train_locally": "fedlab_utils.core.training",
    "MAX_STACK_BYTES": "fedlab_utils.core.vmap_trainer",
    "VmapTrainer": "fedlab_utils.core.vmap_trainer",
}
__all__ = ["Aggregate", "CLIENT_STATUSES", "Callback", "Checkpointing", "ClientResult",
           "ClientTrainer", "ClientTransform", "Entry", "FORMAT", "Faults", "FedAdagrad", "FedAdam",
           "FedAvgM", "FedAvgProtocol", "FedAvgServer", "FedOpt", "FedProx", "FedYogi", "History",
           "KINDS", "LocalTraining", "MAX_STACK_BYTES", "Median", "ON_CLIENT_ERROR", "OPTIMIZERS",
           "PRECISIONS", "PlainSGD", "ProgressBar", "RoundContext", "RoundProtocol", "RoundRecord",
           "RoundWarning", "SERVERS", "SPECS", "SequentialTrainer", "ServerOptimizer",
           "StackedUpdates", "TRAINERS", "TrimmedMean", "VmapTrainer", "apply_delta",
           "autocast_context", "backward_and_step", "check_clients", "check_local", "check_test",
           "check_trainer", "client_generator", "config_mismatches", "evaluate", "fedavg_aggregate",
           "fedavgm_step", "joules_to_target", "load_checkpoint", "load_object_state",
           "make_optimizer", "make_server", "make_trainer", "minibatches", "model_state",
           "object_state", "parse_spec", "per_client", "probe_model", "progress_enabled",
           "register", "reset_state", "resolve", "resolve_aggregate", "resolve_codec",
           "resolve_server", "resolve_trainer", "resolve_transform", "rounds_to_target", "run",
           "sample_clients", "save_checkpoint", "seeds_summary", "sorted_stack", "spec_of",
           "state_delta", "summary_table", "train_locally", "update_is_finite", "weighted_average"]


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
