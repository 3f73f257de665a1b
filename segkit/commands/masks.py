"""`segkit masks`: COCO annotations to label-mask PNG files."""
from __future__ import annotations

import click

from ._common import engine_option, progress_option, resume_option, user_errors, workers_option

EPILOG = """\b
Example:
  segkit masks data/train_all.json masks/ --flatten --palette trash --workers 8

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
@workers_option
@engine_option
@resume_option
@progress_option
@user_errors
def command(ann_file, out_dir, flatten, palette, check_images, workers, engine, resume,
            progress):
    """Write one single-channel label PNG per image of a COCO annotation file.

    Background is 0; annotations (polygons or RLE) are painted with their label in order of
    decreasing area, so small objects stay on top. Category ids 1..n are their own labels;
    other ids map through a table that is printed and written to OUT_DIR/labels.json.
    """
    from segkit.jobs.masks import coco_to_masks

    coco_to_masks(ann_file, out_dir, flatten=flatten, palette=palette, workers=workers,
                  engine=engine, resume=resume, check_images=check_images, progress=progress,
                  log=click.echo)
