"""`segkit audit`: find wrong annotation pixels from out-of-fold confidence stores."""
from __future__ import annotations

import click

from ._common import parse_weights, stores_argument

EPILOG = """Examples:

\b
  segkit audit oof/swin_a oof/swin_b --gt data/masks --out audit --images data/images
  segkit audit oof/swin_a --gt data/masks --out audit --top 50 --fix data/masks_fixed
  segkit audit oof/a_fold0,oof/a_fold1 --gt data/masks --out audit   # a model's fold stores
"""


@click.command("audit", epilog=EPILOG)
@stores_argument()
@click.option("--gt", required=True, type=click.Path(exists=True, file_okay=False),
              help="Annotation masks (dir/name.png for stem dir+name, or <stem>.png).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Report folder (audit.csv, issues/, index.html).")
@click.option("--images", default=None, type=click.Path(exists=True, file_okay=False),
              help="Photos for the page (dir+name stems -> dir/name.jpg).")
@click.option("--top", default=20, show_default=True, type=click.IntRange(min=0),
              help="Worst images shown with pictures on the page.")
@click.option("--fix", default=None, type=click.Path(file_okay=False),
              help="Write corrected masks here (flagged pixels the model confidently "
                   "disagrees with take its prediction).")
@click.option("--weights", default=None, help="One weight per STORE (per model), comma-separated.")
@click.option("--ignore-index", default=255, show_default=True, type=int,
              help="Annotation label that is not audited.")
@click.option("--min-region", default=16, show_default=True, type=click.IntRange(min=0),
              help="Islands and holes below this many pixels are counted.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Parallel workers (default: all cores).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Local process pool or Ray.")
@click.option("--backend", type=click.Choice(["auto", "numpy", "numba", "cpp", "cuda"]),
              default="auto", show_default=True, help="Kernel backend.")
def command(stores, gt, out, images, top, fix, weights, ignore_index, min_region, workers,
            engine, backend):
    """Audit the masks in --gt against STORE... (out-of-fold confidence stores, averaged):
    cleanlab's confident learning per pixel, image quality, model-free checks, a report page.
    STORE is a store folder or a model's fold stores joined with commas (a_fold0,a_fold1)."""
    from segkit.jobs.audit import audit

    report = audit(list(stores), gt, out, images=images, top=top, fix=fix,
                   weights=parse_weights(weights), ignore_index=ignore_index,
                   min_region=min_region, workers=workers, engine=engine, backend=backend)
    click.echo(str(report))
