"""Tables a student reads, labelled in the student's language when they are shown.

A lesson helper that builds a :class:`pandas.DataFrame` (``deadline_table``, ``layer_report``)
keys its columns in English, because notebooks and tests index them by name (``table["J wasted"]``)
in both editions.  :func:`labelled` returns the same frame with display labels attached: the
notebook's rich display (HTML) and ``repr`` show the translated labels, while indexing, ``.round``,
``.loc`` and every other operation keep the English keys.  The labels travel with the frame through
pandas operations (``_metadata``); a column the labels do not name is shown as it is.
"""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

__all__ = ["LabelledFrame", "labelled"]


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
