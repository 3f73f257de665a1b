"""One guard for "the outputs of a folder belong to one setting", shared by the jobs that
resume by file (`segkit ensemble`: ``ensemble.json``, `segkit crf`: ``crf_settings.json``).

A job records the setting that makes its outputs in a small JSON file before it writes any
output, and calls :func:`claim` first:

* ``resume=True``: a recorded setting that differs is refused (:class:`InputError` naming what
  differs), so a resumed run never keeps outputs of another setting; an unreadable record is
  refused (:class:`DataError` naming the file);
* ``resume=False``: when the recorded setting differs, is unreadable or unknown, the outputs
  are removed *before* the new record is written, so a run that stops part way leaves only
  outputs of the setting now recorded, and the next resumed run can trust them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..errors import DataError, InputError
from ..io import atomic


class SettingRecordError(DataError):
    """A folder's setting record cannot be read (the message names the file)."""


def read_record(path: Path) -> tuple[dict | None, str | None]:
    """(the recorded setting, None) or (None, why it cannot be read); (None, None) if absent.

    Any unreadable file counts: bad JSON, bytes that are not UTF-8, a JSON value that is not
    an object.
    """
    if not path.is_file():
        return None, None
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        return None, f"{type(exc).__name__}: {exc}"
    if not isinstance(doc, dict):
        return None, f"not a JSON object (a {type(doc).__name__})"
    return doc, None


def key_differences(old: dict, new: dict, keys: Sequence[str]) -> list[str]:
    """``"key: old, now new"`` for every key of `keys` whose values differ."""
    return [f"{k}: {old.get(k)!r}, now {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def claim(out: Path, name: str, record: dict[str, Any], *, resume: bool,
          keys: Sequence[str], outputs: Callable[[], Iterable[Path]],
          differences: Callable[[dict, dict], list[str]] | None = None,
          fallback: Callable[[], dict | None] | None = None,
          what: str = "outputs made with other settings",
          hint: str = "use another out folder, or resume=False to recompute it") -> None:
    """Make `out`'s outputs belong to `record`, then write it as ``out/name``.

    Parameters
    ----------
    out : Path
        The output folder (exists).
    name : str
        The record's file name in `out`.
    record : dict
        This run's setting (JSON-serialisable); compared on `keys` with the recorded one.
    resume : bool
        True: refuse a recorded setting that differs (or an unreadable record). False: remove
        the outputs of a differing, unreadable or unknown setting first.
    keys : sequence of str
        The keys that must match.
    outputs : callable
        Lists the output files to remove (called only when they must go).
    differences : callable, optional
        ``(old, new) -> list of str`` replacing the plain per-key comparison.
    fallback : callable, optional
        The setting of a folder without the record (an earlier version's report), or None.
    what, hint : str
        Words for the refusal: ``"{out} holds {what} ({differences}); {hint}"``.

    Raises
    ------
    InputError
        `resume` and the recorded setting differs (the message names each difference).
    SettingRecordError
        `resume` and the record cannot be read (the message names the file and why).
    """
    record = json.loads(json.dumps(record))  # as it reads back
    path = out / name
    old, why = read_record(path)
    if why is not None and resume:
        raise SettingRecordError(f"{path}: unreadable ({why}); remove it, or use resume=False "
                                 "(--no-resume) to recompute every output")
    if old is None and why is None and fallback is not None:
        old = fallback()
    diffs = None if old is None else (differences(old, record) if differences is not None
                                      else key_differences(old, record, keys))
    if resume and diffs:
        raise InputError(f"{out} holds {what} ({'; '.join(diffs)}); {hint}")
    if not resume and (old is None or diffs):
        for file in outputs():
            Path(file).unlink(missing_ok=True)
    atomic.write_json(path, record)
