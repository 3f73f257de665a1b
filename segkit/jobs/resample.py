"""``segkit.resample``: the mode filter over a whole dataset of label masks.

SRC is a folder of single-channel PNG masks (searched recursively; relative paths and each
file's palette are kept) or a COCO annotation file (masks rasterised on the fly, as
``segkit.coco_to_masks`` would write them). Every mask is read, filtered with
``segkit.mode_filter`` and written atomically under DST by a per-file function that the job
engine runs on a local process pool or on Ray. Only one mask per worker is in memory.

A killed run resumes: files already in DST with exactly the content this run would write are
skipped (decoded and compared, never assumed); temporary files of the crashed run are removed.
The report (files, pixels changed per class, time per phase, throughput) is printed and
written to ``DST/resample_report.json``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import _backend
from ..errors import InputError
from ..io.atomic import remove_temporaries, write_json
from ..io.coco import CocoError, check_image_size, rasterize
from ..io.stems import MASKS, NOT_MASKS, list_stems
from ..io.masks import read_mask
from ..ops.mode_filter import mode_filter, mode_params
from ._coco import coco_report, coco_summary, open_index, output_names, resolve_palette
from ._common import (DatasetError, Tally, check_destination, check_engine, class_table,
                      map_masks, single_threaded_kernels, summary_lines, write_unless_finished)
from ._memory import PeakTally, describe_memory, item_peak

REPORT_NAME = "resample_report.json"

#: The ignore value `ignore_index="auto"` takes where a mask holds it (mmseg's ignore label).
AUTO_IGNORE = 255


@dataclass(frozen=True)
class FilterParams:
    size: int = 3
    anchor: str = "center"
    ties: str = "keep"
    ignore_index: int | str | None = "auto"
    backend: str = "auto"


def check_ignore(ignore_index: Any) -> int | str | None:
    """`ignore_index` as the job takes it: "auto", None (also "none") or an integer."""
    if isinstance(ignore_index, str):
        key = ignore_index.strip().lower()
        if key in ("auto", "none"):
            return None if key == "none" else "auto"
        try:
            return int(key)
        except ValueError:
            raise InputError(f"ignore_index must be an integer, 'auto' or 'none'; got "
                             f"{ignore_index!r}") from None
    return ignore_index


def _filter(labels: np.ndarray, p: FilterParams, timings: dict) -> tuple[np.ndarray, bool]:
    """(the filtered mask, whether "auto" found AUTO_IGNORE in it and left it out)."""
    t0 = time.perf_counter()
    ignore, found = p.ignore_index, False
    if ignore == "auto":
        found = bool(np.any(labels == AUTO_IGNORE))
        ignore = AUTO_IGNORE if found else None
    out = mode_filter(labels, p.size, anchor=p.anchor, ties=p.ties,
                      ignore_index=ignore, backend=p.backend)
    timings["kernel"] = timings.get("kernel", 0.0) + time.perf_counter() - t0
    return out, found


def _changes(before: np.ndarray, after: np.ndarray) -> tuple[list[int], list[int]]:
    """Pixels that left each label and pixels that joined it."""
    idx = np.flatnonzero(before.ravel() != after.ravel())
    if not idx.size:
        return [], []
    b, a = before.ravel()[idx], after.ravel()[idx]
    n = int(max(b.max(), a.max())) + 1
    return np.bincount(b, minlength=n).tolist(), np.bincount(a, minlength=n).tolist()


@dataclass(frozen=True)
class _FolderTask:
    src: str
    dst: str
    params: FilterParams
    resume: bool


def _resample_png(task: _FolderTask, rel: str) -> dict:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    labels, palette = read_mask(Path(task.src) / rel, with_palette=True)
    timings["read"] = time.perf_counter() - t0
    after, found = _filter(labels, task.params, timings)
    status = write_unless_finished(Path(task.dst) / rel, after, palette, task.resume, timings)
    left, joined = _changes(labels, after)
    return {"file": rel, "status": status, "pixels": int(labels.size), "left": left,
            "joined": joined, "timings": timings, "flags": {"auto_ignored": int(found)}}


@dataclass(frozen=True)
class _CocoTask:
    dst: str
    image_root: str
    category_to_label: dict
    dtype: str
    palette: np.ndarray | None
    params: FilterParams
    resume: bool
    check_images: bool
    crowd: str = "paint"


def _resample_coco(task: _CocoTask, item) -> dict:
    image, anns, name = item
    timings: dict[str, float] = {}
    stats: dict = {}
    with item_peak() as memory:
        t0 = time.perf_counter()
        if task.check_images:
            check_image_size(image, task.image_root)
        labels = rasterize(image, anns, task.category_to_label, np.dtype(task.dtype),
                           crowd=task.crowd, stats=stats)
        timings["read"] = time.perf_counter() - t0  # rasterising replaces reading
        after, found = _filter(labels, task.params, timings)
        status = write_unless_finished(Path(task.dst) / name, after, task.palette,
                                       task.resume, timings)
        left, joined = _changes(labels, after)
        mask_bytes = labels.nbytes
        del labels, after
    return {"file": name, "status": status, "pixels": int(image["height"] * image["width"]),
            "left": left, "joined": joined, "timings": timings,
            "flags": {"crowd_pixels": stats.get("crowd_pixels", 0),
                      "auto_ignored": int(found)}, "memory": memory,
            "mask_bytes": mask_bytes}


#: The masks of a SRC folder: PNG masks by the rules of :mod:`segkit.io.stems`; other image
#: files are refused (they are not label masks), other files skipped.
SRC_MASKS = dataclasses.replace(
    MASKS, refuse=NOT_MASKS, error=DatasetError,
    refused=("{path}: not a PNG mask{more}; SRC must hold single-channel PNG label masks "
             "(convert images of class colours to class indices first)"))


def list_masks(src: str | Path) -> list[str]:
    """PNG files below `src` (relative POSIX paths, sorted; :func:`segkit.io.stems.list_stems`:
    any case, hidden files and folders skipped (temporaries of crashed runs among them), two
    masks of one stem an error naming both). Other image files are an error: they are not
    label masks. Non-image files (JSON reports, text) are ignored."""
    src = Path(src)
    found = list_stems(src, SRC_MASKS, allow_empty=True)
    if not found:
        raise DatasetError(f"{src}: no PNG masks found in SRC")
    return [p.relative_to(src).as_posix() for p in found.values()]


def _classes_of_folder(src: Path) -> list[str] | None:
    path = src / "labels.json"
    if path.is_file():
        try:
            classes = json.loads(path.read_text()).get("classes")
            return [str(c) for c in classes] if isinstance(classes, list) else None
        except (ValueError, OSError, AttributeError):
            return None
    return None


def resample(src, dst, *, size: int = 3, anchor: str = "center", ties: str = "keep",
             ignore_index: int | str | None = "auto", workers: int | None = None,
             engine: str = "local", resume: bool = True, backend: str = "auto",
             flatten: bool = False, palette: Any = None, check_images: bool = True,
             on_invalid: str = "error", crowd: str = "paint", progress: bool = True,
             log: Callable[[str], Any] | None = print) -> dict:
    """Mode-filter every mask of a dataset into DST.

    Parameters
    ----------
    src : path
        A folder of single-channel PNG label masks (recursive; relative paths and palettes are
        kept) or a COCO annotation file ``*.json`` (masks rasterised on the fly: background 0,
        annotations in decreasing area order; see ``segkit.coco_to_masks``).
    dst : path
        Output folder (created; must not be SRC or inside it).
    size, anchor, ties, backend
        As in :func:`segkit.mode_filter`; the backend is resolved once, here, and every worker
        must run it (no silent fallback).
    ignore_index : int, None or "auto", default "auto"
        The label that neither votes nor changes. "auto": 255 (mmseg's ignore label) in the
        masks that hold it, nothing in the others (a mask without 255 filters as with None);
        None (or "none"): every value votes, as in the original recipe (whose masks hold no
        255, so "auto" reproduces it too). The report says which value was used
        (``ignore_index`` and, for "auto", ``auto_ignored``: the masks that held 255).
    workers, engine
        ``engine="local"``: a process pool of `workers` processes (default: all cores;
        ``workers=1`` runs in this process). ``engine="ray"``: Ray tasks on a local Ray
        instance, or on the cluster named by ``RAY_ADDRESS`` (segkit must be installed there).
    resume : bool
        Skip files whose output already holds exactly what this run would write (decoded and
        compared); rewrite others. ``False`` rewrites everything.
    flatten, palette, check_images
        For a COCO SRC only: output names (``dir+name.png``), PNG palette, and the check of
        image files' sizes against their records (see ``segkit.coco_to_masks``).
    on_invalid, crowd
        For a COCO SRC only: invalid annotations stop the job (``"error"``) or are left out
        and listed in the report (``"skip"``); crowd regions are painted with their class,
        with 255 (``"ignore"``) or left out. See ``segkit.coco_to_masks``.
    progress, log
        tqdm progress bar; where the report lines go (``None``: silent).

    Returns
    -------
    dict
        The report, also written to ``DST/resample_report.json``: files (written, skipped,
        replaced), pixels and pixels changed per class (left / joined), seconds, files/s,
        Mpix/s, seconds spent per phase (read, kernel, write, check) summed over workers.

    Raises
    ------
    DatasetError
        Missing SRC, DST inside SRC, no masks, a file that is not a single-channel PNG (named),
        an image whose size disagrees with its COCO record (named). Files finished before the
        error stay in DST; a rerun resumes.
    """
    nworkers = check_engine(engine, workers)
    src = Path(src)
    if not src.exists():
        raise DatasetError(f"{src}: SRC does not exist")
    dst = check_destination(dst, src)
    params = _filter_params(size, anchor, ties, ignore_index, backend)
    if src.is_dir():
        fn, items, classes, labels_json = _folder_source(src, dst, params, resume)
        index = None
    elif src.suffix.lower() == ".json":
        index, fn, items, classes, labels_json = _coco_source(
            src, dst, params, resume, flatten, palette, check_images, on_invalid, crowd, log)
    else:
        raise DatasetError(f"{src}: SRC must be a folder of PNG masks or a COCO annotation "
                           "file (.json)")

    dst.mkdir(parents=True, exist_ok=True)
    stale = remove_temporaries(dst)
    tally, peaks, seconds = _run(fn, items, nworkers, engine, progress)
    if labels_json is not None:
        from ..io.atomic import write_text

        write_text(dst / "labels.json", labels_json)
    report = _report(src, dst, tally, seconds, params, nworkers, engine, classes, stale)
    if not src.is_dir():
        report.update(coco_report(index, tally, crowd, on_invalid))
        report["memory"] = peaks.to_json()
        report["params"].update(on_invalid=on_invalid, crowd=crowd)
    write_json(dst / REPORT_NAME, report)
    if log:
        print_report(report, log)
    return report


def _filter_params(size, anchor, ties, ignore_index, backend) -> FilterParams:
    """Validate the filter settings and resolve the backend once, before touching any file
    (without running the filter; each mask's dtype is checked against ignore_index later)."""
    ignore_index = check_ignore(ignore_index)
    checked = mode_params(size, anchor=anchor, ties=ties,
                          ignore_index=AUTO_IGNORE if ignore_index == "auto" else ignore_index)
    return FilterParams(checked.size, checked.anchor, checked.ties,
                        "auto" if ignore_index == "auto" else checked.ignore_index,
                        _backend.resolve(backend))


def _folder_source(src: Path, dst: Path, params: FilterParams, resume):
    """(per-file function, items, classes, labels.json text or None) of a folder SRC."""
    files = list_masks(src)
    classes = _classes_of_folder(src)
    fn = functools.partial(_resample_png, _FolderTask(str(src.resolve()),
                                                      str(dst.resolve()), params,
                                                      bool(resume)))
    labels_json = (src / "labels.json").read_text() if classes else None
    return fn, files, classes, labels_json


def _coco_source(src: Path, dst: Path, params: FilterParams, resume, flatten, palette,
                 check_images, on_invalid, crowd, log):
    """(index, per-image function, items, classes, labels.json text) of a COCO SRC; logs
    the class table."""
    try:
        index = open_index(src, on_invalid, crowd)
    except CocoError as exc:
        raise DatasetError(str(exc)) from None
    names = output_names(index, flatten)
    classes = list(index.table.classes)
    task = _CocoTask(str(dst.resolve()), str(index.root.resolve()),
                     dict(index.table.category_to_label), index.table.dtype.str,
                     resolve_palette(palette, index.table), params, bool(resume),
                     bool(check_images), crowd)
    fn = functools.partial(_resample_coco, task)
    items = [(img, anns, name) for (img, anns), name in zip(index.items(), names)]
    labels_json = json.dumps(index.table.to_json(), indent=1) + "\n"
    if log:
        for line in index.table.describe():
            log(line)
    return index, fn, items, classes, labels_json


def _run(fn, items, nworkers, engine, progress) -> tuple[Tally, PeakTally, float]:
    """Map `fn` over `items` on the engine: (tally, memory peaks, seconds). A user error in a
    worker becomes a DatasetError; a bug keeps its traceback."""
    t0 = time.perf_counter()
    tally = Tally(["left", "joined"])
    peaks = PeakTally()
    with single_threaded_kernels(engine == "local" and nworkers == 1):
        map_masks(fn, items, nworkers, engine, "resample", progress, tally, peaks)
    return tally, peaks, time.perf_counter() - t0


def _report(src, dst, tally, seconds, params, workers, engine, classes, stale) -> dict:
    n = max(len(tally.vector("left")), len(tally.vector("joined")))
    left, joined = tally.vector("left", n), tally.vector("joined", n)
    names = class_table(classes, n)
    per_class = [{"label": k, "class": names[k], "left": int(left[k]),
                  "joined": int(joined[k])} for k in range(n) if left[k] or joined[k]]
    phases = tally.phases
    busy = sum(phases.values())
    pixels = tally.pixels
    return {
        "job": "resample", "src": str(src), "dst": str(dst), **tally.rates(seconds),
        "changed": int(left.sum()),
        "changed_fraction": float(left.sum() / pixels) if pixels else 0.0,
        "changed_per_class": per_class,
        "phase_seconds": phases,
        "phase_share": {k: v / busy for k, v in phases.items()} if busy else {},
        "temporaries_removed": stale,
        "params": {**asdict(params), "engine": engine, "workers": workers},
        "ignore_index": _ignore_used(params.ignore_index, tally),
    }


def _ignore_used(ignore, tally) -> dict:
    """Which ignore value the run used, for the report."""
    if ignore != "auto":
        return {"setting": ignore, "value": ignore}
    found = tally.flags.get("auto_ignored", 0)
    return {"setting": "auto", "value": AUTO_IGNORE if found else None, "masks": found}


def describe_ignore(used: dict, files: int) -> str:
    """One line: the ignore value used and why."""
    if used["setting"] == "auto":
        if used["value"] is None:
            return (f"ignore value: none (auto: no mask holds {AUTO_IGNORE}; every value "
                    "votes)")
        return (f"ignore value: {AUTO_IGNORE} (auto: held by {used['masks']} of {files} masks; "
                f"--ignore-index none lets it vote)")
    if used["value"] is None:
        return "ignore value: none (every value votes)"
    return f"ignore value: {used['value']}"


def print_report(report: dict, log: Callable[[str], Any] = print) -> None:
    summary_lines(report, log)
    log(f"    changed {report['changed']} of {report['pixels']} pixels "
        f"({100 * report['changed_fraction']:.2f}%); "
        f"{describe_ignore(report['ignore_index'], report['files'])}")
    if report["changed_per_class"]:
        log(f"    {'label':>5s}  {'class':16s} {'left':>10s} {'joined':>10s}")
        for row in report["changed_per_class"]:
            log(f"    {row['label']:5d}  {row['class'][:16]:16s} {row['left']:10d} "
                f"{row['joined']:10d}")
    share = report["phase_share"]
    if share:
        log("    time per phase (summed over workers): " + ", ".join(
            f"{k} {100 * v:.0f}%" for k, v in sorted(share.items(), key=lambda kv: -kv[1])))
    if "crowd" in report:  # a COCO SRC
        coco_summary(report, log)
    if "memory" in report:
        log(f"    {describe_memory(report['memory'])}")
    log(f"    report: {Path(report['dst']) / REPORT_NAME}")
