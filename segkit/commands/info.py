"""`segkit info`: what is installed and which backends run here."""
from __future__ import annotations

import importlib.metadata
import platform
import sys

import click

BASE = ("numpy", "numba", "pillow", "tqdm", "click", "pycocotools", "iterative-stratification")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@click.command("info", epilog="\b\nExamples:\n  segkit info\n  segkit info --fast   # skip the "
               "import checks")
@click.option("--fast", is_flag=True, help="Do not import the optional stacks to check them.")
def command(fast):
    """Versions, backends available here and why not."""
    import segkit

    from segkit._env import build_report, mmseg_line, stack_report, torch_build

    click.echo(f"segkit {segkit.__version__} on Python {platform.python_version()} "
               f"({platform.python_implementation()}, {platform.machine()}, {platform.system()}) "
               f"at {sys.executable}")
    click.echo(f"  torch         {torch_build() or 'not installed'}")
    click.echo(f"  mmseg line    {mmseg_line() or 'not installed'}")
    for line in build_report():
        click.echo(line)
    click.echo("\nbackends:")
    for info in segkit.backends().values():
        click.echo(f"  {info}")
    from segkit._backend import OPS

    click.echo("\nbackends of each op:")
    for op in OPS.values():
        note = f" ({op.note})" if op.note else ""
        click.echo(f"  {op.name:22s} {', '.join(op.backends)}{note}")
    click.echo("\npackages:")
    for dist in BASE:
        version = _version(dist)
        if version:
            click.echo(f"  {dist:16s} {version}")
    click.echo("\noptional stacks (installed and importable?):")
    for line in stack_report(check_imports=not fast):
        click.echo(line)
