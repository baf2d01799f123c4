"""A notebook runs on its own (``make standalone-check``): outside the repo, in a fresh environment.

Run from the repository root::

    python website/standalone_check.py [--notebook 00] [--work DIR] [--keep]

1. builds the course's wheel (``pip wheel --no-deps``) from a copy of the package's sources, so
   the repository's ``build/`` is untouched;
2. creates a fresh virtual environment (no ``--system-site-packages``) holding only what executes a
   notebook (papermill, ipykernel), and checks that ``fedlab_utils`` cannot be imported there;
3. copies the notebook alone into an empty folder and writes the bootstrap cell
   (``website/bootstrap_cell.py``) into that copy;
4. executes it with that environment's papermill, ``-p rounds 2`` and other small parameters,
   with ``FEDLAB_INSTALL_SOURCE`` pointing at the wheel: the bootstrap cell installs the package
   and its dependencies (torch from the local wheel that pip's ``find-links`` names; nothing is
   built or downloaded that pip's configuration does not already offer);
5. passes when papermill exits 0, the bootstrap cell said it installed the package, the package
   then imports from the fresh environment (not from the repository), and every claim of the run
   holds or is recorded (the claims table is in the executed notebook).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

WEBSITE = Path(__file__).resolve().parent
ROOT = WEBSITE.parent
SMALL_PARAMETERS = {"00": {"rounds": 2, "fedsgd_rounds": 2, "local_epochs": 1, "num_clients": 4, "fraction": 1.0}}
EXECUTOR = ["papermill>=2.6", "ipykernel>=6.29,<7"]  # as pyproject.toml pins ipykernel
PACKAGE_SOURCES = ("pyproject.toml", "README.md", "fedlab_utils")


class StandaloneError(Exception):
    """A step of the check failed (its message says which and why)."""


def run(command: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``command``; a failure raises naming the step, with the command's last output lines."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    print(f"  {what}: {time.perf_counter() - start:.0f} s")
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise StandaloneError(f"{what} failed (exit {result.returncode}): {' '.join(map(str, command))}\n{tail}")
    return result


def build_wheel(work: Path) -> Path:
    """The course's wheel, built from a copy of its sources (pip wheel --no-deps)."""
    source = work / "source"
    for name in PACKAGE_SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name)
    wheels = work / "wheel"
    isolation = ["--no-build-isolation"] if _has_setuptools() else []  # this venv's setuptools: no download
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
         "-w", str(wheels), str(source)], "pip wheel --no-deps")
    found = sorted(wheels.glob("fedlab_utils-*.whl"))
    if len(found) != 1:
        raise StandaloneError(f"expected one fedlab_utils wheel in {wheels}, found {[p.name for p in found]}")
    return found[0]


def _has_setuptools() -> bool:
    try:
        import setuptools  # noqa: F401
    except ImportError:
        return False
    return True


def fresh_environment(work: Path) -> Path:
    """A new virtual environment with only the notebook executor; returns its python."""
    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)], "python -m venv (no system site packages)")
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", *EXECUTOR], "pip install papermill ipykernel")
    probe = subprocess.run([str(python), "-c", "import fedlab_utils"], capture_output=True, text=True,
                           cwd=work, env=clean_environment(venv))
    if probe.returncode == 0:
        raise StandaloneError("fedlab_utils is importable in the fresh environment before the notebook runs")
    return python


