"""`segkit demo`: the main job end to end on generated data."""
from __future__ import annotations

import sys

import click


@click.command("demo", epilog="\b\nExamples:\n  segkit demo --out demo_out            # about 3-5 minutes "
               "on 2 cores\n  segkit demo --preset quick --out /tmp/demo")
@click.option("--out", default="demo_out", show_default=True, help="Output folder.")
@click.option("--preset", type=click.Choice(["default", "quick", "tiny"]), default="default",
              show_default=True, help="Size of the run: default (what `make demo` runs), quick, "
              "or tiny (the end-to-end test).")
@click.option("--seed", default=0, show_default=True, help="Random seed of the generated data.")
def command(out, preset, seed):
    """Run the main job end to end on generated data (no downloads): COCO masks, folds, mode
    resampling, two tiny Swin-UperNet models, inference with TTA, soft vote, ConvCRF, the
    submission and the evaluation, with pictures and an index in OUT."""
    from segkit import demo

    try:
        demo.run(out, preset=preset, seed=seed)
    except demo.DemoError as exc:
        click.echo(f"demo: {exc}", err=True)
        sys.exit(1)
