"""The README's promises that code can hold: the quick start runs and prints what the README
says, the command table is `segkit --help`'s list, and the README's local links resolve."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, f"README.md has no '## {title}' section"
    return m.group(1)


def quick_start_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", _section("Quick start"), re.S)
    assert len(blocks) == 1, f"expected one python block in the quick start, found {len(blocks)}"
    return blocks[0]


def readme_commands() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- commands:.*?-->\n(.*?)<!-- /commands -->", text, re.S)
    assert m, "README.md has no <!-- commands --> table"
    rows = []
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`segkit "):
            rows.append((cells[0][len("`segkit "):-1], cells[1]))
    return rows


def test_quick_start_runs_and_prints_what_the_readme_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = quick_start_code()
    assert len(code.strip().splitlines()) <= 16, "the quick start should stay short"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md:quick-start", "exec"), {"__name__": "__readme__"})
    printed = out.getvalue()
    # The prose under the block quotes the figures; they must be the ones the code prints.
    prose = _section("Quick start").split("```", 2)[2]
    for value in re.findall(r"\d+\.\d%", printed):
        assert value in prose, f"the quick start prints {value}; the README text does not say it"
    flagged = re.search(r"label issues: (\d+) pixels flagged, (\d+)% truly wrong", printed)
    assert flagged, printed
    assert f"{int(flagged.group(1)):,}" in prose and f"{flagged.group(2)}%" in prose, printed


def test_command_table_matches_segkit_help():
    from segkit.cli import COMMANDS, main

    expected = [(name, help_) for name, (_, help_) in COMMANDS.items()]
    assert readme_commands() == expected
    # and --help prints every command (click wraps long lines, so compare word sequences)
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    listing = " ".join(result.output.split("Commands:", 1)[1].split())
    for name, help_ in expected:
        assert " ".join([name, *help_.split()]) in listing, name


def test_readme_local_links_resolve():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local, "expected links into docs/"
    # docs/demo*.png and docs/demo.md come from the demo stream (issue 17)
    missing = [t for t in local if not (ROOT / t).exists()
               and not (t.startswith("docs/demo") and not (ROOT / "docs/demo.md").exists())]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_is_a_first_page():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
