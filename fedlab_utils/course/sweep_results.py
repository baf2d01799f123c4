"""A sweep's tables and figures, from its per-point records (see :mod:`fedlab_utils.course.sweep`).

* :func:`point_slug`: the folder name of one point and its ``point`` column (``bits=4,seed=0``);
* :func:`sweep_rows` / ``sweep.csv``: one row per point, final values (``metrics.a.b`` columns);
* :func:`round_rows` / ``rounds.csv``: the long form of every run's per-round curve: ``point``,
  the swept parameters, ``run`` (the notebook's label of that run), ``round``, then ``accuracy``,
  ``bytes_up``, ``bytes_down``, ``joules`` and ``sim_time_s`` (the record's ``histories``,
  :func:`fedlab_utils.course.claims.history_series`);
* :func:`plot_curves` / ``curves.png``: accuracy against round and against cumulative uplink MB,
  one row of panels per run, one line per value of the swept parameters other than ``seed``, the
  mean over seeds with a 95 % Student-t confidence band;
* :func:`plot_sweep` / ``sweep.png``: each numeric metric (or those asked for) against the first
  swept parameter other than ``seed`` that took more than one value; wall-time metrics are left
  out unless asked for, since they measure the machine, not the method.  Parameters that took one
  value are named in the title, never drawn as axes or panels, and the panels and lines are capped
  (:data:`MAX_SWEEP_PANELS`, :data:`MAX_LINES`) so the figure stays readable.
"""
from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from pathlib import Path

from fedlab_utils.course.claims import ROUND_FIELDS, readable
from fedlab_utils.files import atomic_write_bytes, atomic_write_text
from fedlab_utils.seeds import confidence_band

__all__ = ["point_slug", "sweep_rows", "round_rows", "write_csv", "numeric_metrics", "is_wall_time", "plot_sweep",
           "sweep_figure", "plot_curves", "curves_figure"]

#: Tokens of a metric name that mark a wall-clock measurement (``latency_ms``, ``wall_time_s``, ``startup_s``).
WALL_TOKENS = frozenset({"wall", "latency", "startup", "elapsed", "seconds", "speedup", "ms", "cpu"})
#: Tokens that mark simulated or configured time, which is a result of the method, not of the machine.
MODEL_TIME_TOKENS = frozenset({"sim", "deadline", "timeout"})
#: Runs (rows of panels) drawn at most in curves.png; rounds.csv holds every run.
MAX_CURVE_RUNS = 12
#: Metric panels drawn at most in sweep.png; sweep.csv holds every metric.
MAX_SWEEP_PANELS = 12
#: Lines drawn at most in one panel of sweep.png or curves.png; the CSV files hold every point.
MAX_LINES = 10


def _flatten(prefix: str, value, row: dict) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, row)
    elif isinstance(value, (int, float, str, bool)) or value is None:
        row[prefix] = value


def point_slug(parameters: dict) -> str:
    """A readable, unique folder name for one point (``bits=4,seed=0``, plus a hash if characters were replaced)."""
    text = ",".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in parameters.items()) or "defaults"
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)
    if safe != text or len(safe) > 120:
        safe = f"{safe[:100]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return safe


def sweep_rows(records: list[dict], names: list[str]) -> list[dict]:
    """One flat row per point: parameters, status, seconds, claims held/total, error, metrics.*."""
    rows = []
    for record in records:
        results = record.get("results") or {}
        claims = results.get("claims", [])
        row = {name: record["parameters"].get(name) for name in names}
        row.update(status=record["status"], seconds=record["seconds"],
                   claims_held=sum(bool(c.get("holds")) for c in claims) if results else None,
                   claims_total=len(claims) if results else None, error=record.get("error"))
        _flatten("metrics", results.get("metrics", {}), row)
        rows.append(row)
    return rows


def round_rows(records: list[dict], names: list[str], slug=None) -> list[dict]:
    """The long form of every completed point's runs: one row per (point, run, round).

    ``slug(parameters)`` names the point (default: :func:`point_slug`).
    """
    if slug is None:
        slug = point_slug
    rows = []
    for record in records:
        results = record.get("results") or {}
        if record.get("status") != "ok":
            continue
        for run, series in (results.get("histories") or {}).items():
            for index, round_number in enumerate(series.get("round", [])):
                row = {"point": slug(record["parameters"]), **{n: record["parameters"].get(n) for n in names},
                       "run": run, "round": round_number}
                row.update({name: series[name][index] for name in ROUND_FIELDS[1:] if name in series})
                rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path, columns: Sequence[str] | None = None) -> Path:
    """``rows`` as CSV, atomically; ``columns`` fixes the header when there may be no rows."""
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=list(columns) if columns is not None and not rows else None)
    # convert_dtypes keeps integer columns integer when a failed point leaves a hole (no "2.0")
    return atomic_write_text(path, frame.convert_dtypes().to_csv(index=False))


