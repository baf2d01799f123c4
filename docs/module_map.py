"""The module map of docs/architecture.md, drawn from the code: every module of ``fedlab_utils/``
with the first paragraph of its docstring (cut to fit a line), each subpackage with its
``__init__``'s.  ``python docs/module_map.py`` prints it; ``--write`` puts it into
docs/architecture.md and its zh twin (the fenced block under the heading "The module map");
``tests/test_architecture.py`` fails when a map differs from the code."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "docs" / "architecture.md", ROOT / "docs" / "zh" / "architecture.md")
HEADING = "The module map\n"  # "## The module map", "## 模块地图 The module map"
SKIPPED = ("__pycache__", "locale", "datasets", "__init__.py")


def first_paragraph(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return " ".join(doc.split("\n\n")[0].split())


def module_map(folder: Path = ROOT / "fedlab_utils", depth: int = 1) -> list[str]:
    lines = ["fedlab_utils/"] if depth == 1 else []
    for item in sorted(folder.iterdir(), key=lambda p: (p.is_dir(), p.name)):
        if item.name in SKIPPED:
            continue
        indent = "  " * depth
        if item.is_dir() and (item / "__init__.py").exists():
            lines.append(f"{indent}{item.name}/  {first_paragraph(item / '__init__.py')[:100]}")
            lines += module_map(item, depth + 1)
        elif item.suffix == ".py":
            lines.append(f"{indent}{item.name:<22} {first_paragraph(item)[:96]}")
    return lines


def documented_map(text: str) -> list[str]:
    """The fenced block under the module map's heading, line by line."""
    return text[text.index(HEADING):].split("```")[1].strip("\n").split("\n")


def with_map(text: str, lines: list[str]) -> str:
    start = text.index("```", text.index(HEADING)) + 3
    end = text.index("```", start)
    return text[:start] + "\n" + "\n".join(lines) + "\n" + text[end:]


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        for doc in DOCS:
            doc.write_text(with_map(doc.read_text(encoding="utf-8"), module_map()), encoding="utf-8")
    else:
        print("\n".join(module_map()))
