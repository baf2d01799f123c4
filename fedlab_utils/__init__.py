"""fedlab_utils -- the shared package of the *Efficient Federated Learning* course.

Its rooms, by role (``docs/architecture.md`` has the full map; ``lint-imports`` checks the layers):

============================  ================================================================
``core``                      the federated core a researcher extends: ``run``, the round protocol,
                              client training, the vmap trainer, server optimizers, aggregators,
                              the registry, faults, checkpoints, the history
``compression``, ``ledger``   part of the core: codecs and the wire; FLOPs, energy and timing
``lessons``                   one subpackage or module per technique (pruning, quantization,
                              distillation, acceleration, parallel, capstone, deployment)
``checks``                    the exercise checks
``course``                    runner, claims and results files, sweeps, classroom, translation
``deploy``                    Flower apps, the process launcher, PKI and the ``deploy`` command
``data``, ``models``, ...     the shared base: data, published data, models, devices, ``viz``
                              (plots, widgets, diagrams), i18n, atomic files, validation
============================  ================================================================

The names below load lazily, so ``import fedlab_utils`` stays light and needs none of the
``[course]`` or ``[deploy]`` extras.
"""
from fedlab_utils.facade import lazy_exports

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "load_dataset": "fedlab_utils.data", "partition": "fedlab_utils.data", "client_data": "fedlab_utils.data",
    "label_counts": "fedlab_utils.data",
    "get_device": "fedlab_utils.devices", "get_devices": "fedlab_utils.devices",
    "seed_everything": "fedlab_utils.devices",
    "run": "fedlab_utils.core.loop", "History": "fedlab_utils.core.history",
    "RoundRecord": "fedlab_utils.core.history", "summary_table": "fedlab_utils.core.history",
    "LocalTraining": "fedlab_utils.core.training",
    "make_model": "fedlab_utils.models", "count_parameters": "fedlab_utils.models",
    "Claims": "fedlab_utils.course.claims", "record_results": "fedlab_utils.course.claims",
}
#: the rooms, importable as attributes (``fedlab_utils.core``) without an import of their own
_SUBPACKAGES = frozenset({"core", "compression", "ledger", "lessons", "checks", "course", "deploy", "viz", "data",
                          "published_data", "models", "devices", "seeds", "i18n", "files", "validation"})
__all__ = ["load_dataset", "partition", "client_data", "label_counts", "get_device", "get_devices",
           "seed_everything", "run", "History", "RoundRecord", "summary_table", "LocalTraining", "make_model",
           "count_parameters", "Claims", "record_results"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), _SUBPACKAGES)
