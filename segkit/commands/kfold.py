"""`segkit kfold`: k-fold splits of a COCO file."""
from __future__ import annotations

import click

from .masks import on_invalid_option

EPILOG = """\b
Example:
  segkit kfold data/train_all.json --k 5 --method greedy --seed 0 --out folds/
  segkit kfold instances.json --out folds/ --on-invalid skip

Writes folds/fold0/train.json, val.json, train.txt, val.txt (one image stem per line,
e.g. batch_01_vt/0002; batch_01_vt+0002 with --flatten, as `segkit masks --flatten`
names the masks), ..., folds/fold4/, and folds/folds.json."""


@click.command("kfold", epilog=EPILOG)
@click.argument("ann_file", type=click.Path(dir_okay=False))
@click.option("--k", "k", type=int, default=5, show_default=True, help="Number of folds.")
@click.option("--method", type=click.Choice(["greedy", "multilabel"]), default="greedy",
              show_default=True,
              help="greedy: the original recipe's rounds; multilabel: iterative "
                   "stratification (iterative-stratification).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; the same seed gives the same folds.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for the split files (nothing is written without it).")
@click.option("--flatten", is_flag=True, help="Write split stems as dir+name.")
@on_invalid_option
def command(ann_file, k, method, seed, out, flatten, on_invalid):
    """Split a COCO dataset into K folds balanced by instances per class.

    Prints the instances per class in each validation fold and the largest relative
    imbalance. Every image (annotated or not) is in exactly one validation fold.
    """
    from segkit.jobs.kfold import kfold

    kfold(ann_file, k=k, method=method, seed=seed, out=out, flatten=flatten,
          on_invalid=on_invalid, log=click.echo)
