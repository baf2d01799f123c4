"""Notebook 07's lesson table: its parameters and what is valid for each.

The deployment itself lives in :mod:`fedlab_utils.deploy.apps` (the apps) and
:mod:`fedlab_utils.deploy` (the launcher); this module holds only what the notebook's setup cell
validates in one call, :func:`~fedlab_utils.validation.check_parameters`.
"""
from __future__ import annotations

from .validation import choice, integer, optional_path, real

__all__ = ["RULES_07", "DATASETS_07"]

#: The data sets small enough to load in every SuperNode's process within a lesson.
DATASETS_07 = ("mnist5k", "digits", "synthetic")

#: Notebook 07's parameters: each SuperNode is a real process, so the counts stay small.
RULES_07 = {
    "seed": integer(0), "dataset": choice(DATASETS_07), "num_clients": integer(2, 8), "rounds": integer(1, 20),
    "local_epochs": integer(1, 5), "batch_size": integer(1), "lr": real(0.0, low_inclusive=False),
    "alpha": real(0.0, low_inclusive=False), "uplink_bits": integer(1, 16),
    "server_lr": real(0.0, low_inclusive=False), "kill_round": integer(2, 20), "deadline_factor": real(1.0),
    "round_timeout": real(0.0, low_inclusive=False), "device": choice(("cpu", "auto")),
    "results_path": optional_path(),
}
