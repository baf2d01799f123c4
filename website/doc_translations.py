"""The Chinese twins of the lasting docs (``docs/zh/NAME.md`` for ``docs/NAME.md``), and whether each is current.

Each twin opens with a comment naming the English text it translates by its SHA-256 (first 12
hex digits)::

    <!-- 译自 docs/extending.md，source-sha256: 0123456789ab -->

When the English page changes, its hash no longer matches: the twin is *stale*.  ``make site``
then warns and shows a note at the top of the zh page (:func:`stale_note`), and ``check`` exits 1.
After updating a translation, record the English text it now follows with ``stamp``::

    python website/doc_translations.py check            # exit 1 if a twin is missing or stale
    python website/doc_translations.py stamp extending  # docs/zh/extending.md follows docs/extending.md now
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("energy_model", "extending", "datasets", "deployment", "architecture")
HEADER = re.compile(r"\A<!-- 译自 docs/(?P<name>[\w-]+)\.md，source-sha256: (?P<digest>[0-9a-f]{12}|PENDING) -->\n")


def english_path(name: str, root: Path = ROOT) -> Path:
    return root / "docs" / f"{name}.md"


def twin_path(name: str, root: Path = ROOT) -> Path:
    return root / "docs" / "zh" / f"{name}.md"


def digest(text: str) -> str:
    """The first 12 hex digits of the SHA-256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class TwinState:
    """One doc's Chinese twin: ``missing``, ``stale`` (the English page changed since) or ``current``."""

    name: str
    status: str
    detail: str = ""


def twin_state(name: str, root: Path = ROOT) -> TwinState:
    twin = twin_path(name, root)
    if not twin.is_file():
        return TwinState(name, "missing", f"docs/zh/{name}.md does not exist")
    match = HEADER.match(twin.read_text(encoding="utf-8"))
    if match is None or match["name"] != name:
        return TwinState(name, "stale", f"docs/zh/{name}.md lacks its first line "
                                        f"'<!-- 译自 docs/{name}.md，source-sha256: … -->'")
    current = digest(english_path(name, root).read_text(encoding="utf-8"))
    if match["digest"] != current:
        return TwinState(name, "stale", f"docs/{name}.md changed after docs/zh/{name}.md was translated "
                                        f"(translated {match['digest']}, now {current}): update the translation, "
                                        f"then run python website/doc_translations.py stamp {name}")
    return TwinState(name, "current")


def twin_body(name: str, root: Path = ROOT) -> str:
    """The twin's text without its header comment."""
    return HEADER.sub("", twin_path(name, root).read_text(encoding="utf-8"), count=1)


def stale_note(name: str) -> str:
    """The note a stale zh page shows under its title (MyST admonition)."""
    return (":::{warning}\n"
            f"本页的英文原文（docs/{name}.md）在翻译之后有过改动，下面的译文可能已经过时。"
            "请点页面顶部的 **English** 查看最新的英文原文。\n:::\n\n")


def stamp(name: str, root: Path = ROOT) -> None:
    """Record that ``docs/zh/NAME.md`` now follows the current ``docs/NAME.md``."""
    twin = twin_path(name, root)
    body = twin_body(name, root) if HEADER.match(twin.read_text(encoding="utf-8")) else \
        twin.read_text(encoding="utf-8")
    current = digest(english_path(name, root).read_text(encoding="utf-8"))
    twin.write_text(f"<!-- 译自 docs/{name}.md，source-sha256: {current} -->\n{body}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The docs' Chinese twins: check them, or stamp one as current.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="exit 1 if a twin is missing or older than its English page")
    stamping = sub.add_parser("stamp", help="record that the twins now follow their English pages")
    stamping.add_argument("names", nargs="+", choices=DOCS)
    args = parser.parse_args(argv)
    if args.command == "stamp":
        for name in args.names:
            stamp(name)
            print(f"docs/zh/{name}.md follows docs/{name}.md {digest(english_path(name).read_text(encoding='utf-8'))}")
        return 0
    states = [twin_state(name) for name in DOCS]
    for state in states:
        print(f"{state.name}: {state.status}" + (f" ({state.detail})" if state.detail else ""))
    return 0 if all(s.status == "current" for s in states) else 1


if __name__ == "__main__":
    sys.exit(main())
