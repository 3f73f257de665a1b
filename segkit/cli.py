"""`segkit <command>`: the command-line face of segkit.

Every command lives in its own module under segkit/commands/ and is imported only when it
runs, so `segkit --help` stays fast.

Errors: one that segkit raises on purpose about its input or environment (a
:class:`segkit.errors.SegkitError`) prints as one line, ``error: <message>``, and exits with
status 1; anything else is a bug and shows its traceback (a job's failed item shows the
worker's traceback too). ``segkit --debug <command>`` shows the full traceback always.
"""
from __future__ import annotations

import importlib

import click

#: Exit status of an error segkit raised on purpose (click's own usage errors exit with 2).
USER_ERROR = 1

#: command name -> (module under segkit.commands, one-line help)
COMMANDS = {
    "info": ("info", "Versions, backends available here and why not."),
    "demo": ("demo", "Run the main job end to end on generated data."),
    "eval": ("eval", "Per-class IoU and mIoU of predictions against ground-truth masks."),
    "masks": ("masks", "COCO annotations to one label-mask PNG per image."),
    "resample": ("resample", "Mode-filter every mask of a folder or COCO file (resumable)."),
    "kfold": ("kfold", "K-fold splits of a COCO file or a mask folder, balanced by class."),
    "train": ("train", "Train an mmsegmentation model from a config (mmengine Runner)."),
    "infer": ("infer", "Class probabilities of a folder of images into a confidence store."),
    "ensemble": ("ensemble", "Soft-vote confidence stores into label maps and a submission CSV."),
    "crf": ("crf", "ConvCRF post-processing: unaries + images -> label PNGs."),
    "audit": ("audit", "Find wrong annotation pixels from out-of-fold stores (confident learning)."),
    "tune": ("tune", "Ensemble weights, per-class bias and ConvCRF tuned on OOF predictions."),
    "recipe": ("recipe", "The whole recipe on your dataset: init, run, status (resumable)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"segkit.commands.{COMMANDS[name][0]}")
        return module.command

    def invoke(self, ctx):
        from .errors import is_user_error

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug") or not is_user_error(exc):
                raise  # a bug (or --debug): Python prints the traceback, exit status 1
            click.echo(f"error: {exc}", err=True)
            ctx.exit(USER_ERROR)

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="segkit")
@click.option("--debug", is_flag=True,
              help="Show the full traceback of any error (by default an input error is one "
                   "line, and only bugs show a traceback).")
def main(debug):
    """segkit: fast, tested kernels and dataset jobs for semantic segmentation.

    Mode resampling of label masks, ConvCRF post-processing, soft-voting ensembles and an
    mmsegmentation plug-in. Run `segkit COMMAND --help` for a command's options and example.
    """


if __name__ == "__main__":  # pragma: no cover
    main()
