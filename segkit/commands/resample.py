"""`segkit resample`: the mode filter over a whole dataset."""
from __future__ import annotations

import click

from ._common import (backend_option, engine_option, progress_option, resume_option,
                      workers_option)
from .masks import crowd_option, on_invalid_option

EPILOG = """\b
Examples:
  segkit resample masks/ masks_resampled/ --size 3 --workers 8
  segkit resample data/train_all.json masks_resampled/ --flatten   # COCO: rasterise on the fly
  segkit resample instances.json out/ --on-invalid skip --crowd ignore   # COCO SRC only
  RAY_ADDRESS=ray://head:10001 segkit resample masks/ out/ --engine ray

Rerunning the same command after an interruption resumes it: finished files are checked
and skipped. The report is printed and written to DST/resample_report.json."""


@click.command("resample", epilog=EPILOG)
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--size", type=int, default=3, show_default=True, help="Window side (odd).")
@click.option("--anchor", type=click.Choice(["center", "topleft"]), default="center",
              show_default=True,
              help="center: window centred, clipped at borders; topleft: the original recipe.")
@click.option("--ties", type=click.Choice(["keep", "smallest", "first"]), default="keep",
              show_default=True,
              help="keep: own label if among the most frequent, else the smallest; "
                   "first: the original recipe.")
@click.option("--ignore-index", default="auto", show_default=True, metavar="INT|auto|none",
              help="Label that neither votes nor changes. auto: 255 (mmseg's ignore label) in "
                   "the masks that hold it; none: every value votes (the original recipe). "
                   "The report says which value was used.")
@click.option("--flatten", is_flag=True, help="COCO SRC: name outputs dir+name.png.")
@click.option("--palette", type=click.Choice(["auto", "trash", "none"]), default="auto",
              show_default=True, help="COCO SRC: PNG palette (folder SRC keeps each file's).")
@on_invalid_option(prefix="COCO SRC: ")
@crowd_option(prefix="COCO SRC: ")
@workers_option
@engine_option
@backend_option
@resume_option
@progress_option
def command(src, dst, size, anchor, ties, ignore_index, flatten, palette, on_invalid, crowd,
            workers, engine, backend, resume, progress):
    """Mode-filter every label mask of SRC into DST.

    SRC is a folder of single-channel PNG masks (searched recursively; relative paths and
    palettes are kept) or a COCO annotation file (.json; masks are rasterised on the fly as
    `segkit masks` would write them). The original recipe's setting is --anchor topleft
    --ties first.
    """
    from segkit.jobs.resample import check_ignore, resample

    try:
        ignore_index = check_ignore(ignore_index)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ignore-index") from None

    resample(src, dst, size=size, anchor=anchor, ties=ties, ignore_index=ignore_index,
             workers=workers, engine=engine, resume=resume, backend=backend, flatten=flatten,
             palette=palette, on_invalid=on_invalid, crowd=crowd, progress=progress,
             log=click.echo)
