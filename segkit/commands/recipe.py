"""`segkit recipe init|run|status`: the whole recipe on your own dataset."""
from __future__ import annotations

import click

INIT_EPILOG = """\b
Examples:
  segkit recipe init myrun --images data/images --masks data/masks --ignore-index 11 \\
      --test-images data/test_images --test-masks data/test_masks
  segkit recipe init trash --images data/images --coco data/train_all.json \\
      --test-images data/test --preset gpu --pretrained swin_base_22k_384.pth

Writes DIR/recipe.toml (every setting explained, values chosen from the data), DIR/classes.json
and DIR/configs/<model>.py. Edit them, then run `segkit recipe run DIR`."""

RUN_EPILOG = """\b
Example:
  segkit recipe run myrun
  segkit recipe run myrun --engine ray        # trainings as Ray tasks (RAY_ADDRESS)

A rerun does only what changed: a finished folder checks the data and reprints the report;
an edited setting reruns the stages that read it and those after them; a run stopped in
training continues from the finished models and the last checkpoint."""


GROUP_EPILOG = """\b
Example:
  segkit recipe init myrun --images data/images --masks data/masks --test-images data/test
  segkit recipe run myrun
  segkit recipe status myrun"""


@click.group("recipe", epilog=GROUP_EPILOG)
def command():
    """The whole recipe on your dataset, resumable: init, run, status."""


@command.command("init", epilog=INIT_EPILOG)
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--images", required=True, type=click.Path(file_okay=False),
              help="Folder of the training images.")
@click.option("--masks", type=click.Path(file_okay=False), default=None,
              help="Folder of PNG label masks (one per image, same stem).")
@click.option("--coco", type=click.Path(dir_okay=False), default=None,
              help="COCO annotation file (instead of --masks).")
@click.option("--test-images", type=click.Path(file_okay=False), default=None,
              help="Folder of the test images (the submission).")
@click.option("--test-masks", type=click.Path(file_okay=False), default=None,
              help="Their masks: the report then scores every model and ensemble.")
@click.option("--classes", type=click.Path(dir_okay=False), default=None,
              help="Class names: a json list, a class table or a COCO file (default: the "
                   "COCO categories, or the mask values found, named by value).")
@click.option("--ignore-index", type=int, default=255, show_default=True,
              help="The masks' void value (e.g. 11 or 0), carried through every stage.")
@click.option("--preset", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="cpu: small models at a reduced size; gpu: the Swin-B recipe.")
@click.option("--pretrained", default=None, help="Backbone weights (gpu preset).")
@click.option("--sample", type=click.Path(dir_okay=False), default=None,
              help="Sample submission CSV (ids and order of the submission).")
@click.option("--force", is_flag=True, help="Overwrite an existing recipe.toml.")
def init(folder, images, masks, coco, test_images, test_masks, classes, ignore_index, preset,
         pretrained, sample, force):
    """Inspect a dataset and write the recipe folder FOLDER."""
    from segkit.recipe import init_recipe

    init_recipe(folder, images=images, masks=masks, coco=coco, test_images=test_images,
                test_masks=test_masks, classes=classes, ignore_index=ignore_index,
                preset=preset, pretrained=pretrained, sample=sample, force=force,
                log=click.echo)


@command.command("run", epilog=RUN_EPILOG)
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.option("--engine", type=click.Choice(["local", "ray"]), default=None,
              help="Where the trainings run (default: the recipe's train.engine).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="The jobs' progress bars.")
def run(folder, engine, progress):
    """Run every stage of the recipe in FOLDER that is not done yet."""
    from segkit.recipe import run_recipe

    run_recipe(folder, engine=engine, progress=progress, log=click.echo)


@command.command("status")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
def status(folder):
    """Per stage: done, stale (and why) or missing."""
    from segkit.recipe import recipe_status

    for row in recipe_status(folder):
        why = f": {'; '.join(row['why'])}" if row["why"] else ""
        click.echo(f"{row['stage']:11s} {row['state']}{why}")
