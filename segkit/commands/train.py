"""`segkit train`: train an mmsegmentation model from a config (mmengine's Runner)."""
from __future__ import annotations

import os

import click

EPILOG = """Examples:

\b
  segkit train configs/upernet_swin-b_trash.py --fold 0 \\
      --pretrained pretrained/swin_base_patch4_window12_384_22k.pth --amp
  segkit train configs/upernet_swin-tiny_cpu.py --data-root data/toy --work-dir work_dirs/toy
  torchrun --nproc_per_node 4 -m segkit.cli train configs/upernet_swin-b_trash.py --fold 0
"""


@click.command("train", epilog=EPILOG)
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--work-dir", default=None,
              help="Logs and checkpoints. [default: work_dirs/<config>[_fold<K>]]")
@click.option("--fold", type=click.IntRange(min=0), default=None,
              help="Fold K: the datasets read splits/fold{K}/train.txt and val.txt.")
@click.option("--data-root", default=None, help="Replaces every dataset's data_root.")
@click.option("--pretrained", default=None,
              help="Backbone weights (a local file, mmseg's key format), or 'none' for random "
                   "initial weights. [default: the config's]")
@click.option("--amp", is_flag=True, help="Mixed precision (AmpOptimWrapper; CUDA only).")
@click.option("--resume/--no-resume", default=False, show_default=True,
              help="Continue from the latest checkpoint in the work dir.")
@click.option("--launcher", type=click.Choice(["none", "pytorch", "slurm", "mpi"]), default=None,
              help="Distributed launcher. [default: pytorch under torchrun, else none]")
@click.option("--cfg-options", "cfg_options", multiple=True, metavar="KEY=VALUE",
              help="Config overrides as tools/train.py takes them (repeatable; also several "
                   "after one --cfg-options).")
@click.argument("extra_options", nargs=-1, metavar="[KEY=VALUE]...")
def command(config, work_dir, fold, data_root, pretrained, amp, resume, launcher, cfg_options,
            extra_options):
    """Train a segmentation model from an mmseg config with mmengine's Runner.

    Loads segkit's plug-in (datasets, ModeResample, weights-only checkpoints), applies --fold,
    --data-root, --pretrained and --cfg-options, trains, validates every epoch (mIoU) and keeps
    the best checkpoint.
    """
    from segkit.errors import SegkitError
    from segkit.mmseg.runner import train

    options = list(cfg_options) + list(extra_options)
    try:
        result = train(config, work_dir=work_dir, cfg_options=options, fold=fold,
                       data_root=data_root, pretrained=pretrained, amp=amp, resume=resume,
                       launcher=launcher)
    except SegkitError:
        raise  # one line, from segkit.cli's handler
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 reports for all
    metrics = ", ".join(f"{k} {v:.2f}" for k, v in result.metrics.items())
    click.echo(f"work dir: {result.work_dir}")
    click.echo(f"last validation: {metrics or 'none ran'}")
    if result.best_checkpoint:
        click.echo(f"best checkpoint: {result.best_checkpoint}")
    if result.last_checkpoint:
        click.echo(f"last checkpoint: {result.last_checkpoint}")
    if result.crf:
        w = result.crf["weight"]
        rest = ", ".join(f"{k} {v:.3f}" for k, v in result.crf.items()
                         if k not in ("weight", "compat"))
        click.echo(f"learned CRF: class weights {min(w):.4f}-{max(w):.4f}, {rest}")
