"""environment.yml and pyproject.toml list the same dependencies; torch stays pinned for CI."""
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = (set(project["dependencies"]) | set(extras["course"]) | set(extras["deploy"])
              | {d for d in extras["dev"] if not d.startswith("fedlab-utils[")})
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {d for d in pip_section if not d.startswith("-e")}
    assert listed == wanted, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"


def test_torch_is_pinned_to_the_cpu_build_on_disk():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]


def test_dev_installs_both_extras_and_the_core_needs_neither():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "fedlab-utils[course,deploy]" in extras["dev"]
    names = {d.split("=")[0].split(">")[0].split("[")[0] for d in
             tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert not names & {"flwr", "cryptography", "papermill", "nbgrader", "polib", "psutil"}


def test_importing_the_package_leaves_the_collector_as_it_was_and_freezes_nothing():
    """``import fedlab_utils`` is light (its names load lazily) and leaves garbage collection alone:
    the collector's on/off state is the caller's, nothing is frozen (``gc.freeze()`` is the caller's
    choice), and a cycle made afterwards is collected."""
    import subprocess
    import sys

    script = """
import gc, sys, weakref
if sys.argv[1] == "off":
    gc.disable()
import fedlab_utils
from fedlab_utils import run
assert gc.isenabled() == (sys.argv[1] == "on"), gc.isenabled()
assert gc.get_freeze_count() == 0, gc.get_freeze_count()
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a  # a reference cycle made after the import
alive = weakref.ref(a)
del a, b
gc.collect()
assert alive() is None
"""
    for state in ("on", "off"):
        done = subprocess.run([sys.executable, "-c", script, state], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]


def _make_dry_run(tmp_path, target: str, *variables: str) -> str:
    """``make -n TARGET`` on a copy of the Makefile, in a folder with a fake notebooks/ tree."""
    import shutil
    import subprocess

    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    venv = tmp_path / "venv"
    venv.mkdir(exist_ok=True)
    (venv / ".fedlab-installed").write_text("")  # newer than pyproject.toml: no install step
    done = subprocess.run(["make", "-n", target, *variables], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "VIRTUAL_ENV": str(venv), "LANG": "C.UTF-8"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_slow_check_runs_nbval_on_the_english_notebooks_and_only_the_chinese_00(tmp_path):
    """make test leaves the notebooks and the tests marked slow to make slow-check, which runs both
    (and CI runs make slow-check right after make test)."""
    for name in ("00_a.ipynb", "01_b.ipynb", "zh/00_a.ipynb", "zh/01_b.ipynb"):
        (tmp_path / "notebooks" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "notebooks" / name).write_text("{}")
    command = _make_dry_run(tmp_path, "slow-check")
    assert "notebooks/00_a.ipynb notebooks/01_b.ipynb notebooks/zh/00_a.ipynb" in command
    assert "zh/01_b" not in command and " notebooks " not in command
    assert "pytest tests -m slow" in command
    assert 'pytest tests -m "not slow"' in _make_dry_run(tmp_path, "test")
    (tmp_path / "notebooks" / "zh" / "00_a.ipynb").unlink()  # no Chinese 00 yet: still a valid command
    assert "notebooks/01_b.ipynb --nbval-lax" in _make_dry_run(tmp_path, "slow-check")
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("make test") < ci.index("make slow-check")


def test_make_lang_zh_picks_the_chinese_edition_and_a_shell_locale_does_not(tmp_path):
    assert "fedlab_utils run --out build --lang zh" in _make_dry_run(tmp_path, "course", "LANG=zh")
    assert "FEDLAB_LANG=zh" in _make_dry_run(tmp_path, "course", "LANG=zh")
    assert "jupyter lab notebooks/zh/" in _make_dry_run(tmp_path, "lab", "LANG=zh")
    assert "classroom --out build/zh/classroom --lang zh" in _make_dry_run(tmp_path, "classroom", "LANG=zh")
    english = _make_dry_run(tmp_path, "course")  # LANG=C.UTF-8 from the environment
    assert "--lang en" in english and "FEDLAB_LANG" not in english
    assert "jupyter lab notebooks/\n" in _make_dry_run(tmp_path, "lab")
