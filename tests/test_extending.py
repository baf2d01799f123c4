"""docs/extending.md's examples run as written: its python blocks, in order, in one namespace.

A block whose first line is ``# file: NAME.py`` is a module the reader saves next to their
notebook; it is written to a temporary folder on ``sys.path`` (so ``run(..., uplink="my_codec:HalfCodec")``
imports it), and every other block is executed.  The examples assert what they claim."""
import re
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
FILE = re.compile(r"^# file: ([A-Za-z_][A-Za-z0-9_]*)\.py\n")


def blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text(encoding="utf-8"))


def test_the_doc_has_a_worked_example_for_every_hook():
    modules = [m.group(1) for b in blocks() if (m := FILE.match(b))]
    assert modules == ["my_codec", "my_transform", "my_server", "my_aggregate", "my_trainer", "my_protocol"]
    text = DOC.read_text(encoding="utf-8")
    for hook in ("## Codec", "## Client transform", "## Server optimizer", "## Aggregator", "## Trainer",
                 "## Round protocol", "### `ClientResult`", "### What the vmap fast path requires",
                 "## A checkpoint's identity"):
        assert hook in text
    for path in ("my_codec:HalfCodec", "my_transform:ClipUpdate", "my_server:DecayingServer",
                 "my_aggregate:unweighted_mean", "my_trainer:DecayingLrTrainer"):
        assert f'"{path}"' in text  # each part is also passed by import path


def test_every_field_of_client_result_is_documented():
    import dataclasses

    from fedlab_utils.core import ClientResult

    table = DOC.read_text(encoding="utf-8").split("### `ClientResult`")[1].split("\n## ")[0]
    for field in dataclasses.fields(ClientResult):
        assert f"| `{field.name}` |" in table, field.name


def test_the_examples_run(tmp_path, monkeypatch, one_thread):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    names = set()
    namespace: dict = {"__name__": "extending_md"}
    try:
        for i, code in enumerate(blocks()):
            match = FILE.match(code)
            if match:
                names.add(match.group(1))
                (tmp_path / f"{match.group(1)}.py").write_text(code, encoding="utf-8")
                continue
            try:
                exec(compile(code, f"docs/extending.md block {i}", "exec"), namespace)  # noqa: S102
            except Exception as exc:  # noqa: BLE001 -- name the block that failed
                pytest.fail(f"block {i} of docs/extending.md raised {type(exc).__name__}: {exc}\n{code}")
        assert names and all(name in sys.modules for name in names)  # every module was imported and used
    finally:
        for name in names:
            sys.modules.pop(name, None)
