"""What the course's commands share: notebook lookup, ``-p`` values, papermill execution, results.

``python -m fedlab_utils`` (:mod:`fedlab_utils.__main__`) only dispatches; ``run`` and ``params``
live here, ``sweep`` in :mod:`fedlab_utils.course.sweep` and ``classroom``/``student`` in
:mod:`fedlab_utils.course.classroom`, and all of them use the pieces below:

* :class:`CourseError`: a user-facing error, printed as one line (exit status 2, or 1 for a
  notebook that failed);
* :func:`find_notebooks`: names (``00``, a stem, a file name or a path) to notebooks, in English
  (``notebooks/``) or in a translation (``lang="zh"``: ``notebooks/zh/``);
* :func:`parse_value` and :func:`parse_parameters`: the one reader of ``-p NAME VALUE``, used by
  ``run``, ``sweep``, ``classroom`` and ``deploy``;
* :func:`validate_parameters`, :func:`changed_parameters`: checks against a notebook's
  ``parameters`` cell (papermill's inspection);
* :func:`kernel_environment` and :func:`execute`: one notebook through papermill, with the kernel
  settings the course needs;
* :func:`merge_results`: the per-notebook results records into ``<out>/results.json``.

Kernels started here get ``FEDLAB_PROGRESS=0`` (no progress-bar remnants in executed notebooks),
``FEDLAB_WIDGETS=0`` (explorers draw their default view), ``FEDLAB_CHANGED_PARAMETERS`` (the
parameters that differ from the notebook's defaults), ``FEDLAB_CLAIMS`` (``--strict``/``--claims``),
which :class:`fedlab_utils.course.claims.Claims` reads to decide whether a failing claim raises or is
recorded, and ``FEDLAB_LANG`` when a translation runs (``--lang zh``).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from fedlab_utils.course.claims import CHANGED_ENV, POLICY_ENV, readable
from fedlab_utils.files import atomic_write_text

__all__ = ["ROOT", "NOTEBOOK_DIR", "LANGUAGES", "LANG_ENV", "CourseError", "notebook_dir", "find_notebooks",
           "parse_value", "parse_parameters", "notebook_parameters", "validate_parameters", "changed_parameters",
           "check_out_dir", "restored_environment", "kernel_environment", "execute", "anonymise_papermill_paths",
           "html_links", "write_html",
           "write_index", "summarize", "merge_results",
           "claims_policy_from_args", "add_claims_arguments", "add_lang_argument", "cmd_run", "cmd_params",
           "add_run_parser", "add_params_parser"]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
#: Editions of the course: ``en`` is ``notebooks/``, every other is ``notebooks/<lang>/``.
LANGUAGES = ("en", "zh")
LANG_ENV = "FEDLAB_LANG"
#: Kernel start-up arguments: quiet the kernel's own log (its "running over TCP without encryption"
#: warning is noise for a local, single-user run); errors are still shown.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


class CourseError(Exception):
    """A user-facing error: printed as one clear line, exit status 2 (or 1 for a failed notebook)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------- notebooks
def notebook_dir(lang: str | None = None) -> Path:
    """The folder of one edition: ``notebooks/`` for English (``None`` or ``"en"``), ``notebooks/zh/`` for Chinese."""
    lang = lang or "en"
    if lang not in LANGUAGES:
        raise CourseError(f"--lang {lang!r} is not valid; choose one of {list(LANGUAGES)}")
    return NOTEBOOK_DIR if lang == "en" else NOTEBOOK_DIR / lang


def find_notebooks(names: Iterable[str] = (), lang: str | None = None) -> list[Path]:
    """Resolve notebook names (path, file name, stem, or prefix like ``00``) to paths; all when empty.

    Names are looked up in the edition ``lang`` (see :func:`notebook_dir`); an existing ``.ipynb``
    path is taken as it is.
    """
    folder = notebook_dir(lang)
    available = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    names = list(names)
    if not names:
        return available
    found = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.exists():
            found.append(path.resolve())
            continue
        matches = [p for p in available if p.name == name or p.stem == name or p.name.startswith(f"{name}_")]
        if len(matches) != 1:
            where = "" if folder == NOTEBOOK_DIR else f" in {folder.relative_to(ROOT)}/"
            raise CourseError(f"notebook {name!r} not found{where}; available: {[p.stem for p in available]}")
        found.append(matches[0])
    return found


