"""`segkit demo`: the main job end to end on generated data."""
from __future__ import annotations

import sys

import click


@click.command("demo", epilog="\b\nExamples:\n  segkit demo --out demo_out            # about 10 minutes "
               "on 2 cores\n  segkit demo --preset quick --out /tmp/demo   # about 3 minutes")
@click.option("--out", default="demo_out", show_default=True, help="Output folder.")
@click.option("--preset", type=click.Choice(["default", "quick", "tiny", "gpu"]), default="default",
              show_default=True, help="Size of the run: default (what `make demo` runs), quick, "
              "tiny (the end-to-end test) or gpu (the recipe at 512x512 on a CUDA GPU).")
@click.option("--seed", default=0, show_default=True, help="Random seed of the generated data.")
def command(out, preset, seed):
    """Run the recipe end to end on generated data (no downloads): the demo writes its scenes
    and OUT/recipe.toml, then runs the stages of `segkit recipe run OUT` (COCO masks, mode
    resampling, folds, tiny Swin-UperNet models trained on the original, resampled and audited
    masks, OOF and test inference, tuning, the label audit, the ensembles with ConvCRF, the
    submission, the evaluation) and compares them with the clean truth it kept: the tables,
    curves and pictures in OUT/index.md, the recipe's report in OUT/report/index.html."""
    from segkit import demo
    from segkit.errors import SegkitError

    try:
        demo.run(out, preset=preset, seed=seed)
    except (demo.DemoError, SegkitError) as exc:
        click.echo(f"demo: {exc}", err=True)
        sys.exit(1)
