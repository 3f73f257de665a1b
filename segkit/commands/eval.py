"""`segkit eval`: per-class IoU and mIoU of predictions against ground-truth masks."""
from __future__ import annotations

import click

from ._common import store_argument


@click.command("eval", epilog="\b\nExample:\n  segkit eval ens/labels data/test_masks --num-classes 11 "
               "--classes trash --out ens/eval")
@store_argument("pred", what="pred")
@click.argument("gt", type=click.Path(exists=True, file_okay=False))
@click.option("--num-classes", type=int, required=True, help="Number of classes C.")
@click.option("--ignore-index", type=int, default=255, show_default=True,
              help="Ground-truth label that is not counted.")
@click.option("--classes", default=None, help="'trash' for the recycling classes, or a "
              "comma-separated list of names.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for eval.json and iou.png.")
@click.option("--strict/--no-strict", default=False, help="Fail if a mask has no prediction.")
@click.option("--workers", type=int, default=None, help="Processes (default: all cores).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
def command(pred, gt, num_classes, ignore_index, classes, out, strict, workers, engine):
    """Per-class IoU, mIoU and pixel accuracy of PRED (label PNGs or a confidence store)
    against the ground-truth masks in GT."""
    from segkit.jobs.evaluate import evaluate
    from segkit.palette import TRASH_CLASSES

    names = None
    if classes == "trash":
        names = list(TRASH_CLASSES)
    elif classes:
        names = [c.strip() for c in classes.split(",")]
    result = evaluate(pred, gt, num_classes, ignore_index=ignore_index, class_names=names,
                      out=out, strict=strict, workers=workers, engine=engine)
    click.echo(result.table())
    if result.missing:
        click.echo(f"{len(result.missing)} ground-truth masks had no prediction "
                   f"(e.g. {result.missing[0]})")
    if out:
        click.echo(f"report: {out}/eval.json, plot: {out}/iou.png")
