"""segkit's own exception types.

Every error that segkit raises on purpose about its input (an argument, a file, a dataset) or
its environment (a backend that is not available) is a :class:`SegkitError`. The command line
prints those as one line, ``error: <message>``, and exits with status 1; any other exception is
a bug and shows its traceback.

The concrete types also derive from the built-in exception a caller would expect
(``ValueError``, ``TypeError``, ``OSError``, ``RuntimeError``), so ``except ValueError`` keeps
working.
"""
from __future__ import annotations

__all__ = ["SegkitError", "InputError", "InputTypeError", "DataError", "PathNotFoundError",
           "UnavailableError", "MissingPackageError", "is_user_error"]


class SegkitError(Exception):
    """Base of every error segkit raises on purpose; the message says what to change."""


class InputError(SegkitError, ValueError):
    """An argument's value, shape or dtype is not accepted; the message names the argument and
    the bad value."""


class InputTypeError(SegkitError, TypeError):
    """An argument has a type segkit does not take; the message names the argument."""


class DataError(SegkitError, ValueError):
    """A file or dataset on disk is missing, truncated, corrupt or inconsistent; the message
    names the path."""


class PathNotFoundError(DataError, FileNotFoundError):
    """A file or folder named by an argument does not exist; the message names the argument
    and the path (``except FileNotFoundError`` catches it too)."""


class UnavailableError(SegkitError, RuntimeError):
    """Something this machine lacks (a backend, a GPU, an optional package); the message says
    how to get it."""


class MissingPackageError(UnavailableError, ImportError):
    """An optional package a feature needs is not installed; the message names the pip
    command (``except ImportError`` catches it too)."""


def is_user_error(exc: BaseException) -> bool:
    """Whether `exc` is an error segkit raised on purpose about its input or environment (the
    command line prints it as one line), rather than a bug (shown with its traceback). A job's
    :class:`~segkit.jobs.engine.JobError` counts when the exception in the worker did (or when
    the worker died without one: killed, out of memory)."""
    if not isinstance(exc, SegkitError):
        return False
    inner = getattr(exc, "exception", None)
    if getattr(exc, "wraps_worker_exception", False) and inner is not None:
        return isinstance(inner, SegkitError)
    return True
