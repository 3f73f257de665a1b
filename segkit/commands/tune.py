"""`segkit tune`: ensemble weights, per-class bias and ConvCRF chosen on out-of-fold
predictions by mIoU."""
from __future__ import annotations

import dataclasses

import click

from segkit.jobs.tune import TuneOptions

from ._common import engine_option, progress_option, stores_argument, workers_option

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


#: The options every job command shares (segkit.commands._common), by TuneOptions field;
#: --backend is the shared flag and choices with tune's own help (what it reaches).
SHARED = {"workers": workers_option, "engine": engine_option, "progress": progress_option}


def _click_type(meta: dict):
    """The click type of a TuneOptions field's kind and limits."""
    kind = meta["kind"]
    if kind == "int":
        return click.IntRange(min=meta.get("low"), max=meta.get("high"))
    if kind == "float":
        return click.FloatRange(min=meta.get("low"), max=meta.get("high"),
                                min_open=meta.get("low_open", False),
                                max_open=meta.get("high_open", False))
    if kind == "folder":
        return click.Path(exists=True, file_okay=False)
    return {"label": int, "choice": click.Choice(meta.get("choices", ()))}.get(kind)


def tune_option(f: dataclasses.Field):
    """The click option of one TuneOptions field: --name-with-dashes, its help, its default
    (shown unless None) and its range."""
    meta, flag = f.metadata, "--" + f.name.replace("_", "-")
    if f.name in SHARED:
        return SHARED[f.name]
    default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
    if meta["kind"] == "flag":
        return click.option(f"{flag}/--no-{flag[2:]}", default=default, show_default=True,
                            help=meta["help"])
    return click.option(flag, default=default, type=_click_type(meta),
                        show_default=default is not None, help=meta["help"])


def tune_options(f):
    """Every TuneOptions field as a click option, in the record's order."""
    for one in reversed(dataclasses.fields(TuneOptions)):
        f = tune_option(one)(f)
    return f


@click.command("tune", epilog=EPILOG)
@stores_argument("models", what="model")
@click.option("--gt", required=True, type=click.Path(exists=True, file_okay=False),
              help="Ground-truth label PNGs of the OOF images.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder (tuned.json, tuning.png).")
@tune_options
def command(models, gt, out, **options):
    """Tune soft-vote weights (one per MODEL, summing to 1), a per-class bias on the log of
    the averaged probabilities and optionally a ConvCRF (fitted by gradient, compared with the
    presets and "off" on the held-out images), by dataset mIoU on out-of-fold predictions.
    MODEL is a confidence store or its fold stores joined by commas. tuned.json holds the
    setting whose held-out mIoU is reported as "tuned"."""
    import warnings

    from segkit.jobs.tune import tune

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tune(list(models), gt, out, TuneOptions(**options), log=click.echo)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    click.echo(str(result))
