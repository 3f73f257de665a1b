"""Options and error handling shared by the dataset-job commands.

Option names are the same in every command: --workers, --engine, --backend,
--resume/--no-resume, --out, and STORE arguments (a store or a comma-joined store set).
Errors are handled once, in segkit.cli: segkit's own errors (bad input files, bad values) print
``error: <message>`` on stderr and exit with status 1; anything else shows its traceback.
"""
from __future__ import annotations

import click

class StoreSpec(click.ParamType):
    """A confidence store folder, or a store set: its fold stores joined with commas
    (``stores/a_fold0,stores/a_fold1``). Each part must be an existing folder; the job opens
    and checks them (meta.json, classes, disjoint images)."""

    name = "store"

    def __init__(self, what: str = "store"):
        self.what = what

    def convert(self, value, param, ctx):
        from pathlib import Path

        text = str(value)
        # a folder whose own name holds a comma is one store, as segkit.io.store.open_store reads it
        parts = [text] if Path(text).is_dir() else [p.strip() for p in text.split(",")]
        for part in parts:
            if not part:
                self.fail(f"{self.what} {text!r}: empty store name between commas", param, ctx)
            if not Path(part).is_dir():
                self.fail(f"{self.what} {part!r} is not a folder"
                          + (f" (in the set {text!r})" if len(parts) > 1 else ""), param, ctx)
        return text


def stores_argument(name: str = "stores", *, what: str = "store"):
    """The STORE... argument of every command that takes confidence stores (one or more; each
    a store or a comma-joined store set)."""
    return click.argument(name, nargs=-1, required=True, type=StoreSpec(what))


def store_argument(name: str, *, what: str = "store"):
    """One confidence store (or store set, or, where the command says so, a plain folder)."""
    return click.argument(name, type=StoreSpec(what))


def parse_weights(text: str | None) -> list[float] | None:
    """--weights: numbers separated by commas (or spaces); None stays None."""
    if text is None:
        return None
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if not parts:
        raise click.BadParameter(f"no weight given (got {text!r}); give one number per model, "
                                 "e.g. 0.4,0.3,0.3", param_hint="--weights")
    try:
        return [float(p) for p in parts]
    except ValueError as exc:
        raise click.BadParameter(f"expected numbers separated by commas, e.g. 0.4,0.3,0.3; got "
                                 f"{text!r}", param_hint="--weights") from exc


def workers_option(f):
    return click.option("--workers", type=click.IntRange(min=1), default=None,
                        help="Worker processes (local) or concurrent tasks (ray). "
                             "[default: all cores]")(f)


def engine_option(f):
    return click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
                        show_default=True,
                        help="local: a process pool on this machine; ray: Ray tasks on a "
                             "local Ray instance, or the cluster named by RAY_ADDRESS.")(f)


def backend_option(f):
    return click.option("--backend", type=click.Choice(["auto", "numpy", "numba", "cpp",
                                                        "cuda"]),
                        default="auto", show_default=True,
                        help="Kernel backend (auto: the fastest available here).")(f)


def resume_option(f):
    return click.option("--resume/--no-resume", default=True, show_default=True,
                        help="Skip outputs that already hold exactly what this run would "
                             "write (checked by decoding them); --no-resume rewrites all.")(f)


def progress_option(f):
    return click.option("--progress/--no-progress", default=True, show_default=True,
                        help="Show a progress bar.")(f)
