"""Writers that never leave a half-written file under its final name: write to a temporary
name in the same folder, then rename (atomic on POSIX). A crashed run leaves at most a
temporary file, which resumed runs ignore and clean up.

Temporaries are named ``.<final name>.tmp-<pid>-<hex>`` (``.b054.png.tmp-20255-1a2b3c4d``):
hidden, and never ending in the final suffix, so a loader globbing ``*.png`` or ``*.npy``
cannot take a half-written file for an output. :func:`is_temporary` also recognises the
older ``.<stem>.tmp-<pid>-<hex><suffix>`` names that earlier versions left behind."""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np

TMP_MARK = ".tmp-"


def temporary_name(final: str | Path) -> str:
    """A fresh temporary file name for `final` (name only): ``.<name>.tmp-<pid>-<hex>``.

    >>> temporary_name("masks/b054.png").startswith(".b054.png.tmp-")
    True
    >>> temporary_name("b054.png").endswith(".png")
    False
    """
    return f".{Path(final).name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def is_temporary(path: str | Path) -> bool:
    """Whether `path` is a temporary of an atomic write (this version's or an older one's);
    every folder reader skips these."""
    name = Path(path).name
    return name.startswith(".") and TMP_MARK in name


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `final`; renames it to `final` if the block succeeds,
    removes it otherwise. Parent folders are created."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(temporary_name(final))
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (a temporary name in the same folder, then a rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any, **kwargs) -> None:
    """Write `obj` as JSON (``json.dumps`` keyword arguments; indent 1) to `path` atomically."""
    kwargs.setdefault("indent", 1)
    write_text(path, json.dumps(obj, **kwargs) + "\n")


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save `array` as a ``.npy`` file (no pickles) at `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)


def remove_temporaries(folder: str | Path) -> int:
    """Delete leftover temporary files of crashed runs below `folder`; returns how many."""
    count = 0
    for p in Path(folder).rglob(f".*{TMP_MARK}*"):
        if p.is_file():
            p.unlink()
            count += 1
    return count
