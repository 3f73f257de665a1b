"""`segkit ensemble`: soft-vote confidence stores into label maps and a submission CSV."""
from __future__ import annotations

import click

from ._common import parse_weights, progress_option, stores_argument

EPILOG = """Examples:

\b
  segkit ensemble stores/swin_a stores/swin_b stores/swin_c --weights 0.4,0.3,0.3 \\
      --out ens --submission ens/submission.csv --sample sample_submission.csv
  segkit ensemble stores/swin_a stores/swin_b --out ens_crf --crf convcrf --images data/test
  segkit ensemble stores/a stores/b --out ens_ab --save-probs   # a new store: ensembles compose
  segkit ensemble stores/a_test stores/b_test --tuned tuned/tuned.json --out ens_tuned
"""


@click.command("ensemble", epilog=EPILOG)
@stores_argument()
@click.option("--weights", default=None,
              help="One weight per STORE (per model), comma-separated (normalised by their "
                   "sum). Default: equal.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder (labels/, probs/, ensemble.json).")
@click.option("--crf", default=None, help="ConvCRF preset run on the averaged probabilities: "
              "convcrf (taking them as probabilities) or seed (as logits, as the original "
              "recipe did); needs --images.")
@click.option("--images", default=None, type=click.Path(exists=True, file_okay=False),
              help="Image folder for --crf (dir+name stems -> dir/name.jpg).")
@click.option("--submission", default=None, type=click.Path(dir_okay=False),
              help="Write the submission CSV here.")
@click.option("--sample", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Sample submission: the CSV's image ids and row order.")
@click.option("--size", default=256, show_default=True, help="Submission label-map side.")
@click.option("--downsample", type=click.Choice(["nearest", "mode", "max"]), default="nearest",
              show_default=True, help="How label maps are resized for the submission.")
@click.option("--save-probs", is_flag=True, help="Also write the averaged probabilities as a "
              "confidence store (OUT/probs).")
@click.option("--strict", is_flag=True, help="Fail if some store lacks images others have.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Parallel workers (default: all cores).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Local process pool or Ray (RAY_ADDRESS or a local one).")
@click.option("--backend", type=click.Choice(["auto", "numpy", "numba", "cpp", "cuda"]),
              default="auto", show_default=True, help="Soft-vote backend.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Skip images whose outputs exist.")
@click.option("--tuned", default=None, type=click.Path(exists=True),
              help="tuned.json of `segkit tune`: its weights, per-class bias and ConvCRF "
                   "(STORE... in the tuned order; replaces --weights and --crf).")
@progress_option
def command(stores, weights, out, crf, images, submission, sample, size, downsample, save_probs,
            strict, workers, engine, backend, resume, tuned, progress):
    """Soft-vote STORE... (confidence stores of one class list; a model's fold stores may be
    joined with commas, a,b) into label PNGs, optionally
    refined by ConvCRF, plus the averaged probabilities and a submission CSV."""
    import warnings

    from segkit.jobs.ensemble import ensemble

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = ensemble(list(stores), parse_weights(weights), out, crf=crf, images=images,
                          submission=submission, sample=sample, size=size,
                          downsample=downsample, save_probs=save_probs, strict=strict,
                          workers=workers, engine=engine, resume=resume, backend=backend,
                          tuned=tuned, progress=progress)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    click.echo(str(report))
