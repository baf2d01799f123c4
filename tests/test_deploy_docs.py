"""docs/deployment.md's table of ``deploy -p`` parameters lists every field of DeploymentConfig
(but the two the CLI sets otherwise: ``--supernodes`` and ``--out``), each with its real default."""
from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from fedlab_utils.deploy import DeploymentConfig

DOCS = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"
SET_BY_THE_CLI = {"num_clients": "--supernodes", "out_dir": "--out"}


def parameter_rows(text: str) -> dict[str, str]:
    """``-p`` name -> the default cell, from the table whose header starts with ``| `-p` |``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| `-p` |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        names = re.findall(r"`(\w+)`", cells[0])
        defaults = [d.strip() for d in cells[1].split(",")]
        assert len(defaults) == len(names), f"row {cells[0]!r}: {len(names)} names, defaults {cells[1]!r}"
        rows.update(zip(names, defaults))
    return rows


def documented_default(cell: str, default: object) -> bool:
    """Whether a default cell (`mnist5k`, 0.5, false, (none), 0 (off)) says ``default``."""
    token = re.sub(r"\s*\((?!none\)).*\)$", "", cell).strip("`").strip()
    if token == "(none)":
        return default == ""
    if isinstance(default, bool):
        return token == str(default).lower()
    if isinstance(default, (int, float)):
        try:
            return float(token) == float(default)
        except ValueError:
            return False
    return token == default


def test_every_deploy_parameter_is_documented_with_its_default():
    rows = parameter_rows(DOCS.read_text(encoding="utf-8"))
    names = {f.name for f in fields(DeploymentConfig)}
    missing = sorted(names - set(rows) - set(SET_BY_THE_CLI))
    assert not missing, f"docs/deployment.md does not list -p {missing}"
    assert not set(rows) - names, f"docs/deployment.md lists parameters DeploymentConfig lacks: {set(rows) - names}"
    wrong = {f.name: (rows[f.name], f.default) for f in fields(DeploymentConfig)
             if f.name in rows and f.default is not MISSING and not documented_default(rows[f.name], f.default)}
    assert not wrong, f"documented defaults differ from DeploymentConfig's: {wrong}"


@pytest.mark.parametrize("cell, default, says", [("`mnist5k`", "mnist5k", True), ("`mlp`", "cnn", False),
                                                 ("0 (off)", 0.0, True), ("120", 60.0, False), ("(none)", "", True),
                                                 ("false", False, True), ("true", False, False)])
def test_the_default_comparison_can_fail(cell, default, says):
    assert documented_default(cell, default) is says
