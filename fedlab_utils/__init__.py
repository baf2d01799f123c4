"""fedlab_utils -- the shared package of the *Efficient Federated Learning* course.

One concept per module:

========================  ====================================================================
``data``                  offline datasets (mnist5k, digits, synthetic, IDX files) and partitioners
``models``                the small reference MLP and CNN, parameter counts
``federated``             the federated loop, its hooks, and the ``History`` it returns
``wire``                  codecs: updates to bytes and back (the ledger counts ``len()``)
``ledger``                FLOPs (FlopCounterMode), energy profiles with cited constants, meters
``devices``               ``get_device``, ``get_devices``, seeding
``plotting``/``widgets``  the course's plots and ipywidgets explorers
``checks``                exercise checks that raise with a hint
``results``               asserted claims and atomic results files
``validation``            parameter errors that name the parameter, value and valid range
========================  ====================================================================

Technique modules (``pruning``, ``compression``, ``distillation``, ``acceleration``,
``parallel``) hold what one lesson needs beyond this core.
"""
import gc as _gc

# Importing torch creates a few hundred thousand objects that live as long as the process.  The
# cyclic garbage collector would scan them over and over: while they are being created, and in
# every later full collection, the last one at exit included: about half a second of a fresh
# 2-second run on the course's 2-core machine (``import_floor`` in benchmarks/results/loop.json
# times ``import torch`` both ways).  So the core is imported with the collector paused, and what exists then is
# moved to the collector's permanent generation (``gc.freeze``; objects are still freed when their
# last reference goes, only cycles among them are never collected: the cyclic garbage the import
# itself leaves, about 7,000 objects and 1 MB, stays).  Whether the collector runs afterwards is
# left as it was.
_collecting = _gc.isenabled()
_gc.disable()
try:
    from . import data, devices, federated, ledger, models, results, validation, wire
    from .data import client_data, label_counts, load_dataset, partition
    from .devices import get_device, get_devices, seed_everything
    from .federated import History, LocalTraining, run, summary_table
    from .models import count_parameters, make_model
    from .results import Claims, record_results
finally:
    _gc.freeze()
    if _collecting:
        _gc.enable()

__version__ = "0.1.0"
__all__ = ["data", "devices", "federated", "ledger", "models", "results", "validation", "wire",
           "load_dataset", "partition", "client_data", "label_counts", "get_device", "get_devices",
           "seed_everything", "History", "LocalTraining", "run", "summary_table", "make_model",
           "count_parameters", "Claims", "record_results"]