def is_wall_time(metric: str) -> bool:
    """Whether a metric's name says it is a wall-clock time or a ratio of them (``latency_ms``, ``vmap_speedup``).

    Simulated and configured times (``sim_time_s``, ``deadline_s``) are results of the method: kept."""
    tokens = set(re.split(r"[._\s]+", metric.lower()))
    if tokens & MODEL_TIME_TOKENS:
        return False
    return bool(tokens & WALL_TOKENS) or metric.lower().endswith("_s")


def numeric_metrics(frame, wanted: Sequence[str] | None = None) -> list[str]:
    """The ``metrics.*`` columns to plot: every numeric one except wall times, or exactly ``wanted``.

    ``wanted`` names metrics without the ``metrics.`` prefix (``runs.FedAvg.bytes_up``); a name
    that is not a numeric metric of this sweep raises ``ValueError`` listing the valid ones.
    """
    import pandas as pd

    numeric = []
    for column in frame.columns:
        if not column.startswith("metrics."):
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.notna().any() and frame[column].map(lambda v: isinstance(v, bool)).sum() == 0:
            numeric.append(column)
    if wanted:
        valid = [c.removeprefix("metrics.") for c in numeric]
        unknown = [name for name in wanted if name not in valid]
        if unknown:
            raise ValueError(f"--metrics {','.join(unknown)}: not a numeric metric of this sweep; valid: {valid}")
        return [f"metrics.{name}" for name in wanted]
    columns = [c for c in numeric if not is_wall_time(c.removeprefix("metrics."))]
    varying = [c for c in columns if frame[c].nunique(dropna=True) > 1]
    return (sorted(varying, key=lambda c: c.count("."))
            + sorted((c for c in columns if c not in varying), key=lambda c: c.count(".")))


def _figure(columns: int, rows: int, width: float = 4.6, height: float = 3.4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * columns, height * rows), layout="constrained")  # room for the suptitle
    FigureCanvasAgg(fig)
    return fig


def _varying(frame, names: list[str]) -> list[str]:
    """The swept parameters other than ``seed`` that take more than one value among these rows."""
    return [n for n in names if n != "seed" and n in frame and frame[n].astype(str).nunique() > 1]


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return atomic_write_bytes(path, buffer.getvalue())


def _plain_numbers(ax) -> None:
    """Tick labels as plain numbers: no offset (``+6.296e2``) and no scientific multiplier."""
    for axis in (ax.xaxis, ax.yaxis):
        formatter = axis.get_major_formatter()
        if hasattr(formatter, "set_useOffset"):
            formatter.set_useOffset(False)
        if hasattr(formatter, "set_scientific"):
            formatter.set_scientific(False)


def _line_key(row: dict, groups: list[str]) -> str:
    return ", ".join(f"{n}={row[n]}" for n in groups) if groups else "all points"


def plot_sweep(rows: list[dict], names: list[str], path: Path, title: str = "",
               metrics: Sequence[str] | None = None) -> Path:
    """``sweep.png``: :func:`sweep_figure` saved atomically."""
    return _save(sweep_figure(rows, names, title, metrics), path)


def _plain(value):
    """A pandas/numpy scalar as the Python value it holds (``2``, not ``np.int64(2)``)."""
    return value.item() if hasattr(value, "item") else value


