"""The gettext catalogs of the Chinese edition (:mod:`fedlab_utils.course.translate`): where they live,
one per English notebook (``notebooks/locale/zh_CN/LC_MESSAGES/<NN_slug>.po``, one entry per
markdown cell, ``msgctxt`` the cell id and ``msgid`` the English source), how ``extract`` merges
them as ``msgmerge`` would, which translation of a cell is current, and the catalog of the
package's runtime messages (collected like xgettext)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import polib

from fedlab_utils.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
LOCALE_DIR = NOTEBOOK_DIR / "locale"
LANGUAGE = "zh_CN"


# --------------------------------------------------------------------------------------------
# Paths

def english_notebooks(root: Path = NOTEBOOK_DIR) -> list[Path]:
    """The English notebooks, in course order."""
    return sorted(root.glob("[0-9][0-9]_*.ipynb"))


def catalog_path(notebook: Path, locale_dir: Path = LOCALE_DIR) -> Path:
    """``locale/zh_CN/LC_MESSAGES/<NN_slug>.po`` for an English notebook."""
    return locale_dir / LANGUAGE / "LC_MESSAGES" / f"{notebook.stem}.po"


def zh_path(notebook: Path) -> Path:
    """``notebooks/zh/<NN_slug>.ipynb`` for an English notebook (same file name, so links between
    notebooks by file name keep working inside ``zh/``)."""
    return notebook.parent / "zh" / notebook.name


# --------------------------------------------------------------------------------------------
# Catalogs

def markdown_cells(nb) -> list[tuple[str, str]]:
    """``(cell id, source)`` of every markdown cell, in order."""
    cells = [(cell.get("id"), cell.source) for cell in nb.cells if cell.cell_type == "markdown"]
    missing = [i for i, (cid, _) in enumerate(cells) if not cid]
    if missing:
        raise ValueError(f"markdown cells {missing} have no cell id (nbformat >= 4.5 needed); "
                         "run nbformat.validator.normalize on the notebook")
    return cells


def new_catalog(notebook: Path) -> polib.POFile:
    """An empty catalog with the usual gettext header."""
    po = polib.POFile(wrapwidth=0)
    po.metadata = {
        "Project-Id-Version": f"Efficient Federated Learning · {notebook.stem}",
        "Language": LANGUAGE,
        "MIME-Version": "1.0",
        "Content-Type": "text/plain; charset=UTF-8",
        "Content-Transfer-Encoding": "8bit",
        "Plural-Forms": "nplurals=1; plural=0;",
    }
    po.header = (f"Chinese (zh_CN) translation of notebooks/{notebook.name}.\n"
                 "One entry per markdown cell: msgctxt is the cell id, msgid the English source.\n"
                 "Update with `python -m fedlab_utils translate extract`.")
    return po


def load_catalog(path: Path) -> polib.POFile:
    """Read a catalog with polib (no wrapping when it is written back)."""
    po = polib.pofile(str(path), wrapwidth=0)
    po.wrapwidth = 0
    return po


def save_catalog(po: polib.POFile, path: Path) -> None:
    """Write a catalog atomically."""
    atomic_write_text(path, str(po))


@dataclass
class ExtractReport:
    new: list[str] = field(default_factory=list)
    fuzzy: list[str] = field(default_factory=list)
    obsolete: list[str] = field(default_factory=list)


def merge_catalog(cells: list[tuple[str, str]], po: polib.POFile) -> ExtractReport:
    """Bring ``po`` in line with the markdown ``cells`` (in place), as ``msgmerge`` would.

    A new cell id gets an untranslated entry; an entry whose English changed gets the new msgid,
    keeps its translation and becomes ``fuzzy`` with the previous msgid (when it was already fuzzy
    the older previous msgid is kept: that is the English its translation was made from); an
    entry whose cell is gone becomes obsolete.  Entries are reordered to follow the notebook."""
    report = ExtractReport()
    by_context = {entry.msgctxt: entry for entry in po}
    ordered = []
    for cell_id, source in cells:
        entry = by_context.pop(cell_id, None)
        if entry is None:
            entry = polib.POEntry(msgctxt=cell_id, msgid=source, msgstr="")
            report.new.append(cell_id)
        else:
            entry.obsolete = False
            if entry.msgid != source:
                if entry.msgstr:
                    if "fuzzy" not in entry.flags or not entry.previous_msgid:
                        entry.previous_msgid = entry.msgid
                    if "fuzzy" not in entry.flags:
                        entry.flags.append("fuzzy")
                    report.fuzzy.append(cell_id)
                entry.msgid = source
        ordered.append(entry)
    for entry in by_context.values():
        if not entry.obsolete:
            report.obsolete.append(entry.msgctxt)
        entry.obsolete = True
        ordered.append(entry)
    po[:] = ordered
    return report


def extract(notebook: Path, locale_dir: Path = LOCALE_DIR) -> ExtractReport:
    """Create or update the catalog of one notebook."""
    path = catalog_path(notebook, locale_dir)
    po = load_catalog(path) if path.exists() else new_catalog(notebook)
    report = merge_catalog(markdown_cells(nbformat.read(notebook, as_version=4)), po)
    save_catalog(po, path)
    return report


def current_translation(entry: polib.POEntry | None, source: str) -> str | None:
    """The translation to use for ``source``: ``None`` if missing, empty, fuzzy or stale."""
    if entry is None or entry.obsolete or not entry.msgstr.strip() or "fuzzy" in entry.flags:
        return None
    if entry.msgid != source:
        return None
    return entry.msgstr


# --------------------------------------------------------------------------------------------
# Runtime messages (fedlab_utils.i18n): collected from the package source like xgettext

PACKAGE_DIR = ROOT / "fedlab_utils"
RUNTIME_CATALOG = PACKAGE_DIR / "locale" / LANGUAGE / "LC_MESSAGES" / "fedlab_utils.po"
#: calls whose first literal argument is a runtime message: ``_("…")``, ``gettext("…")``, ``N_("…")``
#: (a constant translated where it is used), and the
#: check confirmations ``passed("…")`` (translated inside :func:`fedlab_utils.checks.passed`)
MESSAGE_CALLS = ("_", "gettext", "N_", "passed")
PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)?(?:[:!][^{}]*)?\}(?!\})")


def runtime_messages(package: Path = PACKAGE_DIR) -> dict[str, list[tuple[str, str]]]:
    """Every runtime message of the package: msgid -> ``[(file, line), …]``."""
    import ast

    found: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                if name in MESSAGE_CALLS:
                    found.setdefault(node.args[0].value, []).append(
                        (path.relative_to(package.parent).as_posix(), str(node.lineno)))
    return found


def placeholders(message: str) -> set[str]:
    """The ``str.format`` field names of a message (``{}`` counted as ``""``)."""
    return {m.group(1) or "" for m in PLACEHOLDER.finditer(message)}


def extract_runtime(path: Path = RUNTIME_CATALOG, package: Path = PACKAGE_DIR) -> ExtractReport:
    """Create or update the runtime catalog: new messages untranslated, vanished ones obsolete."""
    messages = runtime_messages(package)
    if path.exists():
        po = load_catalog(path)
    else:
        po = new_catalog(Path("fedlab_utils.py"))
        po.header = ("Chinese (zh_CN) runtime messages of fedlab_utils (checks, claims table, explorers, device notices).\n"
                     "Update with `python -m fedlab_utils translate extract`; see fedlab_utils/i18n.py.")
        po.metadata["Project-Id-Version"] = "Efficient Federated Learning · fedlab_utils"
    report = ExtractReport()
    by_id = {entry.msgid: entry for entry in po}
    ordered = []
    for msgid, places in messages.items():
        entry = by_id.pop(msgid, None)
        if entry is None:
            entry = polib.POEntry(msgid=msgid, msgstr="")
            report.new.append(msgid)
        entry.obsolete = False
        entry.occurrences = [(file, "") for file in sorted({file for file, _ in places})]  # no line numbers: less churn
        ordered.append(entry)
    for entry in by_id.values():
        if not entry.obsolete:
            report.obsolete.append(entry.msgid)
        entry.obsolete = True
        entry.occurrences = []
        ordered.append(entry)
    po[:] = ordered
    save_catalog(po, path)
    return report


def check_runtime(path: Path = RUNTIME_CATALOG, package: Path = PACKAGE_DIR) -> list[str]:
    """Problems of the runtime catalog: a message without a current translation, or with other placeholders."""
    if not path.exists():
        return [f"{path.name}: missing (run `translate extract`)"]
    by_id = {entry.msgid: entry for entry in load_catalog(path) if not entry.obsolete}
    problems = []
    for msgid, places in runtime_messages(package).items():
        where = f"runtime message at {places[0][0]}:{places[0][1]} {msgid!r}"
        entry = by_id.get(msgid)
        if entry is None:
            problems.append(f"{where}: not in {path.name} (run `translate extract`)")
        elif not entry.msgstr.strip() or "fuzzy" in entry.flags:
            problems.append(f"{where}: no current translation")
        elif placeholders(entry.msgstr) != placeholders(msgid):
            problems.append(f"{where}: the translation's placeholders {sorted(placeholders(entry.msgstr))} "
                            f"differ from {sorted(placeholders(msgid))}")
    return problems
