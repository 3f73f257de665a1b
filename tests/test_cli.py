"""The CLI as one tool: every command listed with one line, every --help with an example."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from segkit.cli import COMMANDS, main


def test_top_level_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name, (_, line) in COMMANDS.items():
        assert name in result.output and line[:30] in result.output


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_help_has_an_example(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and f"segkit {name}" in result.output


def test_info_reports_backends_and_stacks():
    result = CliRunner().invoke(main, ["info", "--fast"])
    assert result.exit_code == 0, result.output
    for backend in ("numpy", "numba", "cpp", "cuda"):
        assert f"  {backend}" in result.output
    assert "optional stacks" in result.output


def test_unknown_command_fails():
    result = CliRunner().invoke(main, ["frobnicate"])
    assert result.exit_code != 0 and "No such command" in result.output
