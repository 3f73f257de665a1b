"""Options and error handling shared by the dataset-job commands.

Option names are the same in every command: --workers, --engine, --backend,
--resume/--no-resume, --out. User errors (bad input files, bad values) print
``error: <message>`` on stderr and exit with status 1, without a traceback.
"""
from __future__ import annotations

import functools

import click

#: Exit status for user errors (click's own usage errors exit with 2).
USER_ERROR = 1


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


def user_errors(fn):
    """Run a command body; known user errors become ``error: ...`` and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from segkit._backend import BackendUnavailableError
        from segkit.jobs.engine import JobError

        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, OSError, ImportError, JobError,
                BackendUnavailableError) as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(USER_ERROR) from None

    return wrapper
