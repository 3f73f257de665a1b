"""`segkit tune`: ensemble weights, per-class bias and ConvCRF chosen on out-of-fold
predictions by mIoU."""
from __future__ import annotations

import click

from ._common import (engine_option, progress_option, stores_argument,
                      workers_option)

EPILOG = """Examples:

\b
  # each model: its fold stores (every fold's model inferred its own validation images)
  segkit tune stores/a_fold0,stores/a_fold1 stores/b_fold0,stores/b_fold1 \\
      --gt data/masks --out tuned
  segkit tune stores/a_oof stores/b_oof --gt data/masks --out tuned_crf \\
      --images data/images --search weights,bias,crf --crf-steps 600 --seed 1
  segkit ensemble stores/a_test stores/b_test --tuned tuned_crf --images data/test --out ens
  # or the CRF alone on the averaged probabilities (ensemble --tuned ... --save-probs)
  segkit crf ens/probs data/test --tuned tuned_crf --out crf_labels
"""


@click.command("tune", epilog=EPILOG)
@stores_argument("models", what="model")
@click.option("--gt", required=True, type=click.Path(exists=True, file_okay=False),
              help="Ground-truth label PNGs of the OOF images.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder (tuned.json, tuning.png).")
@click.option("--images", default=None, type=click.Path(exists=True, file_okay=False),
              help="The images: needed for --search crf and the recipe's CRF on the hold-out.")
@click.option("--search", default="weights,bias", show_default=True,
              help="What to tune: some of weights, bias, crf (comma-separated).")
@click.option("--holdout", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.2, show_default=True,
              help="Fraction of the OOF images held out (seeded), never seen by the search.")
@click.option("--budget", type=click.IntRange(min=1), default=200, show_default=True,
              help="Weight/bias candidates per search (a --refit gets as many again).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seeds the hold-out, the search order and the CRF fit.")
@click.option("--bias-bound", type=click.FloatRange(0, 20, min_open=True), default=2.0,
              show_default=True, help="Biases stay within +-this.")
@click.option("--crf-images", type=click.IntRange(min=1), default=32, show_default=True,
              help="Search images (seeded) the CRF fit draws its crops from.")
@click.option("--crf-crop", type=click.IntRange(min=1), default=128, show_default=True,
              help="Side of the CRF fit's random crops (at most the smallest image).")
@click.option("--crf-batch", type=click.IntRange(min=1), default=4, show_default=True,
              help="Crops per CRF fit step.")
@click.option("--crf-steps", type=click.IntRange(min=1), default=400, show_default=True,
              help="Adam steps of the CRF fit.")
@click.option("--crf-lr", type=click.FloatRange(0, min_open=True), default=0.02,
              show_default=True, help="Learning rate of the CRF fit.")
@click.option("--refit/--no-refit", default=False, show_default=True,
              help="Also search weights and bias again on all OOF images (reported in "
                   "tuned.json's refit block, not written as the setting).")
@click.option("--ignore-index", type=int, default=255, show_default=True,
              help="Ground-truth label that is not counted.")
@workers_option
@engine_option
@progress_option
def command(models, gt, out, images, search, holdout, budget, seed, bias_bound, crf_images,
            crf_crop, crf_batch, crf_steps, crf_lr, refit, ignore_index, workers, engine,
            progress):
    """Tune soft-vote weights (one per MODEL, summing to 1), a per-class bias on the log of
    the averaged probabilities and optionally a ConvCRF (fitted by gradient, compared with the
    presets and "off" on the held-out images), by dataset mIoU on out-of-fold predictions.
    MODEL is a confidence store or its fold stores joined by commas. tuned.json holds the
    setting whose held-out mIoU is reported as "tuned"."""
    import warnings

    from segkit.jobs.tune import tune

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tune(list(models), gt, out, images=images, search=search, holdout=holdout,
                      budget=budget, seed=seed, workers=workers, engine=engine,
                      ignore_index=ignore_index, bias_bound=bias_bound, crf_images=crf_images,
                      crf_crop=crf_crop, crf_batch=crf_batch, crf_steps=crf_steps,
                      crf_lr=crf_lr, refit=refit, progress=progress, log=click.echo)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    click.echo(str(result))