# ----------------------------------------------------------------------------- -p NAME VALUE
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def parse_value(text: str, kind: type | str | None = None, name: str = "value"):
    """One ``-p NAME VALUE`` value.

    Without ``kind``: a Python literal (``0.5``, ``None``, ``True``, ``'x'``, ``[1, 2]``), or else
    the plain string (``q8``, ``fedadam``), as papermill would inject it.  With ``kind`` (``int``,
    ``float``, ``bool``, ``str``, or their names, as in a dataclass's field types): the value is
    converted to that type, and a value that is not one raises ``ValueError`` naming ``name``, the
    value and what is valid.  ``bool`` reads ``true/false``, ``yes/no``, ``1/0`` and ``on/off``
    (any case); ``str`` keeps the text exactly; ``float`` also takes ``1e-3`` and integers; an
    optional type (``"float | None"``) also takes ``None``; any other annotation reads a literal.
    """
    if kind is None:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return text
    kind_name = (kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))).replace(" ", "")
    if "|" in kind_name:  # an optional field, e.g. "float | None": None or the other type
        parts = [part for part in kind_name.split("|") if part != "None"]
        if text.strip() == "None" or len(parts) != 1:
            return None if text.strip() == "None" else parse_value(text, None, name)
        kind_name = parts[0]
    if kind_name not in ("str", "bool", "int", "float"):  # any other annotation: read a literal
        return parse_value(text, None, name)
    if kind_name == "str":
        return text
    if kind_name == "bool":
        lowered = text.strip().lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise ValueError(f"parameter {name}={text!r} is not valid; it must be a bool: "
                         f"one of {list(_TRUE + _FALSE)}")
    if kind_name == "int":
        try:
            return int(text.strip().replace("_", ""))
        except ValueError:
            raise ValueError(f"parameter {name}={text!r} is not valid; it must be an int, e.g. 3") from None
    if kind_name == "float":
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(f"parameter {name}={text!r} is not valid; it must be a float, e.g. 0.5 or 1e-3") from None


def parse_parameters(pairs: Iterable[Iterable[str]] | None, kinds: Mapping[str, type | str] | None = None,
                     valid: Iterable[str] | None = None) -> dict:
    """``-p NAME VALUE`` pairs (argparse's ``nargs=2, action="append"``) to ``{name: value}``.

    Each value goes through :func:`parse_value`, typed by ``kinds[name]`` when ``kinds`` names it
    (e.g. ``{f.name: f.type for f in dataclasses.fields(Config)}``), else read as a literal.  Names
    outside ``valid`` (default: the keys of ``kinds``, when given) raise ``ValueError`` naming the
    parameter and listing the valid ones.  A name given twice keeps its last value.
    """
    allowed = set(valid) if valid is not None else (set(kinds) if kinds is not None else None)
    values = {}
    for pair in pairs or []:
        name, text = pair
        if allowed is not None and name not in allowed:
            raise ValueError(f"parameter {name!r} is not valid; valid: {sorted(allowed)}")
        values[name] = parse_value(text, (kinds or {}).get(name), name)
    return values


def notebook_parameters(path: Path) -> dict:
    """The names and defaults of a notebook's ``parameters`` cell (papermill's inspection)."""
    import papermill

    return papermill.inspect_notebook(str(path))


def validate_parameters(path: Path, params: Mapping) -> None:
    """Refuse a notebook without a ``parameters`` cell and names it does not have, listing the valid ones."""
    known = notebook_parameters(path)
    if not known:
        raise CourseError(f"{path.name} has no cell tagged 'parameters'")
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise CourseError(f"unknown parameter(s) {unknown} for {path.name}; valid: {sorted(known)}")


def changed_parameters(path: Path, params: Mapping) -> list[str]:
    """Names in ``params`` whose value differs from the notebook's default (unparsable defaults count as changed)."""
    known = notebook_parameters(path)
    changed = []
    for name, value in params.items():
        default = known.get(name, {}).get("default")
        try:
            default_value = ast.literal_eval(default) if default is not None else object()
        except (ValueError, SyntaxError):
            default_value = object()
        same = default_value == value and isinstance(default_value, bool) == isinstance(value, bool)
        if not same:
            changed.append(name)
    return sorted(changed)


def check_out_dir(out: Path) -> Path:
    """``--out`` must be a folder (or not exist yet)."""
    if out.exists() and not out.is_dir():
        raise CourseError(f"--out {out} is a file, not a folder; give a folder for the executed notebooks and results")
    return out


