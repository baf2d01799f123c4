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
from . import data, devices, federated, ledger, models, results, validation, wire
from .data import client_data, label_counts, load_dataset, partition
from .devices import get_device, get_devices, seed_everything
from .federated import History, LocalTraining, run, summary_table
from .models import count_parameters, make_model
from .results import Claims, record_results

__version__ = "0.1.0"
__all__ = ["data", "devices", "federated", "ledger", "models", "results", "validation", "wire",
           "load_dataset", "partition", "client_data", "label_counts", "get_device", "get_devices",
           "seed_everything", "History", "LocalTraining", "run", "summary_table", "make_model",
           "count_parameters", "Claims", "record_results"]
