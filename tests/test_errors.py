"""segkit's own exception types (segkit.errors): every deliberate input error is one, the
command line prints those as one line and everything else with its traceback, and a worker's
exception reaches the parent with its type and traceback (issue 20, defect 5)."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import segkit
from segkit import errors
from segkit.cli import main
from segkit.jobs.engine import JobError, map_items

ROOT = Path(segkit.__file__).parent


def _types():
    from segkit._backend import BackendUnavailableError
    from segkit.io.coco import CocoError
    from segkit.io.images import ImageLookupError
    from segkit.io.masks import MaskError
    from segkit.io.store import StoreError
    from segkit.io.submission import SubmissionError
    from segkit.jobs._common import DatasetError
    from segkit.jobs.crf import CrfJobError

    return [(StoreError, errors.DataError), (MaskError, errors.DataError),
            (CocoError, errors.DataError), (ImageLookupError, errors.DataError),
            (SubmissionError, errors.DataError), (DatasetError, errors.DataError),
            (CrfJobError, errors.DataError), (JobError, errors.SegkitError),
            (BackendUnavailableError, errors.UnavailableError)]


@pytest.mark.parametrize("kind, base", _types(), ids=lambda t: t.__name__)
def test_existing_error_types_are_segkit_errors(kind, base):
    assert issubclass(kind, base) and issubclass(kind, errors.SegkitError)


def test_builtin_bases_still_catch_them():
    assert issubclass(errors.PathNotFoundError, FileNotFoundError)
    assert issubclass(errors.MissingPackageError, ImportError)
    assert issubclass(errors.InputError, ValueError)
    assert issubclass(errors.InputTypeError, TypeError)


#: The layers whose deliberate errors must be segkit's own (reference/ is the plain NumPy
#: definition, mmseg/ and the demo belong to other streams).
CHECKED = ["ops", "io", "jobs", "commands", "_validate.py", "_backend.py", "cli.py"]
BUILTIN = {"ValueError", "TypeError", "FileNotFoundError", "ImportError"}


def _builtin_raises():
    found = []
    for entry in CHECKED:
        paths = [ROOT / entry] if entry.endswith(".py") else sorted((ROOT / entry).glob("*.py"))
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and \
                        isinstance(node.exc.func, ast.Name) and node.exc.func.id in BUILTIN:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.exc.func.id}")
    return found


def test_no_deliberate_builtin_value_or_type_errors():
    assert _builtin_raises() == []


def test_ops_and_jobs_raise_input_errors(tmp_path):
    with pytest.raises(errors.InputError, match="weights"):
        segkit.soft_vote([np.full((2, 3, 3), 0.5, np.float32)], [-1.0])
    with pytest.raises(errors.InputTypeError, match="labels"):
        segkit.mode_filter(np.zeros((4, 4), np.float32))
    with pytest.raises(errors.DataError, match="not a confidence store"):
        segkit.io.store.open_store(tmp_path)
    with pytest.raises(errors.PathNotFoundError, match="gt"):
        segkit.evaluate(tmp_path, tmp_path / "nope", 3)


# ---- worker exceptions keep their type and traceback --------------------------------------------
def fails_with_key_error(x):
    if x == 3:
        raise KeyError(f"no such thing {x}")
    return x


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("cannot pickle this")


def fails_unpicklably(x):
    if x == 2:
        raise Unpicklable("local only")
    return x


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_exception_reaches_the_parent_with_type_and_traceback(workers):
    with pytest.raises(JobError) as info:
        list(map_items(fails_with_key_error, range(6), workers=workers, progress=False))
    err = info.value
    assert err.item == 3 and isinstance(err.exception, KeyError)
    assert "no such thing 3" in str(err.exception)
    assert "fails_with_key_error" in err.traceback and "KeyError" in err.traceback
    assert not errors.is_user_error(err)  # a bug in the worker, not bad input


def test_an_unpicklable_worker_exception_keeps_its_text_and_traceback():
    with pytest.raises(JobError) as info:
        list(map_items(fails_unpicklably, range(4), workers=2, progress=False))
    err = info.value
    assert err.exception is None and "Unpicklable: local only" in str(err)
    assert "fails_unpicklably" in err.traceback


# ---- the command line ----------------------------------------------------------------------------
def _coco(tmp_path):
    from ._jobs_data import coco_dataset

    return coco_dataset(tmp_path, 4).ann_file


def test_cli_prints_a_segkit_error_as_one_line(tmp_path):
    res = CliRunner().invoke(main, ["kfold", str(_coco(tmp_path)), "--k", "99"])
    assert res.exit_code == 1 and res.stderr.startswith("error: k=99")
    assert "Traceback" not in res.output and len(res.stderr.strip().splitlines()) == 1
    assert isinstance(res.exception, SystemExit)


def test_cli_shows_a_bug_with_its_traceback(tmp_path, monkeypatch):
    import segkit.jobs.kfold

    def broken(*args, **kwargs):
        raise ValueError("a bug, not an input error")

    monkeypatch.setattr(segkit.jobs.kfold, "kfold", broken)
    res = CliRunner().invoke(main, ["kfold", str(_coco(tmp_path))])
    assert res.exit_code == 1 and isinstance(res.exception, ValueError)
    assert "error: a bug" not in res.stderr


def test_cli_debug_shows_the_traceback_of_an_input_error(tmp_path):
    res = CliRunner().invoke(main, ["--debug", "kfold", str(_coco(tmp_path)), "--k", "99"])
    assert res.exit_code == 1 and isinstance(res.exception, errors.InputError)


def test_cli_shows_a_worker_bug_with_its_traceback(tmp_path, monkeypatch):
    """A JobError whose worker raised a non-segkit exception is a bug: not one line."""
    from .test_tune import write_oof

    specs, *_ = write_oof(tmp_path, n=4, size=8, noise=(1.5, 3.5))
    import segkit.jobs.ensemble as ens

    def broken(self, stem):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(ens._VoteImage, "__call__", broken)
    res = CliRunner().invoke(main, ["ensemble", *specs, "--out", str(tmp_path / "o"),
                                    "--workers", "1"])
    assert res.exit_code == 1 and isinstance(res.exception, JobError)
    assert isinstance(res.exception.exception, ZeroDivisionError)
    assert "error: " not in res.stderr
