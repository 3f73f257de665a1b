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


# ---- store sets on the command line (issue 20, defect 1) ------------------------------------------
@pytest.fixture(scope="module")
def fold_sets(tmp_path_factory):
    """Two models' OOF predictions, each as two fold stores (disjoint stems), masks, images."""
    from .test_tune import write_oof

    root = tmp_path_factory.mktemp("cli_sets")
    specs, *_ = write_oof(root, n=8, size=16, noise=(1.5, 3.5))
    return root, specs


def _set_args(name, root, specs, out):
    gt, images = str(root / "gt"), str(root / "images")
    return {
        "audit": ["audit", *specs, "--gt", gt, "--out", out, "--workers", "1"],
        "ensemble": ["ensemble", *specs, "--out", out, "--workers", "1"],
        "tune": ["tune", *specs, "--gt", gt, "--out", out, "--budget", "4", "--workers", "1",
                 "--no-progress"],
        "eval": ["eval", specs[0], gt, "--num-classes", "6", "--workers", "1"],
        "crf": ["crf", specs[0], images, "--out", out, "--num-iter", "1", "--filter-size", "3",
                "--workers", "1"],
    }[name]


#: Every command that takes confidence stores.
STORE_COMMANDS = ("audit", "ensemble", "tune", "eval", "crf")


@pytest.mark.parametrize("name", STORE_COMMANDS)
def test_every_store_command_takes_a_comma_joined_set(name, fold_sets, tmp_path):
    root, specs = fold_sets
    assert all("," in s for s in specs)
    result = CliRunner().invoke(main, _set_args(name, root, specs, str(tmp_path / "out")))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", STORE_COMMANDS)
def test_a_missing_part_of_a_set_is_named(name, fold_sets, tmp_path):
    root, specs = fold_sets
    bad = [specs[0].split(",")[0] + "," + str(tmp_path / "nope")] + specs[1:]
    result = CliRunner().invoke(main, _set_args(name, root, bad, str(tmp_path / "out")))
    assert result.exit_code == 2 and "nope" in result.output and "is not a folder" in \
        result.output, result.output
