"""environment.yml and pyproject.toml list the same dependencies; torch stays pinned for CI."""
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {d for d in pip_section if not d.startswith("-e")}
    assert listed == wanted, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"


def test_torch_is_pinned_to_the_cpu_build_on_disk():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]


def test_importing_the_package_freezes_startup_objects_and_leaves_the_collector_as_it_was():
    """``import fedlab_utils`` pauses the cyclic collector while torch loads and freezes what exists
    then (half a second of a fresh run); the collector's on/off state is the caller's, and garbage
    made afterwards is still collected."""
    import subprocess
    import sys

    script = """
import gc, sys, weakref
if sys.argv[1] == "off":
    gc.disable()
import fedlab_utils
assert gc.isenabled() == (sys.argv[1] == "on"), gc.isenabled()
frozen = gc.get_freeze_count()
assert frozen > 50_000, frozen  # torch's objects, among others
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a  # a reference cycle made after the import
alive = weakref.ref(a)
del a, b
gc.collect()
assert alive() is None
print(frozen)
"""
    for state in ("on", "off"):
        done = subprocess.run([sys.executable, "-c", script, state], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
