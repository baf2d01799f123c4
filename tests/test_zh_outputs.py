"""The zh edition as a Chinese student runs it: notebook 00 executed in Chinese (``run --lang zh``,
two rounds to keep it short) prints no run of four or more English words outside code, tracebacks,
warnings and the third-party texts of ``notebooks/locale/scan_allow.txt`` (``make zh-scan`` scans
all eight after ``make course LANG=zh``).  Slow: ``make slow-check`` runs it."""
from pathlib import Path

import pytest

from fedlab_utils.__main__ import main
from fedlab_utils.course.translate import allowed_texts, scan_outputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_zh_notebook_00_prints_no_english_prose(tmp_path):
    out = tmp_path / "build"
    assert main(["run", "00", "--lang", "zh", "-p", "rounds", "2", "--out", str(out), "--no-html"]) == 0
    executed = out / "zh" / "notebooks" / "00_federated_baseline.ipynb"
    assert scan_outputs(executed, allowed_texts(ROOT / "notebooks" / "locale" / "scan_allow.txt")) == []
