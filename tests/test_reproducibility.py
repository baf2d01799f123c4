"""The README's library example gives the same accuracy and bytes in two fresh processes.

The example is read from README.md itself (so the test follows the README), with fewer rounds
to keep it fast; each run happens in a new interpreter, so nothing carries over between them.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = next(b for b in blocks if "make_model(" in b and "run(" in b)
    assert "seed=0" in example, "the README example must seed its model and run"
    return re.sub(r"rounds=\d+", "rounds=2", example)


def _run_fresh(code: str) -> dict:
    probe = code + ("\nimport json\nprint(json.dumps({'accuracy': history.accuracy, "
                    "'bytes_up': [r.bytes_up for r in history.records]}))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=240,
                         env={"PATH": "/usr/bin:/bin", "FEDLAB_PROGRESS": "0", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_readme_example_is_reproducible_across_fresh_processes():
    example = _readme_example()
    first, second = _run_fresh(example), _run_fresh(example)
    assert first == second
    assert len(first["accuracy"]) == 2 and all(b > 0 for b in first["bytes_up"])
