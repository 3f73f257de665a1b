"""The competition's submission CSV (GUIDE section 4): a header ``image_id,PredictionString``
and one row per test image, in the order of the sample submission, holding the image's label
map resized to ``size`` x ``size`` and flattened row-major, labels separated by single spaces.

Resizing a label map (`resize_labels`):

- ``"nearest"``: output pixel (i, j) takes input pixel (floor(i * H / size), floor(j * W /
  size)): index arithmetic, the convention of OpenCV's INTER_NEAREST (albumentations' mask
  resize, which the original torch baseline used) and of torch's ``interpolate(mode=
  "nearest")``. For 512 -> 256 that is the top-left pixel of every 2x2 block. (PIL's NEAREST
  samples pixel centres instead and takes the bottom-right one: floor((i + 0.5) * H / size).)
- ``"mode"``: the majority label of every f x f block (f = H / size, an integer); ties go to
  the label of the block's first pixel in row-major order among the most frequent ones, so a
  block without a strict majority keeps its top-left pixel, as "nearest" would: the two differ
  only where a strict majority disagrees with the top-left pixel.
- ``"max"``: the largest label of every f x f block, which is what the competition's mmseg
  submission template computed (``reshape(256, 2, 256, 2).max(3).max(1)``).

Writing is streamed (one row in memory at a time), validated and atomic: every row is checked
as it is written (image id in the sample's order, size*size labels) and the finished file is
parsed back (header, row count, ids, label counts) before it is renamed into place.
"""
from __future__ import annotations

import csv
import functools
import math
import re
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..errors import DataError, InputError, InputTypeError
from . import atomic

HEADER = ("image_id", "PredictionString")
_ROW = re.compile(r"\d+(?: \d+)*")
DOWNSAMPLE = ("nearest", "mode", "max")

# Rows hold ~130 kB of text (256*256 labels); lift the csv module's 128 kB field limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class SubmissionError(DataError):
    """A submission (or sample submission) file that does not hold what it must."""


# ---- resizing ------------------------------------------------------------------------------
def resize_labels(labels: np.ndarray, size: int | tuple[int, int] = 256,
                  method: str = "nearest") -> np.ndarray:
    """(H, W) labels -> (size, size) labels by `method` (see the module docstring)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"labels must be 2-D (H, W); got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputTypeError(f"labels must be integers; got dtype {labels.dtype}")
    out_h, out_w = (size, size) if isinstance(size, (int, np.integer)) else size
    if isinstance(out_h, bool) or int(out_h) < 1 or int(out_w) < 1:
        raise InputError(f"size must be a positive integer; got {size!r}")
    out_h, out_w = int(out_h), int(out_w)
    if method not in DOWNSAMPLE:
        raise InputError(f"downsample must be one of {', '.join(map(repr, DOWNSAMPLE))}; got "
                         f"{method!r}")
    h, w = labels.shape
    if h == 0 or w == 0:
        raise InputError(f"labels must not be empty; got shape {labels.shape}")
    if method == "nearest":
        rows = np.arange(out_h) * h // out_h
        cols = np.arange(out_w) * w // out_w
        return labels[rows[:, None], cols[None, :]]
    if h % out_h or w % out_w or h // out_h != w // out_w:
        raise InputError(f"downsample={method!r} needs an integer block: {h}x{w} -> "
                         f"{out_h}x{out_w} is not a reduction by one integer factor; use "
                         "'nearest'")
    f = h // out_h
    blocks = labels.reshape(out_h, f, out_w, f).transpose(0, 2, 1, 3).reshape(out_h, out_w, f * f)
    if method == "max":
        return blocks.max(axis=2)
    return block_mode(blocks)


def block_mode(cells: np.ndarray) -> np.ndarray:
    """Mode over the last axis (the cells of a block in row-major order); ties: the first
    cell (lowest index) whose label has the top count. Pairwise counting, O(k^2) for k cells
    (k = 4 for 2x2 blocks)."""
    k = cells.shape[-1]
    counts = np.zeros(cells.shape, np.int16)
    for a in range(k):
        for b in range(a + 1, k):
            eq = cells[..., a] == cells[..., b]
            counts[..., a] += eq
            counts[..., b] += eq
    first = counts.argmax(axis=-1)  # first index of the largest count
    return np.take_along_axis(cells, first[..., None], axis=-1)[..., 0]


# ---- rows --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _tokens() -> np.ndarray:
    return np.array([str(i) for i in range(65536)], dtype=object)


def encode_labels(labels: np.ndarray) -> str:
    """'0 0 3 ...': labels flattened row-major, single spaces."""
    flat = np.asarray(labels).ravel()
    if flat.size and (flat.min() < 0 or flat.max() > 65535):
        raise InputError(f"labels {flat.min()}..{flat.max()} are outside 0..65535")
    return " ".join(_tokens()[flat.astype(np.intp)])


def decode_labels(text: str, size: int | None = None) -> np.ndarray:
    """Inverse of encode_labels: a (size, size) array (size inferred from a square count)."""
    values = np.array(text.split(" ") if text else [], dtype=np.int64)
    n = values.size
    side = size if size is not None else math.isqrt(n)
    if side * side != n:
        raise SubmissionError(f"a row holds {n} labels, not {side}x{side}")
    dtype = np.uint8 if n == 0 or values.max() < 256 else np.uint16
    return values.astype(dtype).reshape(side, side)


# ---- sample submission -------------------------------------------------------------------
def read_sample_ids(path: str | Path) -> list[str]:
    """Image ids of a sample submission (or any CSV whose first column is image_id), in order."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or not header or header[0].strip() != HEADER[0]:
                raise SubmissionError(f"{path}: expected a header starting with "
                                      f"{HEADER[0]!r}; got {header!r}")
            ids = [row[0] for row in reader if row]
    except OSError as exc:
        raise SubmissionError(f"{path}: cannot read ({exc})") from exc
    seen: set[str] = set()
    for image_id in ids:
        if image_id in seen:
            raise SubmissionError(f"{path}: image id {image_id!r} appears twice")
        seen.add(image_id)
    return ids


