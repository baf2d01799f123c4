"""Callbacks into :func:`~fedlab_utils.core.loop.run`, in pfl-research's style.

A callback sees the run at four moments: its start, the start and the end of every round (with
the round's complete :class:`~fedlab_utils.core.history.RoundRecord`, already in the history), and
its end.  The loop's own progress bar and checkpoints are callbacks too, so a researcher's logger,
early report or plot hooks in the same way: ``run(..., callbacks=[MyLogger()])``.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from tqdm.auto import tqdm

from fedlab_utils.core.checkpoint import save_checkpoint
from fedlab_utils.core.history import History, RoundRecord

__all__ = ["Callback", "ProgressBar", "Checkpointing"]


class Callback:
    """Override what you need; every hook does nothing by default."""

    def on_run_start(self, history: History) -> None:
        """Before the first round this run plays (after a resume: the next one)."""

    def on_round_start(self, round_idx: int, history: History) -> None:
        """Before round ``round_idx`` samples its clients."""

    def on_round_end(self, record: RoundRecord, history: History) -> None:
        """After the round: ``record`` is complete (evaluation, wall time, joules) and is
        ``history.records[-1]``."""

    def on_run_end(self, history: History) -> None:
        """After the last round; ``history.model`` is the trained model."""


class ProgressBar(Callback):
    """A tqdm bar over the rounds with the last evaluated accuracy (``progress=False`` hides it)."""

    def __init__(self, label: str, first_round: int, rounds: int, enabled: bool):
        self.label, self.first_round, self.rounds, self.enabled = label, first_round, rounds, enabled
        self.bar: tqdm | None = None

    def on_run_start(self, history: History) -> None:
        self.bar = tqdm(total=self.rounds - self.first_round + 1, desc=self.label, disable=not self.enabled,
                        leave=False)

    def on_round_end(self, record: RoundRecord, history: History) -> None:
        evaluated = history.evaluated_records()
        accuracy = evaluated[-1].accuracy if evaluated else float("nan")
        if self.bar is not None:
            self.bar.set_postfix(acc=f"{100 * accuracy:.1f}%")
            self.bar.update(1)

    def on_run_end(self, history: History) -> None:
        if self.bar is not None:
            self.bar.close()


class Checkpointing(Callback):
    """Writes the run's checkpoint (atomically) every ``every`` rounds and after the last round."""

    def __init__(self, path: str | os.PathLike, every: int, rounds: int, identity: dict,
                 state: Callable[[], dict]):
        self.path, self.every, self.rounds, self.identity, self.state = path, every, rounds, identity, state

    def on_round_end(self, record: RoundRecord, history: History) -> None:
        if record.round % self.every == 0 or record.round == self.rounds:
            save_checkpoint(os.fspath(self.path), round_idx=record.round, config=self.identity, history=history.to_dict(),
                            state=self.state())
