"""Lesson 00 (the federated baseline): the table its setup cell validates its parameters against.

``check_parameters(globals(), RULES_00)`` in the notebook's setup cell checks every parameter in
one call, before any work, so a typo fails at once with a message naming the parameter, its
value and what is valid (see :mod:`fedlab_utils.validation`).
"""
from __future__ import annotations

from fedlab_utils.data import DATASETS
from fedlab_utils.ledger.energy import PROFILES
from fedlab_utils.validation import Rule, choice, fraction, integer, optional_path, real

__all__ = ["RULES_00"]

#: Lesson 00's parameters and what each may be (the order is the parameters cell's).
RULES_00: dict[str, Rule] = {
    "seed": integer(0),
    "dataset": choice(DATASETS),
    "data_dir": optional_path(),
    "model_name": choice(("mlp", "cnn")),
    "num_clients": integer(1),
    "fraction": fraction(),
    "rounds": integer(1),
    "fedsgd_rounds": integer(1),
    "local_epochs": integer(1),
    "batch_size": integer(1),
    "lr": real(0, low_inclusive=False),
    "fedsgd_lr": real(0, low_inclusive=False),
    "partition_name": choice(("dirichlet", "shards", "natural")),
    "alpha": real(0, low_inclusive=False),
    "target_accuracy": real(0, 1, low_inclusive=False, high_inclusive=False),
    "energy_profile": choice(PROFILES),
    "results_path": optional_path(),
}
