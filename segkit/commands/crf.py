"""`segkit crf`: ConvCRF post-processing of a folder of unaries into label PNGs."""
from __future__ import annotations

import click

from ._common import progress_option, store_argument

EPILOG = """Examples:

\b
  # a confidence store (probabilities) and the test images -> label PNGs
  segkit crf stores/ensemble data/test --out crf_labels
\b
  # the original recipe's setting, 2 workers, also keep the refined probabilities
  segkit crf stores/ensemble data/test --out crf_seed --preset seed \\
      --store-out stores/ensemble_crf --workers 2
\b
  # .npy logits on a Ray cluster (RAY_ADDRESS) with a smaller window
  segkit crf logits/ images/ --out labels/ --unary-kind logits --filter-size 7 --engine ray
\b
  # the CRF (preset or fitted) and bias that `segkit tune` chose, on the tuned soft vote
  segkit ensemble stores/a_test stores/b_test --tuned tuned --images data/test \\
      --out ens --save-probs
  segkit crf ens/probs data/test --tuned tuned --out crf_tuned
"""


@click.command("crf", epilog=EPILOG)
@store_argument("unaries", what="unaries")
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder for <stem>.png label maps and crf_report.json.")
@click.option("--preset", type=click.Choice(["convcrf", "seed"]), default=None,
              help="CRF setting (segkit.CRF_PRESETS) [default: convcrf].")
@click.option("--tuned", type=click.Path(exists=True), default=None,
              help="A tuned.json of `segkit tune` (or its folder): apply its CRF setting (a "
                   "preset or the fitted CRF) and its bias, as `segkit ensemble --tuned` does; "
                   "UNARIES are then the averaged probabilities under its weights "
                   "(`segkit ensemble --tuned ... --save-probs`). Not with --preset, "
                   "--unary-kind or the overrides.")
@click.option("--unary-kind", type=click.Choice(["logits", "probs"]), default=None,
              help="What the unaries hold [default: probs for a confidence store, except with "
                   "--preset seed; the preset's value for .npy files].")
@click.option("--filter-size", type=int, default=None, help="Override the preset's filter size.")
@click.option("--blur", type=int, default=None, help="Override the preset's blur.")
@click.option("--num-iter", type=int, default=None, help="Override the preset's iterations.")
@click.option("--store-out", type=click.Path(file_okay=False), default=None,
              help="Also write the refined probabilities as a confidence store here.")
@click.option("--workers", type=int, default=None, help="Worker processes [default: all cores].")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Local process pool or Ray (RAY_ADDRESS or a local one).")
@click.option("--backend", type=click.Choice(["auto", "numpy", "numba", "cpp", "cuda"]),
              default="auto", show_default=True, help="ConvCRF backend in each worker.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Skip images whose outputs exist and check out.")
@progress_option
def command(unaries, images, out, preset, tuned, unary_kind, filter_size, blur, num_iter,
            store_out, workers, engine, backend, resume, progress):
    """Refine per-image unaries (a confidence store or a folder of <stem>.npy (C, H, W)
    arrays) with ConvCRF, using the images in IMAGES (found by stem; nested files map to
    flattened stems, batch_01_vt/0002.jpg -> batch_01_vt+0002), and write label PNGs."""
    from segkit.jobs.crf import crf_job

    report = crf_job(unaries, images, out, preset=preset, unary_kind=unary_kind,
                     store_out=store_out, workers=workers, engine=engine, backend=backend,
                     resume=resume, tuned=tuned, filter_size=filter_size, blur=blur,
                     num_iter=num_iter, progress=progress)
    click.echo(f"refined {report['refined']} images, skipped {report['skipped']} already done; "
               f"{100 * report['changed_fraction']:.2f}% of pixels changed label; "
               f"{report['seconds_per_image'] * 1e3:.0f} ms per image; report: "
               f"{out}/crf_report.json")
