"""The deployment's progress lines in the reader's language (``FEDLAB_LANG``), the same figures in both."""
import re
from pathlib import Path

import pytest

from fedlab_utils.deploy.launcher import INSECURE_WARNING, _where_logs, print_round
from fedlab_utils.i18n import gettext

ROUND = {"event": "round", "round": 3, "accuracy": 0.8123, "replied": [0, 1], "selected": [0, 1, 2],
         "ledger_bytes_up": 203560, "flower_bytes_up": 204800, "seconds": 2.25}


@pytest.mark.parametrize("lang, words", [("en", "round 3: accuracy"), ("zh", "第 3 轮：准确率")])
def test_round_line(lang, words, monkeypatch, capsys):
    monkeypatch.setenv("FEDLAB_LANG", lang)
    print_round(ROUND, name="a")
    print_round({"event": "start"})  # other events print nothing
    line = capsys.readouterr().out
    assert line.startswith(f"[a] {words}") and line.count("\n") == 1
    assert re.findall(r"[\d,.]+%|\d/\d|[\d,]{5,}", line) == ["81.23%", "2/3", "203,560", "204,800"]
    if lang == "zh":
        assert not re.search(r"[A-Za-z]{4,} [A-Za-z]{4,}", line), line


def test_log_folder_and_insecure_warning_in_chinese(monkeypatch):
    monkeypatch.setenv("FEDLAB_LANG", "zh")
    assert _where_logs(Path("/tmp/logs"), True) == "（日志位于 /tmp/logs）"
    assert "--keep-logs" in _where_logs(Path("/tmp/logs"), False) and "日志" in _where_logs(Path("/x"), False)
    assert gettext(INSECURE_WARNING).startswith("警告：不安全模式")
    monkeypatch.setenv("FEDLAB_LANG", "en")
    assert gettext(INSECURE_WARNING).startswith("WARNING: insecure mode")


def test_real_machine_commands_comment_in_the_readers_language_and_run_the_same_commands(monkeypatch):
    from fedlab_utils.deploy import real_machine_commands

    monkeypatch.setenv("FEDLAB_LANG", "en")
    english = real_machine_commands()
    monkeypatch.setenv("FEDLAB_LANG", "zh")
    chinese = real_machine_commands()
    commands = [[line for line in text.splitlines() if not line.startswith("#")] for text in (english, chinese)]
    assert commands[0] == commands[1]  # only the comments differ
    comments = [line for line in chinese.splitlines() if line.startswith("#") and "http" not in line]
    assert comments and all(re.search(r"[\u4e00-\u9fff]", line) for line in comments), comments
    assert "# 设备 1：启动 SuperNode 1" in chinese and "# device 1: start SuperNode 1" in english
