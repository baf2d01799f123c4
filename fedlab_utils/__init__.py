"""fedlab_utils -- the shared package of the *Efficient Federated Learning* course.

One concept per module.  The core (no module of it imports a lesson module):

========================  ====================================================================
``federated``             the one federated loop (``run``): sampling, faults, each round's ledger
                          rows, checkpoints
``protocol``              the round protocol (``RoundProtocol``, ``RoundContext``) and FedAvg's
                          (``FedAvgProtocol``, with its stacked-update fast path)
``training``              local training: settings, optimizers, minibatches, transforms (FedProx),
                          trainers, the client result
``vmap_trainer``          the trainer that trains all sampled clients of a round at once
``servers``               aggregators (FedAvg, median, trimmed mean) and server optimizers (FedOpt)
``registry``              one name or import path for every codec, server, aggregator, transform
                          and trainer (``run(uplink="q8", server="fedadam")``)
``history``               ``RoundRecord`` and ``History``: what a run measured, round by round
``flops``                 FLOP counting: FlopCounterMode per sample, per layer, forward only; the
                          MLP and LSTM closed forms
``ledger``                energy profiles with cited constants, pricing every client-round, real
                          meters (re-exports ``flops``)
``wire``                  the ``Codec`` protocol, fp32, bit packing (the ledger counts ``len()``)
``compression``           every other codec: quantization, top-k, random-k, sign, sparse, error
                          feedback
``faults``                dropouts, stragglers and deadlines
``checkpoint``            atomic JSON + tensors checkpoints, never pickle
``timing``                synchronised wall-clock timing, training-step and trainer timers
``data``                  offline datasets (mnist5k, digits, synthetic, IDX files) and partitioners
``published_data``        CIFAR-10, FEMNIST and Shakespeare from their publishers' files
``models``                the course's reference models, parameter counts
``devices``               ``get_device``, ``get_devices``, seeding
``validation``            parameter errors that name the parameter, value and valid range
``setup_checks``          what ``run`` checks before round 1 (clients, test, local, trainer, model)
``results``               asserted claims and atomic results files
``plotting``/``widgets``  the course's plots and ipywidgets explorers
``diagrams``              diagrams of the key ideas, drawn from the lessons' own objects
``checks``                exercise checks that raise with a hint
``i18n``/``locale``       runtime messages in the student's language (gettext)
========================  ====================================================================

Lesson modules hold what one lesson needs beyond this core: ``pruning``,
``structured_pruning``, ``federated_pruning`` (01), ``compression`` (02, also core),
``model_quantization`` (02), ``distillation``, ``knowledge_distillation`` (03), ``acceleration``
(04), ``parallel``, ``parallel_worker``, ``split_learning`` (05), ``capstone`` (06), ``flower``,
``flower_commands``, ``deploy``, ``deploy_cli``, ``pki`` (07).  The commands: ``__main__`` dispatches ``python -m fedlab_utils``; ``runner`` holds what
they share; ``sweep``/``sweep_results``, ``classroom`` (nbgrader; autograding in ``grading``, the
command line in ``classroom_cli``) and ``translate`` (the Chinese
edition; its catalogs in ``translation_catalogs``, its glossary and protected tokens in
``glossary``) are the others.
"""
import gc as _gc

# Importing torch creates a few hundred thousand objects that live as long as the process.  The
# cyclic garbage collector would scan them over and over: while they are being created, and in
# every later full collection, the last one at exit included, a sizeable share of a short run's
# start-up (``import_floor`` in benchmarks/results/loop.json times ``import torch`` both ways).
# So the core is imported with the collector paused, and what exists then is
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
