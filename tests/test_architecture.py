"""The package's design as tests: layers (import-linter), no re-exports, at most 12 top-level
modules, and a core that runs without the [course] and [deploy] extras."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fedlab_utils"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _defined(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    if isinstance(node, (ast.If, ast.Try)):
        return {name for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt) for name in _defined(child)}
    return set()


def _imported_from_package(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("fedlab_utils")):
            names |= {a.asname or a.name for a in node.names}
    return names


def test_no_module_but_a_package_init_re_exports_a_sibling_name():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        exported = set()
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                exported = set(ast.literal_eval(node.value))
        defined = set().union(*(_defined(n) for n in tree.body))
        imported = _imported_from_package(tree)
        offenders += [f"{path.relative_to(ROOT)}: {name}" for name in sorted(exported & imported - defined)]
        offenders += [f"{path.relative_to(ROOT)}: {name} (in __all__, not defined)"
                      for name in sorted(exported - defined - imported)]
    assert offenders == []


def test_at_most_twelve_modules_sit_directly_in_the_package():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 12, modules


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is not installed (pip install -e .[dev])")
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}, timeout=300)


def test_the_layers_hold_and_a_forbidden_import_breaks_them(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    shutil.copytree(PACKAGE, copy / "fedlab_utils", ignore=shutil.ignore_patterns("__pycache__", "locale"))
    kept = _lint_imports(copy)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    loop = copy / "fedlab_utils" / "core" / "loop.py"
    loop.write_text(loop.read_text() + "\nfrom fedlab_utils.lessons.pruning.masks import magnitude_masks  # noqa\n")
    broken = _lint_imports(copy)
    assert broken.returncode != 0
    assert "BROKEN" in broken.stdout and "fedlab_utils.core.loop" in broken.stdout


def test_run_works_where_the_course_and_deploy_extras_cannot_be_imported():
    script = textwrap.dedent("""
        import importlib.abc, sys
        BLOCKED = ("flwr", "cryptography", "papermill", "nbgrader", "polib")

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is blocked in this test")
                return None

        sys.meta_path.insert(0, Block())
        import torch
        import fedlab_utils
        from fedlab_utils.data import ClientData
        data = ClientData(torch.randn(24, 1, 8, 8), torch.randint(0, 3, (24,)))
        model = fedlab_utils.make_model("mlp", (1, 8, 8), 3, hidden=(8,))
        history = fedlab_utils.run(model, [data, data], (data.x, data.y), rounds=2, uplink="q8", progress=False,
                                   local=fedlab_utils.LocalTraining(batch_size=8))
        assert len(history.records) == 2
        claims = fedlab_utils.Claims()
        blocked = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        print("ok", blocked)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok []")


def test_the_module_map_in_docs_is_drawn_from_the_code():
    """docs/architecture.md's module map (and its zh twin's) lists every module with its docstring's
    first paragraph; a module added, removed or redescribed without redrawing it fails here."""
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import module_map
    finally:
        sys.path.pop(0)
    drawn = module_map.module_map()
    assert any(line.strip().startswith("stacked.py") for line in drawn)
    for doc in module_map.DOCS:
        assert module_map.documented_map(doc.read_text(encoding="utf-8")) == drawn, (
            f"{doc.relative_to(ROOT)}'s module map differs from the code: run python docs/module_map.py --write")