# ----------------------------------------------------------------------------- execution
@contextlib.contextmanager
def restored_environment(names: Iterable[str]) -> Iterator[None]:
    """Restore the environment variables ``names`` on exit, whatever the block set or removed."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def kernel_environment(changed: list[str], claims_policy: str, lang: str | None = None,
                       import_folders: Iterable[Path] = ()) -> Iterator[None]:
    """Environment inherited by the kernels papermill starts, restored afterwards.

    A headless ``MPLBACKEND=Agg`` would drop every figure from the executed notebooks and HTML,
    so kernels get the inline backend, which needs no display.  Progress bars are off (they leave
    ``0%|`` remnants in saved notebooks), explorers draw their default view instead of building
    ipywidgets (see :mod:`fedlab_utils.viz.widgets`), and ``Claims`` learns the changed parameters and
    policy.  With ``lang`` other than English, ``FEDLAB_LANG`` selects the translated runtime text.
    ``import_folders`` go first on ``PYTHONPATH``: the kernel works in the output folder, so a
    researcher's own module (``-p uplink mymodule:MyCodec``) is found where it was before, beside
    the notebook, or in the folder the command was started from.
    """
    settings = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "FEDLAB_PROGRESS": "0",
                "FEDLAB_WIDGETS": "0",  # no ipywidgets headless: nbclient can block on them (fedlab_utils.viz.widgets)
                "TQDM_DISABLE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                CHANGED_ENV: ",".join(changed), POLICY_ENV: claims_policy}
    if lang and lang != "en":
        settings[LANG_ENV] = lang
    folders = [str(f) for f in import_folders]
    if folders:
        settings["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*folders, *filter(None, [os.environ.get("PYTHONPATH")])]))
    with restored_environment([*settings, LANG_ENV]):
        if LANG_ENV not in settings:
            os.environ.pop(LANG_ENV, None)  # an English run prints English, whatever the shell says
        os.environ.update(settings)
        yield


def execute(path: Path, params: dict, out: Path, html: bool, claims_policy: str = "auto",
            lang: str | None = None) -> Path | None:
    """Run one notebook; returns the path of its results JSON (or None if it records none).

    ``out/notebooks/<name>.ipynb`` (``.failed.ipynb`` when a cell raised), ``out/results/<stem>.json``
    and, with ``html``, ``out/html/<stem>.html`` (its links to other lessons and to the README
    made to work there: :func:`html_links`).

    The kernel works in ``out``, and the ``results_path`` it gets is relative to it
    (``results/<stem>.json``; a relative ``-p results_path`` is read the same way), so the
    executed notebook and its HTML -- copies a student reads -- hold no path of the machine that
    built them.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    known = notebook_parameters(path)
    results = out / "results" / f"{path.stem}.json"
    changed = changed_parameters(path, params)
    params = dict(params)
    if "results_path" in known and "results_path" not in params:
        params["results_path"] = results.relative_to(out).as_posix()
    executed = out / "notebooks" / path.name
    partial = executed.with_name(f".{path.stem}.partial.ipynb")
    partial.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    folders = [path.parent.resolve(), Path.cwd()]
    try:
        with kernel_environment(changed, claims_policy, lang, import_folders=folders):
            papermill.execute_notebook(str(path), str(partial), parameters=params, kernel_name="python3",
                                       progress_bar=False, cwd=str(out.resolve()), extra_arguments=KERNEL_ARGUMENTS)
    except PapermillExecutionError as exc:
        failed = executed.with_name(f"{path.stem}.failed.ipynb")
        anonymise_papermill_paths(partial, path, out)
        partial.replace(failed)
        executed.unlink(missing_ok=True)  # an older successful run's notebook and HTML are now stale
        (out / "html" / f"{path.stem}.html").unlink(missing_ok=True)
        raise CourseError(f"{path.name} failed in cell {exc.cell_index} (execution count {exc.exec_count}): "
                          f"{exc.ename}: {exc.evalue}\n  executed notebook kept at {failed}", status=1) from exc
    anonymise_papermill_paths(partial, path, out)
    partial.replace(executed)
    executed.with_name(f"{path.stem}.failed.ipynb").unlink(missing_ok=True)
    print(f"  {path.name}: ran in {time.perf_counter() - start:.1f} s -> {executed}")
    if html:
        write_html(executed, out / "html")
    return results if results.exists() else None


