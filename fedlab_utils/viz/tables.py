"""Tables a student reads, labelled in the student's language when they are shown.

A lesson helper that builds a :class:`pandas.DataFrame` (``deadline_table``, ``layer_report``)
keys its columns in English, because notebooks and tests index them by name (``table["J wasted"]``)
in both editions.  :func:`labelled` returns the same frame with display labels attached: the
notebook's rich display (HTML) and ``repr`` show the translated labels, while indexing, ``.round``,
``.loc`` and every other operation keep the English keys.  The labels travel with the frame through
pandas operations (``_metadata``); a column the labels do not name is shown as it is.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import pandas as pd

from fedlab_utils.i18n import N_, gettext

__all__ = ["LabelledFrame", "labelled", "RUN_COLUMNS", "run_column_labels"]


class LabelledFrame(pd.DataFrame):
    """A DataFrame keyed in English and displayed with ``labels`` (key -> label in the reader's language)."""

    _metadata = ["labels"]
    labels: dict

    @property
    def _constructor(self):
        return LabelledFrame

    def displayed(self) -> pd.DataFrame:
        """A plain copy with the display labels in place of the keys (columns, index and their names)."""
        labels = getattr(self, "labels", None) or {}
        plain = pd.DataFrame(self)
        rename = lambda key: labels.get(key, key) if isinstance(key, str) else key  # noqa: E731
        shown = plain.rename(columns=rename, index=rename)
        shown.columns.names = [rename(n) for n in shown.columns.names]
        shown.index.names = [rename(n) for n in shown.index.names]
        return shown

    def _repr_html_(self) -> str | None:
        return self.displayed()._repr_html_()

    def __repr__(self) -> str:
        return repr(self.displayed())

    def to_string(self, *args, **kwargs) -> str:  # type: ignore[override]
        return self.displayed().to_string(*args, **kwargs)


def labelled(frame: pd.DataFrame, labels: Mapping[str, str]) -> LabelledFrame:
    """``frame`` (not copied beyond pandas' own view rules) with display ``labels`` for its keys."""
    result = LabelledFrame(frame)
    result.labels = dict(labels)
    return result


#: the columns of a run comparison (``History.summary`` / ``summary_table``), keyed in English
RUN_COLUMNS = {"run": N_("run"), "seeds": N_("seeds"), "final acc %": N_("final acc %"), "rounds": N_("rounds"),
               "MB up": N_("MB up"), "MB down": N_("MB down"), "client GFLOPs": N_("client GFLOPs"),
               "J (model)": N_("J (model)"), "J measured": N_("J measured"), "dropped": N_("dropped"),
               "late": N_("late"), "rejected": N_("rejected"), "failed": N_("failed"),
               "J wasted": N_("J wasted"), "sim time s": N_("sim time s")}
_ROUNDS_TO = re.compile(r"^rounds to (\d+(?:\.\d+)?)%$")
_REACHED = re.compile(r"^reached (\d+(?:\.\d+)?)%$")
_SPREAD = " ±"


def run_column_labels(columns: Iterable) -> dict[str, str]:
    """Display labels, in the reader's language, for the columns of a run comparison that the
    package names (:data:`RUN_COLUMNS`, ``rounds to N%``, ``reached N%`` and a column's ``±``
    spread); other columns (a notebook's own) are left out, so they show as they are."""
    def label(column: str) -> str | None:
        if column in RUN_COLUMNS:
            return gettext(RUN_COLUMNS[column])
        if column.endswith(_SPREAD):
            base = label(column[: -len(_SPREAD)])
            return None if base is None else base + _SPREAD
        for pattern, message in ((_ROUNDS_TO, N_("rounds to {target}%")), (_REACHED, N_("reached {target}%"))):
            match = pattern.match(column)
            if match:
                return gettext(message).format(target=match.group(1))
        return None

    labels = {}
    for column in columns:
        if isinstance(column, str) and (shown := label(column)) is not None:
            labels[column] = shown
    return labels
