"""README.zh-CN.md keeps up with README.md: every section has its Chinese counterpart, and the
notebook table's prerequisites say the same thing in both languages."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_ZH = ROOT / "README.zh-CN.md"

#: every ``## `` and ``### `` heading of README.md -> its heading in README.zh-CN.md.  A new English
#: section needs a line here and its translated section in README.zh-CN.md; the last two are
#: sections announced for README.md, waiting for their English text.
SECTIONS = {
    "Two commands": "两条命令",
    "The notebooks": "笔记本",
    "The article, section by section": "原文逐节对照",
    "中英术语表 Glossary": "中英术语表 Glossary",
    "For instructors": "教师指南：用 nbgrader 组织课程",
    "For researchers": "研究者指南",
    "Parameter sweeps": "参数扫描",
    "The efficiency ledger": "效率账本",
    "Run it on real machines": "在真实机器上运行",
    "Installing by hand, and GPUs": "手动安装与 GPU",
    "Data": "数据",
    "Layout": "目录结构",
    "Study time: how the figures are obtained": "学习时间：这些数字从何而来",
    "The course website: build and publish": "课程网站：构建与发布",
}


def headings(text: str) -> list[tuple[int, str]]:
    """``(level, title)`` of the ``##``/``###`` headings outside fenced code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return [(len(m.group(1)), m.group(2).strip()) for m in re.finditer(r"^(#{2,3}) +(.+?)\s*$", text, re.M)]


def test_every_english_section_has_its_chinese_counterpart():
    english, chinese = headings(README.read_text(encoding="utf-8")), headings(README_ZH.read_text(encoding="utf-8"))
    unmapped = [title for _, title in english if title not in SECTIONS]
    assert not unmapped, (f"README.md sections {unmapped} have no entry in SECTIONS: add each with its Chinese "
                          "heading here and translate the section into README.zh-CN.md")
    zh_levels = dict((title, level) for level, title in chinese)
    missing = [f"{'#' * level} {SECTIONS[title]}  (for {title!r})" for level, title in english
               if zh_levels.get(SECTIONS[title]) != level]
    assert not missing, "README.zh-CN.md lacks these sections (at this level): " + "; ".join(missing)
    # and in the same order
    order = [SECTIONS[title] for _, title in english]
    zh_order = [title for _, title in chinese if title in order]
    assert zh_order == order, f"README.zh-CN.md has the sections in another order: {zh_order} vs {order}"