def anonymise_papermill_paths(executed: Path, source: Path, out: Path) -> None:
    """Papermill's record of where the notebook came from and went (``metadata.papermill``'s
    ``input_path`` and ``output_path``) made relative: the source to the repository when it lies
    in it (``notebooks/03_distillation.ipynb``), else its file name; the output to ``out``."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    record = nb.metadata.get("papermill")
    if not record:
        return
    source = source.resolve()
    record["input_path"] = (source.relative_to(ROOT).as_posix() if source.is_relative_to(ROOT) else source.name)
    record["output_path"] = f"notebooks/{source.name}"
    nbformat.write(nb, executed)


# ----------------------------------------------------------------------------- HTML pages
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)((?:\s+\"[^\"]*\")?)\)")
_LESSON = re.compile(r"(?:\./)?(\d\d_[\w-]+)\.ipynb(#[^)\s]*)?")
INDEX_PAGE = "index.html"


def html_links(markdown: str) -> str:
    """A markdown cell's links as they must read in ``build/html``, where only the lessons' pages and
    :data:`INDEX_PAGE` exist: ``NN_slug.ipynb`` (with an anchor or not) becomes ``NN_slug.html``, a
    link to the README (``../README.md``, ``../../README.zh-CN.md``) becomes the index page that
    lists the lessons, and any other relative link to a file is dropped, its text kept.  Web
    addresses, ``mailto:``, anchors within the page and images are left alone."""
    def rewrite(match: re.Match) -> str:
        bang, text, target, title = match.groups()
        if bang or re.match(r"^(?:[a-z][a-z0-9+.-]*:|#)", target, re.IGNORECASE):
            return match.group(0)
        lesson = _LESSON.fullmatch(target)
        if lesson:
            return f"[{text}]({lesson.group(1)}.html{lesson.group(2) or ''}{title})"
        if Path(target.split("#")[0]).name.lower().startswith("readme"):
            return f"[{text}]({INDEX_PAGE}{title})"
        return text

    return _LINK.sub(rewrite, markdown)


def write_html(executed: Path, folder: Path) -> Path:
    """``folder/<stem>.html`` from an executed notebook, its links made to work there
    (:func:`html_links`), and the folder's :data:`INDEX_PAGE` brought up to date."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = html_links(cell.source)
    headings = [line[2:].strip() for cell in nb.cells if cell.cell_type == "markdown"
                for line in cell.source.splitlines() if line.startswith("# ")]
    title = headings[0] if headings else executed.stem
    body, _ = HTMLExporter().from_notebook_node(nb, resources={"metadata": {"name": title}})
    page = atomic_write_text(folder / f"{executed.stem}.html", body)
    write_index(folder)
    return page


def write_index(folder: Path) -> Path:
    """``folder/index.html``: the course map of the pages in ``folder``, one link per lesson with
    its title (the page's ``<title>``, which nbconvert takes from the notebook's first heading)."""
    import html

    items = []
    for page in sorted(folder.glob("[0-9][0-9]_*.html")):
        found = re.search(r"<title>(.*?)</title>", page.read_text(encoding="utf-8"), re.DOTALL)
        title = html.unescape(found.group(1).strip()) if found else page.stem
        items.append(f'<li><a href="{page.name}">{html.escape(title)}</a></li>')
    body = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>高效联邦学习 Efficient Federated Learning</title></head>\n"
            "<body><h1>高效联邦学习 Efficient Federated Learning</h1>\n<ol>\n" + "\n".join(items) + "\n</ol></body></html>\n")
    return atomic_write_text(folder / INDEX_PAGE, body)


# ----------------------------------------------------------------------------- results
def summarize(records: dict[str, dict]) -> str:
    """One line per notebook: claims held and its first scalar metrics; then each claim that failed."""
    lines = [f"{'notebook':<34}{'claims held':>12}  key metrics"]
    for name, record in records.items():
        claims = record.get("claims", [])
        held = f"{sum(c['holds'] for c in claims)}/{len(claims)}"
        metrics = record.get("metrics", {})
        shown = ", ".join(f"{k}={readable(v)}" for k, v in list(metrics.items())[:4] if not isinstance(v, (dict, list)))
        lines.append(f"{name:<34}{held:>12}  {shown}")
        lines += [f"{'':<34}{'✗':>12}  {c['claim']}" for c in claims if not c["holds"]]
    return "\n".join(lines)


def merge_results(path: Path, succeeded: dict[str, dict], failed: list[str]) -> dict[str, dict]:
    """Update ``path`` (results.json) with this run's notebooks only; drop the entries of failed ones.

    Entries of notebooks this run did not execute are kept as they were.  An unreadable old file is
    replaced rather than merged.  Written atomically.
    """
    merged: dict[str, dict] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            merged = old if isinstance(old, dict) else {}
        except (OSError, ValueError):
            print(f"warning: {path} was not valid JSON; writing a fresh one", file=sys.stderr)
    for name in failed:
        merged.pop(name, None)
    merged.update(succeeded)
    merged = dict(sorted(merged.items()))
    atomic_write_text(path, json.dumps(merged, indent=2))
    return merged


