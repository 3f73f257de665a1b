"""`segkit infer`: class probabilities of a folder of images into a confidence store."""
from __future__ import annotations

import click

EPILOG = """Examples:

\b
  segkit infer configs/upernet_swin-b_trash.py work_dirs/fold0/best_mIoU_epoch_41.pth \\
      --images data/trash/test --out stores/swin-b_fold0 --tta --batch 4
  segkit infer configs/upernet_swin-tiny_cpu.py work_dirs/toy/epoch_2.pth \\
      --images data/toy/images --out stores/toy
"""


@click.command("infer", epilog=EPILOG)
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of images (searched recursively; stems flattened as dir+name).")
@click.option("--out", required=True, help="Confidence store folder (created or resumed).")
@click.option("--tta", is_flag=True,
              help="Average the softmax over the config's tta_pipeline views (scales, flips).")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images per forward pass.")
@click.option("--device", default=None, help="cuda, cuda:1, cpu. [default: cuda if available]")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Data-loading processes.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Skip images already in the store.")
@click.option("--model-name", default=None, help="Name recorded in the store's meta.json.")
@click.option("--cfg-options", "cfg_options", multiple=True, metavar="KEY=VALUE",
              help="Config overrides (repeatable).")
@click.option("--split", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Infer only the stems this split file lists (e.g. splits/fold0/val.txt).")
def command(config, checkpoint, images, out, tta, batch_size, device, workers, resume,
            model_name, cfg_options, split):
    """Write each image's class probabilities (one softmax, float16, averaged over test-time
    augmentation views with --tta) into a confidence store, for soft voting and the CRF."""
    from segkit.mmseg.inference import infer

    try:
        store = infer(config, checkpoint, images, out, tta=tta, batch_size=batch_size,
                      device=device, workers=workers, cfg_options=list(cfg_options),
                      model_name=model_name, resume=resume, split=split)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{store.root}: {len(store)} images, {store.num_classes} classes")