def _fixed_text(frame, names: list[str], varying: list[str], limit: int = 90) -> str:
    """``dataset='femnist', rounds=2``: the swept parameters that took one value, for the figure's title."""
    fixed = [f"{n}={_plain(frame[n].iloc[0])!r}" for n in names if n in frame and len(frame) and n not in varying
             and frame[n].astype(str).nunique() == 1]
    text = ", ".join(fixed)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def sweep_figure(rows: list[dict], names: list[str], title: str = "", metrics: Sequence[str] | None = None):
    """Each numeric metric (or ``metrics``) against the swept parameter that varied, mean ± std over seeds.

    Only parameters that take more than one value among the completed points are drawn: the first
    such parameter other than ``seed`` is the x-axis (``seed`` itself when only seeds vary), the
    other ones make one line per combination; a sweep where nothing varied shows its one value per
    metric.  At most :data:`MAX_SWEEP_PANELS` metric panels (three columns) and
    :data:`MAX_LINES` lines per panel are drawn, so the figure stays about 1,500 px square at
    most; the title names the parameters that stayed fixed and what was left out (every value is
    in ``sweep.csv``).
    """
    import pandas as pd

    frame = pd.DataFrame.from_records(rows)
    ok = frame[frame["status"] == "ok"] if "status" in frame else frame
    varying = _varying(ok, names)
    seeds = sorted(set(ok["seed"])) if "seed" in names and "seed" in ok and len(ok) else []
    x_name = varying[0] if varying else ("seed" if len(seeds) > 1 else None)
    groups = varying[1:]
    every_metric = numeric_metrics(ok, metrics) if len(ok) else []
    chosen = every_metric[:MAX_SWEEP_PANELS]
    columns = 3 if len(chosen) > 4 else max(1, min(2, len(chosen)))
    rows_n = max(1, -(-len(chosen) // columns))
    fig = _figure(columns, rows_n)
    if not chosen:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no completed point with numeric metrics", ha="center", va="center")
        ax.set_axis_off()
    x_values = list(dict.fromkeys(ok[x_name])) if x_name is not None and len(ok) else [None]
    numeric_x = x_name is not None and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x_values)
    position = {v: (v if numeric_x else i) for i, v in enumerate(x_values)}
    over_seeds = len(seeds) > 1 and x_name != "seed"
    keys = ok.apply(lambda row: _line_key(row, groups), axis=1) if len(ok) else pd.Series(dtype=str)
    every_line = list(dict.fromkeys(keys))
    shown_lines = set(every_line[:MAX_LINES])
    for index, metric in enumerate(chosen):
        ax = fig.add_subplot(rows_n, columns, index + 1)
        x = ok[x_name].map(position) if x_name is not None else 0
        keyed = ok.assign(_y=pd.to_numeric(ok[metric], errors="coerce"), _x=x, _g=keys)
        for group, part in keyed[keyed["_g"].isin(shown_lines)].groupby("_g", sort=False):
            stats = part.groupby("_x")["_y"].agg(["mean", "std", "count"]).sort_index()
            label = (group if groups else "mean over seeds" if over_seeds else "value")
            line = ax.plot(stats.index, stats["mean"], marker="o", label=label)[0]
            if (stats["count"] > 1).any():
                std = stats["std"].fillna(0).to_numpy()
                ax.fill_between(stats.index, stats["mean"] - std, stats["mean"] + std, alpha=0.2,
                                color=line.get_color(), label="± 1 std over seeds" if not groups else None)
        ax.set_title(metric.removeprefix("metrics."), fontsize=9)
        if x_name is None:
            ax.set_xticks([0], ["the one point"])
            ax.set_xlabel("no parameter varied")
            for x_value, y_value in zip(*ax.lines[0].get_data()) if ax.lines else ():
                ax.annotate(readable(y_value), (x_value, y_value), textcoords="offset points", xytext=(8, 4), fontsize=8)
        else:
            ax.set_xlabel(x_name)
            if not numeric_x:
                ax.set_xticks(list(position.values()), [str(v) for v in position], rotation=20)
            elif len(position) <= 12:
                ax.set_xticks(sorted(position.values()))
        _plain_numbers(ax)
        ax.legend(fontsize=7)
    notes = [title] if title else []
    if over_seeds:
        notes.append(f"mean ± std over seeds {seeds}")
    fixed = _fixed_text(ok, names, varying + (["seed"] if len(seeds) > 1 else []))
    if fixed:
        notes.append(f"fixed: {fixed}")
    left_out = []
    if len(every_metric) > len(chosen):
        left_out.append(f"first {len(chosen)} of {len(every_metric)} metrics (--metrics picks them)")
    if len(every_line) > len(shown_lines):
        left_out.append(f"first {len(shown_lines)} of {len(every_line)} lines")
    if left_out:
        notes.append("; ".join(left_out) + ": all in sweep.csv")
    fig.suptitle("\n".join(" · ".join(part) for part in _title_lines(notes)), fontsize=10)
    return fig


def _title_lines(notes: list[str], width: int = 110) -> list[list[str]]:
    """The title's notes packed into lines of about ``width`` characters (a narrow figure keeps them readable)."""
    lines: list[list[str]] = []
    for note in notes:
        if lines and len(" · ".join(lines[-1] + [note])) <= width:
            lines[-1].append(note)
        else:
            lines.append([note])
    return lines


def plot_curves(rows: list[dict], names: list[str], path: Path, title: str = "") -> Path:
    """``curves.png``: :func:`curves_figure` saved atomically."""
    return _save(curves_figure(rows, names, title), path)


def curves_figure(rows: list[dict], names: list[str], title: str = ""):
    """Accuracy against round and against cumulative uplink MB, from :func:`round_rows`.

    One row of panels per run of two or more rounds (at most :data:`MAX_CURVE_RUNS`), one line per
    combination of the swept parameters other than ``seed`` that vary (for ``-p seed`` alone, one
    line; at most :data:`MAX_LINES`), each the mean over seeds of the points with those parameters, with its 95 % Student-t
    band (clipped to 0-100 %) where two or more seeds measured the round.  Rounds that were not evaluated (accuracy null) are skipped; the
    uplink axis is the mean over seeds of each round's cumulative uplink.
    """
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame.from_records(rows)
    groups = _varying(frame, names)
    runs = list(dict.fromkeys(frame["run"])) if len(frame) else []
    curves = [run for run in runs if frame.loc[frame["run"] == run, "round"].nunique() > 1]  # one round: no curve
    shown = curves[:MAX_CURVE_RUNS]
    fig = _figure(2, max(1, len(shown)), width=5.2, height=3.3)
    if not shown:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no completed point recorded per-round histories", ha="center", va="center")
        ax.set_axis_off()
    seeds = sorted(set(frame["seed"])) if "seed" in frame and len(frame) else []
    every_line = list(dict.fromkeys(frame.apply(lambda row: _line_key(row, groups), axis=1))) if len(frame) else []
    shown_lines = set(every_line[:MAX_LINES])
    for index, run in enumerate(shown):
        part = frame[frame["run"] == run].sort_values("round")
        part = part.assign(_mb=part.groupby("point")["bytes_up"].cumsum() / 1e6,
                           _g=part.apply(lambda row: _line_key(row, groups), axis=1))
        by_round = fig.add_subplot(len(shown), 2, 2 * index + 1)
        by_bytes = fig.add_subplot(len(shown), 2, 2 * index + 2)
        for group, lines in part[part["_g"].isin(shown_lines)].groupby("_g", sort=False):
            points = []
            for round_number, at in lines.groupby("round"):
                mean, half, n = confidence_band(100 * pd.to_numeric(at["accuracy"], errors="coerce"))
                if n:
                    points.append((round_number, float(at["_mb"].mean()), mean, half))
            if not points:
                continue
            r, mb, mean, half = (np.array(column, dtype=float) for column in zip(*points))
            label = group if groups else (f"mean over {len(seeds)} seeds" if len(seeds) > 1 else "one run")
            for ax, x in ((by_round, r), (by_bytes, mb)):
                line = ax.plot(x, mean, marker="o", markersize=3, label=label)[0]
                if np.isfinite(half).any():  # clipped to what an accuracy can be
                    low, high = np.clip(mean - np.nan_to_num(half), 0, 100), np.clip(mean + np.nan_to_num(half), 0, 100)
                    ax.fill_between(x, low, high, alpha=0.2, color=line.get_color(),
                                    label="95% CI (Student t)" if not groups else None)
        by_round.set(title=f"{run}: accuracy by round", xlabel="round", ylabel="test accuracy (%)")
        by_bytes.set(title=f"{run}: accuracy by uplink", xlabel="cumulative uplink (MB)", ylabel="test accuracy (%)")
        by_round.xaxis.get_major_locator().set_params(integer=True)
        for ax in (by_round, by_bytes):
            _plain_numbers(ax)
            ax.legend(fontsize=7)
    notes = [title] if title else []
    if len(seeds) > 1:
        notes.append(f"mean and 95% Student-t band over seeds {seeds}")
    if len(curves) > len(shown):
        notes.append(f"first {len(shown)} of {len(curves)} runs (all in rounds.csv)")
    if len(runs) > len(curves):
        notes.append(f"{len(runs) - len(curves)} one-round run(s) only in rounds.csv")
    if len(every_line) > len(shown_lines):
        notes.append(f"first {len(shown_lines)} of {len(every_line)} lines (all in rounds.csv)")
    fig.suptitle("\n".join(" · ".join(part) for part in _title_lines(notes, width=90)), fontsize=10)
    return fig