# ----------------------------------------------------------------------------- run and params
def claims_policy_from_args(args: argparse.Namespace) -> str:
    """``--strict``/``--claims`` to the policy the kernels get (:mod:`fedlab_utils.course.claims`)."""
    return "strict" if getattr(args, "strict", False) else getattr(args, "claims", None) or "auto"


def cmd_run(args: argparse.Namespace) -> int:
    """``python -m fedlab_utils run``: see :func:`add_run_parser`."""
    lang = getattr(args, "lang", None) or "en"
    notebooks = find_notebooks(args.notebooks, lang)
    if not notebooks:
        raise CourseError(f"no notebooks found in {notebook_dir(lang)}")
    params = parse_parameters(args.parameter)
    for path in notebooks:  # validate everything before running anything
        validate_parameters(path, params)
    out = check_out_dir(Path(args.out))
    if lang != "en":
        out = check_out_dir(out / lang)
    policy = claims_policy_from_args(args)
    # Stale per-notebook results must not be collected as if this run produced them.
    for path in notebooks:
        (out / "results" / f"{path.stem}.json").unlink(missing_ok=True)
    print(f"Running {len(notebooks)} notebook(s) -> {out}/")
    collected: dict[str, dict] = {}
    failures: dict[str, CourseError] = {}
    for path in notebooks:
        try:
            result = execute(path, params, out, html=not args.no_html, claims_policy=policy, lang=lang)
        except CourseError as exc:
            failures[path.stem] = exc
            if not args.keep_going:
                break
            print(f"error: {exc}", file=sys.stderr)
            continue
        if result is not None:
            collected[path.stem] = json.loads(result.read_text())
    merged = merge_results(out / "results.json", collected, list(failures))
    print(f"\nResults: {out / 'results.json'} ({len(collected)} updated, {len(failures)} failed, "
          f"{len(merged)} in total)\n" + summarize(collected))
    if failures:
        last = list(failures.values())[-1]
        if len(failures) > 1:
            raise CourseError(f"{len(failures)} notebooks failed: {', '.join(failures)}; last: {last}", status=1)
        raise last
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    """``python -m fedlab_utils params``: each notebook's parameters, defaults and comments."""
    for path in find_notebooks(args.notebooks, getattr(args, "lang", None)):
        print(path.name)
        for name, info in notebook_parameters(path).items():
            print(f"  {name} = {info['default']}  # {info.get('help', '')}")
    return 0


def add_claims_arguments(parser: argparse.ArgumentParser) -> None:
    """``--strict`` / ``--claims``: how a claim that does not hold is treated (fedlab_utils.course.claims)."""
    parser.add_argument("--strict", action="store_true",
                        help="every claim that does not hold raises, whatever the parameters")
    parser.add_argument("--claims", choices=("auto", "strict", "record"), default="auto",
                        help="claim policy: auto (default: raise with default parameters, record with others), "
                             "strict (always raise), record (never raise; measure every claim)")


def add_lang_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--lang en|zh``: which edition of the notebooks a command uses."""
    parser.add_argument("--lang", choices=LANGUAGES, default="en",
                        help=f"edition: en (notebooks/, default) or zh (notebooks/zh/); {what}")


def add_run_parser(sub) -> None:
    """The ``run`` subcommand."""
    run = sub.add_parser("run", help="execute notebooks with papermill, render HTML, collect results")
    run.add_argument("notebooks", nargs="*", help="paths, names or prefixes (e.g. 00); default: all")
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="set a parameter (repeatable); VALUE is a Python literal or a string")
    run.add_argument("--out", default="build", help="output folder (default: build; --lang zh writes <out>/zh/)")
    run.add_argument("--no-html", action="store_true", help="skip the HTML rendering")
    run.add_argument("--keep-going", action="store_true",
                     help="after a failed notebook, run the remaining ones (the exit status is still non-zero)")
    add_lang_argument(run, "zh runs notebooks/zh/ into <out>/zh/ with FEDLAB_LANG=zh")
    add_claims_arguments(run)
    run.set_defaults(func=cmd_run)


def add_params_parser(sub) -> None:
    """The ``params`` subcommand."""
    params = sub.add_parser("params", help="list each notebook's parameters and defaults")
    params.add_argument("notebooks", nargs="*")
    add_lang_argument(params, "the same parameters in both")
    params.set_defaults(func=cmd_params)