def notebook_table(text: str, first_header: str) -> dict[str, dict[str, str]]:
    """The notebook table (the first whose header row starts with ``| # |``): notebook number ->
    column name -> cell text (escaped pipes kept inside cells)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| # |"))
    split = lambda line: [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]  # noqa: E731
    header = split(lines[start])
    assert header[0] == "#" and first_header in header[1], header
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = split(line)
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def prerequisite_facts(cell: str) -> dict[str, object]:
    """What a prerequisites cell says, in either language: the notebooks it needs, those that
    help, those not needed, and the code it names."""
    code = set(re.findall(r"`[^`]+`", cell))
    prose = re.sub(r"`[^`]+`", " ", cell)
    prose = re.sub(r"\b(\d\d)\s*[–-]\s*(\d\d)\b",
                   lambda m: " ".join(f"{n:02d}" for n in range(int(m.group(1)), int(m.group(2)) + 1)), prose)
    helps = set(re.findall(r"\b(\d\d) (?:helps|有帮助)", prose))
    not_needed = set(re.findall(r"\b(\d\d) not needed", prose)) | set(re.findall(r"不需要 ?(\d\d)\b", prose))
    named = set(re.findall(r"(?<![\d.])(\d\d)(?![\d.])", prose))
    return {"needs": named - helps - not_needed, "helps": helps, "not needed": not_needed, "code": code}


def test_prerequisites_agree():
    english = notebook_table(README.read_text(encoding="utf-8"), "notebook")
    chinese = notebook_table(README_ZH.read_text(encoding="utf-8"), "笔记本")
    assert set(english) == set(chinese), (sorted(english), sorted(chinese))
    en_column = next(c for c in next(iter(english.values())) if c.startswith("prerequisite"))
    zh_column = next(c for c in next(iter(chinese.values())) if c.startswith("先修"))
    for number, row in english.items():
        en, zh = prerequisite_facts(row[en_column]), prerequisite_facts(chinese[number][zh_column])
        assert en == zh, f"notebook {number}: prerequisites differ: {row[en_column]!r} vs {chinese[number][zh_column]!r}"
        assert chinese[number][zh_column].strip(), number
        en_file = re.search(r"`(\d\d_\w+\.ipynb)`", row["notebook"]).group(1)
        assert en_file in next(v for k, v in chinese[number].items() if k.startswith("笔记本")), number


@pytest.mark.parametrize("cell, facts", [
    ("00; `nn.Sequential` and `loss.backward()` (04 not needed)",
     {"needs": {"00"}, "helps": set(), "not needed": {"04"}, "code": {"`nn.Sequential`", "`loss.backward()`"}}),
    ("00；`nn.Sequential` 与 `loss.backward()`（04 有帮助）",
     {"needs": {"00"}, "helps": {"04"}, "not needed": set(), "code": {"`nn.Sequential`", "`loss.backward()`"}}),
    ("00–05, above all 00, 01, 02 and 04",
     {"needs": {"00", "01", "02", "03", "04", "05"}, "helps": set(), "not needed": set(), "code": set()}),
])
def test_prerequisite_facts_tell_needed_helpful_and_not_needed_apart(cell, facts):
    """The comparison can fail: 「04 有帮助」 is not "04 not needed"."""
    assert prerequisite_facts(cell) == facts


def section(text: str, heading: str) -> str:
    """The text under ``heading`` (a ``##``/``###`` title), up to the next heading of any level."""
    match = re.search(rf"^#{{2,3}} +{re.escape(heading)}\s*$(.*?)(?=^#{{2,3}} )", text, re.M | re.S)
    assert match, heading
    return match.group(1)


def test_both_readmes_name_every_file_a_sweep_writes_and_the_columns_of_rounds_csv():
    """Issue 30: the sweep section names each file `sweep` writes (read from its source, so a new
    file needs its line in both READMEs), and rounds.csv's per-round columns."""
    from fedlab_utils.course.claims import ROUND_FIELDS

    source = (ROOT / "fedlab_utils" / "course" / "sweep.py").read_text(encoding="utf-8")
    written = set(re.findall(r'out / "([\w.]+)"', source))
    assert {"sweep.csv", "rounds.csv", "curves.png", "sweep.png"} <= written, written
    for readme, heading in ((README, "Parameter sweeps"), (README_ZH, SECTIONS["Parameter sweeps"])):
        text = section(readme.read_text(encoding="utf-8"), heading)
        missing = sorted(name for name in written | {"point.json"} if f"sweeps/bits/{name}" not in text
                         and f"/{name}`" not in text)
        assert not missing, f"{readme.name}'s sweep section does not name {missing}"
        rounds_line = next(line for line in text.splitlines() if "rounds.csv`" in line)
        rounds_item = text[text.index(rounds_line):].split("\n- ")[0]
        assert all(f"`{field}`" in rounds_item for field in ROUND_FIELDS), (readme.name, ROUND_FIELDS)


def test_study_times_agree():
    """The notebook table's study times (core and optional minutes) are the same numbers in both."""
    english = notebook_table(README.read_text(encoding="utf-8"), "notebook")
    chinese = notebook_table(README_ZH.read_text(encoding="utf-8"), "笔记本")
    en_column = next(c for c in next(iter(english.values())) if c.startswith("study time"))
    zh_column = next(c for c in next(iter(chinese.values())) if c.startswith("学习时间"))
    for number, row in english.items():
        en, zh = re.findall(r"\d+", row[en_column]), re.findall(r"\d+", chinese[number][zh_column])
        assert en == zh, f"notebook {number}: study time {row[en_column]!r} vs {chinese[number][zh_column]!r}"
