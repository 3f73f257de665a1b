"""`segkit kfold`: k-fold splits of a COCO file or of a folder of PNG masks."""
from __future__ import annotations

from pathlib import Path

import click

from ._common import progress_option, workers_option
from .masks import on_invalid_option

EPILOG = """\b
Example:
  segkit kfold data/train_all.json --k 5 --method greedy --seed 0 --out folds/
  segkit kfold instances.json --out folds/ --on-invalid skip
  segkit kfold data/masks --k 5 --ignore-index 11 --out data/splits

A COCO file writes folds/fold0/train.json, val.json, train.txt, val.txt (one image stem per
line, e.g. batch_01_vt/0002; batch_01_vt+0002 with --flatten, as `segkit masks --flatten`
names the masks), ..., folds/fold4/, and folds/folds.json. A mask folder writes the .txt
files (mask stems) and folds.json, balancing the images that hold each class."""

ACCEPTED = ("SOURCE must be a COCO annotation file (.json) or a folder of single-channel PNG "
            "masks (one per image, named by its stem)")


def source_kind(source: str) -> str:
    """'masks' for a folder, 'coco' for a file; a clear error for anything else (a single
    mask or image, a missing path)."""
    path = Path(source)
    if path.is_dir():
        return "masks"
    if not path.exists():
        raise click.BadParameter(f"{source!r} does not exist; {ACCEPTED}",
                                 param_hint="SOURCE")
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"):
        raise click.BadParameter(f"{source!r} is an image file; {ACCEPTED} (give the folder "
                                 f"{str(path.parent)!r} for its masks)", param_hint="SOURCE")
    return "coco"


@click.command("kfold", epilog=EPILOG)
@click.argument("source", type=click.Path())
@click.option("--k", "k", type=int, default=5, show_default=True, help="Number of folds.")
@click.option("--method", type=click.Choice(["greedy", "multilabel"]), default="greedy",
              show_default=True,
              help="greedy: the original recipe's rounds; multilabel: iterative "
                   "stratification (iterative-stratification).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; the same seed gives the same folds.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for the split files (nothing is written without it).")
@click.option("--flatten", is_flag=True, help="COCO SOURCE: write split stems as dir+name.")
@on_invalid_option(prefix="COCO SOURCE: ")
@click.option("--ignore-index", type=str, default="255", show_default=True,
              help="Mask folder SOURCE: the void label, counted for no class (a value, or "
                   "'none').")
@click.option("--num-classes", type=click.IntRange(min=1), default=None,
              help="Mask folder SOURCE: classes 0..N-1; another label value is an error. "
                   "[default: the largest label found + 1]")
@workers_option
@progress_option
def command(source, k, method, seed, out, flatten, on_invalid, ignore_index, num_classes,
            workers, progress):
    """Split a dataset into K folds: a COCO file balanced by instances per class, or a folder
    of PNG masks balanced by the images that hold each class.

    Prints the counts per class in each validation fold and the largest relative imbalance.
    Every image (annotated or not) is in exactly one validation fold.
    """
    if source_kind(source) == "masks":
        from segkit.jobs.kfold import kfold_masks

        if flatten or on_invalid != "error":
            raise click.UsageError("--flatten and --on-invalid apply to a COCO SOURCE; a mask "
                                   "folder's stems are its file names")
        ignore = None if ignore_index.lower() == "none" else _int_option(ignore_index)
        kfold_masks(source, k=k, method=method, seed=seed, out=out, ignore_index=ignore,
                    num_classes=num_classes, workers=workers, progress=progress,
                    log=click.echo)
        return
    from segkit.jobs.kfold import kfold

    kfold(source, k=k, method=method, seed=seed, out=out, flatten=flatten,
          on_invalid=on_invalid, log=click.echo)


def _int_option(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise click.BadParameter(f"expected a label value (an integer >= 0) or 'none'; got "
                                 f"{text!r}", param_hint="--ignore-index") from None
    if value < 0:
        raise click.BadParameter(f"expected a label value >= 0; got {value}",
                                 param_hint="--ignore-index")
    return value
