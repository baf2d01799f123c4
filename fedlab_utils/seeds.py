"""Runs over several seeds: how a collection of runs is labelled, and the confidence band of a mean.

Plots (:mod:`fedlab_utils.viz.plotting`), the summary table (:mod:`fedlab_utils.core.history`) and
sweeps (:mod:`fedlab_utils.course.sweep_results`) share these, so a run is labelled and a spread
computed the same way everywhere.  A run is a ``History`` (anything with ``records`` and a
``label``), or a list of them: the same configuration over several seeds.
"""
from __future__ import annotations

import numpy as np

__all__ = ["is_history", "labelled", "confidence_band"]


def is_history(run: object) -> bool:
    """Whether ``run`` is one run's history (it has ``records`` and a ``label``)."""
    return hasattr(run, "records") and hasattr(run, "label") and not isinstance(run, (list, tuple, dict))


def labelled(histories) -> list[tuple[str, object]]:
    """``(label, run)`` per run: a dict's keys label its runs (``{"fedavg": h1, "lowrank": h2}``),
    a list's runs keep their own ``History.label``.  A run is one :class:`History`, or a list of
    them -- the same configuration over several seeds -- labelled by its first History's label
    when it comes in a list."""
    def one(run):
        if is_history(run):
            return run
        seeds = list(run) if isinstance(run, (list, tuple)) else None
        if not seeds or not all(is_history(h) for h in seeds):
            raise TypeError(f"a run must be a History or a non-empty list of History objects (one per seed); "
                            f"got {type(run).__name__}: {run!r:.80}")
        return seeds

    if isinstance(histories, dict):
        return [(str(key), one(run)) for key, run in histories.items()]
    runs = [one(run) for run in histories]
    return [((run if is_history(run) else run[0]).label, run) for run in runs]


def confidence_band(values, level: float = 0.95) -> tuple[float, float, int]:
    """Mean and the half-width of its Student-t confidence interval over the finite ``values``, and their count.

    The half-width is ``t(1 - (1 - level)/2, n - 1) * s / sqrt(n)`` with ``s`` the sample standard
    deviation: the interval a handful of seeds supports (a normal 1.96 would be far too narrow at
    n = 3, where t is 4.30).  NaN with fewer than two values (no spread to estimate)."""
    from scipy import stats

    finite = np.asarray([v for v in values if v is not None], dtype=float)
    finite = finite[np.isfinite(finite)]
    n = len(finite)
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(finite[0]), float("nan"), 1
    half = stats.t.ppf(1 - (1 - level) / 2, n - 1) * finite.std(ddof=1) / np.sqrt(n)
    return float(finite.mean()), float(half), n
