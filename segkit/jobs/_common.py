"""Pieces the dataset jobs share: the error type, argument checks, resumable writes, and the
printed/JSON report."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DataError, InputError, is_user_error
from .engine import ENGINES, JobError, default_workers, describe_item, map_items


class DatasetError(DataError):
    """Bad input to a dataset job (missing source, destination inside the source, a file that
    is not a usable mask, ...); the message names the path."""


def job_error_message(exc: JobError) -> str:
    """A JobError's text without repeating the file name when the cause already names it."""
    cause, name = exc.cause, describe_item(exc.item)
    return cause if name in cause else f"{name}: {cause}"


def map_masks(fn: Callable, items, workers: int, engine: str, desc: str, progress,
              tally: "Tally", peaks) -> None:
    """Stream `items` through `fn` on the engine (one mask each), folding each result into
    `tally` and its memory into `peaks` (a :class:`segkit.jobs._memory.PeakTally`). A user error
    in a worker becomes a DatasetError; a bug keeps its traceback."""
    try:
        for r in map_items(fn, items, workers=workers, engine=engine, desc=desc, unit="mask",
                           progress=progress):
            tally.add(r)
            peaks.add(r.get("memory"), r.get("mask_bytes", 0))
    except JobError as exc:
        if not is_user_error(exc):
            raise  # a bug in a worker: its traceback stays chained
        raise DatasetError(job_error_message(exc)) from None


def check_engine(engine: str, workers: int | None) -> int:
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(map(repr, ENGINES))}; got {engine!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise InputError(f"workers must be a positive integer or None; got {workers!r}")
    return workers or default_workers()


@contextlib.contextmanager
def single_threaded_kernels(active: bool = True):
    """One kernel thread while a job runs in this process (``workers=1``, local engine), as in
    the engine's worker processes: a job parallelises over files, and OpenMP threads waiting
    for a busy core cost far more than the 0.2 ms a 512x512 mode filter takes. Restores the
    previous setting afterwards."""
    from .._backend import get_num_threads, set_num_threads

    if not active:
        yield
        return
    before = get_num_threads()
    set_num_threads(1)
    try:
        yield
    finally:
        set_num_threads(before)


def check_destination(dst: str | Path, src: str | Path | None = None) -> Path:
    """DST as a Path; refuses a file, and a folder inside SRC (or SRC itself) when SRC is a
    folder."""
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise DatasetError(f"{dst}: DST exists and is not a folder")
    if src is not None and Path(src).is_dir():
        s, d = Path(src).resolve(), dst.resolve()
        if d == s or s in d.parents:
            raise DatasetError(f"{dst}: DST must not be SRC or inside it (SRC is {src}); "
                               "outputs would be read back as inputs")
    return dst


def pad_palette(palette: np.ndarray | None) -> np.ndarray | None:
    if palette is None:
        return None
    pal = np.zeros((256, 3), np.uint8)
    p = np.asarray(palette, np.uint8).reshape(-1, 3)[:256]
    pal[: len(p)] = p
    return pal


def finished(path: Path, expected: np.ndarray, palette: np.ndarray | None) -> bool:
    """Whether `path` already holds exactly this mask (and palette): decodable, same size,
    same labels. A half-written file never has the final name (atomic writes), but a file
    from another run or a damaged one does not count as finished."""
    from ..io.masks import MaskError, read_mask

    try:
        labels, pal = read_mask(path, with_palette=True)
    except MaskError:
        return False
    if labels.shape != expected.shape or not np.array_equal(labels, expected):
        return False
    if palette is None or expected.dtype != np.uint8:
        return pal is None  # written as L or I;16
    return pal is not None and np.array_equal(pad_palette(pal), pad_palette(palette))


def write_unless_finished(path: Path, mask: np.ndarray, palette: np.ndarray | None,
                          resume: bool, timings: dict | None = None) -> str:
    """Write `mask` atomically unless (with `resume`) `path` already holds it. Returns
    "skipped", "replaced" (a different or damaged file was there) or "written"."""
    from ..io.masks import write_mask

    existed = False
    if resume and path.exists():
        t0 = time.perf_counter()
        ok = finished(path, mask, palette)
        if timings is not None:
            timings["check"] = timings.get("check", 0.0) + time.perf_counter() - t0
        if ok:
            return "skipped"
        existed = True
    t0 = time.perf_counter()
    write_mask(path, mask, palette if mask.dtype == np.uint8 else None)
    if timings is not None:
        timings["write"] = timings.get("write", 0.0) + time.perf_counter() - t0
    return "replaced" if existed else "written"


class Tally:
    """Streaming totals of per-file results (nothing per file is kept, so the parent's memory
    does not grow with the dataset): status counts, pixels, summed per-label count vectors and
    per-phase seconds."""

    def __init__(self, vectors: Sequence[str] = ()):
        self.files = 0
        self.pixels = 0
        self.status: dict[str, int] = {}
        self.phases: dict[str, float] = {}
        self.vectors = {name: np.zeros(0, np.int64) for name in vectors}
        self.flags: dict[str, int] = {}

    def add(self, result: dict) -> None:
        self.files += 1
        self.pixels += int(result["pixels"])
        self.status[result["status"]] = self.status.get(result["status"], 0) + 1
        for k, v in result.get("timings", {}).items():
            self.phases[k] = self.phases.get(k, 0.0) + v
        for name, acc in self.vectors.items():
            counts = result.get(name) or []
            if len(counts) > len(acc):
                acc = np.pad(acc, (0, len(counts) - len(acc)))
            acc[: len(counts)] += np.asarray(counts, np.int64)
            self.vectors[name] = acc
        for k, v in result.get("flags", {}).items():
            self.flags[k] = self.flags.get(k, 0) + int(v)

    def vector(self, name: str, n: int | None = None) -> np.ndarray:
        acc = self.vectors[name]
        return acc if n is None or n <= len(acc) else np.pad(acc, (0, n - len(acc)))

    def rates(self, seconds: float) -> dict:
        return {"files": self.files, "status_counts": dict(self.status), "pixels": self.pixels,
                "seconds": seconds,
                "files_per_second": self.files / seconds if seconds else 0.0,
                "mpix_per_second": self.pixels / seconds / 1e6 if seconds else 0.0}


def class_table(classes: Sequence[str] | None, n: int) -> list[str]:
    names = list(classes or [])
    return [names[k] if k < len(names) else str(k) for k in range(n)]


def summary_lines(report: dict, log: Callable[[str], Any] | None) -> None:
    """Print the common head of a job report."""
    if log is None:
        return
    s = report["status_counts"]
    secs = report["seconds"]
    log(f"{report['job']}: {report['files']} files ({s.get('written', 0)} written, "
        f"{s.get('skipped', 0)} already done, {s.get('replaced', 0)} replaced) in {secs:.2f} s: "
        f"{report['files_per_second']:.1f} files/s, {report['mpix_per_second']:.1f} Mpix/s "
        f"({report['params']['engine']} engine, {report['params']['workers']} workers)")