def clean_environment(venv: Path) -> dict[str, str]:
    """The environment of the fresh venv: nothing points back at the repository or its venv."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "JUPYTER_PATH", "FEDLAB_DATA")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    # headless, as the course's runner sets them: no progress bars, explorers draw their static view
    env.update({"FEDLAB_PROGRESS": "0", "FEDLAB_WIDGETS": "0", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg",
                "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    return env


def lone_copy(notebook: Path, folder: Path) -> Path:
    """The notebook alone in an empty folder, with the bootstrap cell written into the copy."""
    from bootstrap_cell import insert  # website/bootstrap_cell.py, beside this file

    folder.mkdir(parents=True)
    copy = folder / notebook.name
    shutil.copy2(notebook, copy)
    insert(copy)
    return copy


def outputs_text(cell) -> str:
    return "".join(o.get("text", "") if o.get("output_type") == "stream" else
                   "".join(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))


def check_executed(executed: Path) -> list[str]:
    """What the executed copy must show: the package installed by its first code cell, no error output."""
    nb = nbformat.read(executed, as_version=4)
    problems = []
    bootstrap = next((c for c in nb.cells if c.get("id") == "fedlab-bootstrap"), None)
    if bootstrap is None or "Installing the course's package" not in outputs_text(bootstrap):
        problems.append("the bootstrap cell did not say that it installed the package")
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(f"cell {cell.get('id')}: {output.get('ename')}: {output.get('evalue')}")
    return problems


def claims_report(results: Path) -> list[str]:
    """Print how many claims held and how many were recorded as not holding; none at all is a problem."""
    import json

    if not results.is_file():
        return [f"the notebook wrote no results to {results}"]
    claims = json.loads(results.read_text()).get("claims", [])
    held = sum(bool(c.get("holds")) for c in claims)
    print(f"  claims: {len(claims)} ({held} hold, {len(claims) - held} recorded as not holding with these "
          f"small parameters)")
    return [] if claims else ["the run recorded no claims"]


def standalone_check(notebook: Path, work: Path, parameters: dict) -> list[str]:
    """The whole check; returns the problems (empty: the notebook ran on its own)."""
    wheel = build_wheel(work)
    print(f"  wheel: {wheel.name} ({wheel.stat().st_size // 1024} KiB)")
    python = fresh_environment(work)
    copy = lone_copy(notebook, work / "alone")
    executed = copy.with_name(f"{copy.stem}.executed.ipynb")
    env = clean_environment(work / "venv")
    env["FEDLAB_INSTALL_SOURCE"] = str(wheel)
    # as the course's runner does: claims learn which parameters differ from the defaults, so a
    # claim these small values make false is recorded (fedlab_utils.course.claims.Claims), not raised
    env["FEDLAB_CHANGED_PARAMETERS"] = ",".join(sorted(parameters))
    command = [str(python), "-m", "papermill", copy.name, executed.name, "-k", "python3", "--no-progress-bar"]
    for name, value in {**parameters, "results_path": str(work / "results.json")}.items():
        command += ["-p", name, str(value)]
    run(command, f"papermill {copy.name} {' '.join(f'-p {k} {v}' for k, v in parameters.items())}",
        cwd=copy.parent, env=env)
    problems = check_executed(executed)
    problems += claims_report(work / "results.json")
    where = subprocess.run([str(python), "-c", "import fedlab_utils, torch; print(fedlab_utils.__file__); "
                            "print(torch.__version__)"], capture_output=True, text=True, cwd=work, env=env)
    location = where.stdout.splitlines()[0] if where.returncode == 0 and where.stdout else ""
    if not location.startswith(str(work / "venv")):
        problems.append(f"fedlab_utils imports from {location or where.stderr.strip()!r}, not the fresh environment")
    else:
        print(f"  fedlab_utils installed at {location} (torch {where.stdout.splitlines()[1]})")
    leftovers = sorted(p.name for p in copy.parent.iterdir() if p.name not in (copy.name, executed.name))
    print(f"  the folder holds: {[copy.name, executed.name, *leftovers]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notebook", default="00", help="which notebook (default: 00)")
    parser.add_argument("--work", default=None, help="work folder (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    from fedlab_utils.course import find_notebooks

    notebook = find_notebooks([args.notebook])[0]
    parameters = SMALL_PARAMETERS.get(notebook.name[:2], {"rounds": 2})
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="fedlab-standalone-"))
    if args.work and work.exists() and any(work.iterdir()):
        print(f"error: --work {work} is not empty", file=sys.stderr)
        return 2
    start = time.perf_counter()
    print(f"standalone check of {notebook.name} in {work}")
    try:
        problems = standalone_check(notebook, work, parameters)
    except StandaloneError as error:
        problems = [str(error)]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"standalone check: {'passed' if not problems else 'FAILED'} ({time.perf_counter() - start:.0f} s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