# ---- writing and reading -------------------------------------------------------------------
def write_submission(path: str | Path, image_ids: Iterable[str],
                     labels_for: Callable[[str], np.ndarray], *, size: int = 256,
                     downsample: str = "nearest", progress: bool = True,
                     verify: bool = True) -> Path:
    """Write a submission CSV atomically, one row per image id in the given order.

    `labels_for(image_id)` returns that image's (H, W) label map (read lazily, one at a time,
    so memory stays flat); it is resized to size x size by `downsample` ("nearest", "mode" or
    "max"). Each row is checked as written; with `verify` the finished file is parsed back
    (header, row count, ids in order, size*size labels per row) before it replaces `path`.
    """
    ids = list(image_ids)
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SubmissionError(f"image id {dup!r} appears twice")
    if downsample not in DOWNSAMPLE:
        raise InputError(f"downsample must be one of {', '.join(map(repr, DOWNSAMPLE))}; got "
                         f"{downsample!r}")
    from tqdm import tqdm

    expected = size * size
    path = Path(path)
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(HEADER)
            for image_id in tqdm(ids, desc="submission", unit="image", disable=not progress):
                small = resize_labels(labels_for(image_id), size, downsample)
                text = encode_labels(small)
                if small.size != expected:  # pragma: no cover - resize_labels guarantees it
                    raise SubmissionError(f"{image_id}: {small.size} labels, expected {expected}")
                writer.writerow((image_id, text))
        if verify:
            verify_submission(tmp, ids, size=size)
    return path


def iter_submission(path: str | Path) -> Iterator[tuple[str, str]]:
    """(image_id, PredictionString) rows of a submission CSV, after checking its header."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise SubmissionError(f"{path}: header must be {','.join(HEADER)}; got {header!r}")
        for line, row in enumerate(reader, start=2):
            if len(row) != 2:
                raise SubmissionError(f"{path}:{line}: expected 2 fields, got {len(row)}")
            yield row[0], row[1]


def verify_submission(path: str | Path, image_ids: Iterable[str] | None = None, *,
                      size: int = 256) -> int:
    """Parse a submission back and check it: header, ids (in the given order, if given) and
    size*size labels separated by single spaces in every row. Returns the row count."""
    ids = list(image_ids) if image_ids is not None else None
    expected = size * size
    count = 0
    for count, (image_id, text) in enumerate(iter_submission(path), start=1):
        if ids is not None:
            if count > len(ids):
                raise SubmissionError(f"{path}: more rows than the {len(ids)} expected")
            if image_id != ids[count - 1]:
                raise SubmissionError(f"{path}: row {count} is {image_id!r}, expected "
                                      f"{ids[count - 1]!r} (the sample's order)")
        tokens = text.count(" ") + 1 if text else 0
        if tokens != expected or not _ROW.fullmatch(text):
            raise SubmissionError(f"{path}: row {count} ({image_id}) holds {tokens} "
                                  f"space-separated labels, expected {expected} integers "
                                  "separated by single spaces")
    if ids is not None and count != len(ids):
        raise SubmissionError(f"{path}: {count} rows, expected {len(ids)}")
    return count


def read_submission(path: str | Path, *, size: int | None = None) -> dict[str, np.ndarray]:
    """{image_id: (size, size) labels} of a submission CSV (size inferred if not given), in
    the file's order. Loads every row: for large files iterate with `iter_submission`."""
    return {image_id: decode_labels(text, size) for image_id, text in iter_submission(path)}
