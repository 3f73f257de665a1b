"""`segkit masks`: COCO annotations to label-mask PNG files."""
from __future__ import annotations

import click

from ._common import engine_option, progress_option, resume_option, workers_option

ON_INVALID_HELP = ("error: stop at the first invalid annotation (empty or degenerate "
                   "segmentation, NaN/Infinity, RLE size or image/category id without a record), "
                   "naming the file, the annotation and the reason; skip: leave each out and list "
                   "it in the report.")
CROWD_HELP = ("Crowd annotations (iscrowd=1): paint with their class, paint 255 (ignore, "
              "mmseg's ignore label), or skip them.")


def on_invalid_option(f=None, *, prefix: str = ""):
    """--on-invalid; `prefix` heads the help (e.g. "COCO SRC: ")."""
    def deco(fn):
        return click.option("--on-invalid", type=click.Choice(["error", "skip"]),
                            default="error", show_default=True,
                            help=prefix + ON_INVALID_HELP)(fn)
    return deco(f) if f is not None else deco


def crowd_option(f=None, *, prefix: str = ""):
    """--crowd; `prefix` heads the help."""
    def deco(fn):
        return click.option("--crowd", type=click.Choice(["paint", "ignore", "skip"]),
                            default="paint", show_default=True, help=prefix + CROWD_HELP)(fn)
    return deco(f) if f is not None else deco


EPILOG = """\b
Example:
  segkit masks data/train_all.json masks/ --flatten --palette trash --workers 8
  segkit masks instances.json masks/ --on-invalid skip --crowd ignore

Writes masks/batch_01_vt+0002.png for batch_01_vt/0002.jpg (without --flatten:
masks/batch_01_vt/0002.png), masks/labels.json (category id -> label table) and
masks/masks_report.json."""


@click.command("masks", epilog=EPILOG)
@click.argument("ann_file", type=click.Path(dir_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--flatten", is_flag=True,
              help="Name masks dir+name.png for dir/name.jpg (the original recipe's layout).")
@click.option("--palette", type=click.Choice(["auto", "trash", "none"]), default="auto",
              show_default=True,
              help="PNG palette: segkit's default colours, the trash recipe's 11 colours, or "
                   "none (grayscale). Masks hold one label per pixel either way.")
@click.option("--check-images/--no-check-images", default=True, show_default=True,
              help="Check the size of image files found next to ANN_FILE against their "
                   "records.")
@on_invalid_option
@crowd_option
@workers_option
@engine_option
@resume_option
@progress_option
def command(ann_file, out_dir, flatten, palette, check_images, on_invalid, crowd, workers,
            engine, resume, progress):
    """Write one single-channel label PNG per image of a COCO annotation file.

    Background is 0; annotations (polygons or RLE) are painted with their label in order of
    decreasing area, so small objects stay on top. Category ids 1..n are their own labels;
    other ids map through a table that is printed and written to OUT_DIR/labels.json.
    """
    from segkit.jobs.masks import coco_to_masks

    coco_to_masks(ann_file, out_dir, flatten=flatten, palette=palette, workers=workers,
                  engine=engine, resume=resume, check_images=check_images,
                  on_invalid=on_invalid, crowd=crowd, progress=progress, log=click.echo)
