"""``segkit.audit``: find the wrong masks, pixel by pixel, from out-of-fold probabilities.

Confident learning as cleanlab 2.9's ``cleanlab.segmentation`` on its defaults (see
:mod:`segkit.ops.label_issues`), streamed image by image over confidence stores (several
stores are averaged first, as ``segkit ensemble`` does), for images of any sizes, with memory
flat in the dataset size. Beside it, model-free signals of each mask: pixels a 3x3 mode filter
would change, pixels in islands or holes smaller than `min_region`, labels outside the class
list.

Passes (each image by image on the engine's workers; the confident learning itself is one
:class:`~segkit.ops.label_inspector.LabelInspector`, as in :func:`segkit.label_issues`: this
module keeps the reading, the cache and the report):

1. per-class sums of the self-confidence (thresholds), and the model-free signals;
2. per-pixel scores, the image's softmin quality, the estimated number of issues, and a
   65536-bin histogram of the scores' order keys; each image's scores, candidate flags and
   argmax go to a scratch cache on disk (``OUT/.cache``: 6 bytes per pixel, removed at the end);
3. the cutoff: the histogram gives the bin of the T-th lowest score; only the scores in that
   bin are gathered (from the cache) to find it exactly;
4. flags, issue masks, corrected masks, pictures of the worst images.

Memory: one image per worker plus the 65536-bin histogram (512 KB) and the scores of one
histogram bin; disk: the cache. The global ranking therefore costs no memory per pixel.

Output folder::

    OUT/audit.csv            one row per image, worst (lowest quality) first
    OUT/issues/<stem>.png    issue mask (0 / 255)
    OUT/index.html           the worst `top` images (photo, annotation, prediction, issues) and
                             a sortable table of all images
    OUT/pictures/<stem>.png  the panels the page shows
    OUT/audit.json           settings and totals
    FIX/...                  with `fix` (the gt folder's layout): the annotation with the
                             flagged pixels where the model
                             confidently disagrees replaced by its prediction
"""
from __future__ import annotations

import io
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError, PathNotFoundError
from ..io import atomic
from ..io.masks import read_mask, write_mask
from ..io.store import ConfidenceStore, common_stems, open_stores, store_identity
from ..ops import label_issues_cutoff as cutoffs
from ..ops.label_inspector import LabelInspector
from ..ops.mode_filter import mode_filter
from ._audit_page import picture, write_csv, write_html
from ._stores import StoreReader, find_mask, mask_of
from .settings import EnsembleSetting

CACHE = ".cache"


@dataclass
class AuditReport:
    """What one audit run found."""
    out: Path
    images: int = 0
    pixels: int = 0
    issues: int = 0                     # flagged pixels
    estimated: int = 0                  # cleanlab's estimated number of issues (T)
    thresholds: list[float] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)    # audit.csv, worst first
    missing: dict[str, list[str]] = field(default_factory=dict)
    fixed: int = 0                      # pixels changed in the fixed masks
    seconds: float = 0.0

    def __str__(self) -> str:
        worst = ", ".join(f"{r['stem']} ({r['quality']:.3f})" for r in self.rows[:3])
        return (f"audit: {self.images} images, {self.pixels} pixels: {self.issues} flagged "
                f"({self.estimated} estimated issues); worst: {worst}; in "
                f"{self.seconds:.1f} s -> {self.out / 'index.html'}"
                + (f"\n  fixed masks: {self.fixed} pixels changed" if self.fixed else ""))


def small_region_pixels(mask: np.ndarray, min_region: int, ignore: int | None) -> int:
    """Pixels in 4-connected regions of one label smaller than `min_region` (islands, and
    holes: a hole is an island of the label inside)."""
    if min_region <= 1:
        return 0
    from scipy import ndimage

    total = 0
    for value in np.unique(mask):
        if ignore is not None and value == ignore:
            continue
        regions, count = ndimage.label(mask == value)
        if count == 0:
            continue
        sizes = np.bincount(regions.ravel())[1:]
        total += int(sizes[sizes < min_region].sum())
    return total


class _Work:
    """Per-image work of each pass (picklable: it crosses process and Ray boundaries)."""

    def __init__(self, reader, weights, gt, out, num_classes, ignore, min_region, temperature,
                 backend):
        self.reader, self.weights, self.gt, self.out = reader, weights, gt, out
        self.num_classes, self.ignore, self.min_region = num_classes, ignore, min_region
        self.temperature, self.backend = temperature, backend
        #: a detached copy of the run's LabelInspector, as of the pass (see :func:`_audit`)
        self.inspector: LabelInspector | None = None

    def cache(self, stem: str) -> Path:
        return Path(self.out) / CACHE / f"{stem}.npz"

    def mean_probs(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """(argmax labels, mean probabilities float32 (C, H, W)) over the stores: the vote of
        the ensemble setting of the weights (no bias, no CRF)."""
        probs = self.reader.read(stem)
        labels, mean = EnsembleSetting(self.weights).vote(probs, return_probs=True,
                                                          backend=self.backend)
        return np.asarray(labels), np.asarray(mean, np.float32)

    def annotation(self, stem: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(the mask as read, the labels the audit scores: outside-class labels -> ignore)."""
        mask = mask_of(stem, find_mask(Path(self.gt), stem), shape)
        lab = mask.astype(np.int32)
        outside = (lab >= self.num_classes) & (lab != self.ignore)
        lab[outside] = self.ignore
        return mask, lab

    # ---- pass 1
    def sums(self, stem: str) -> dict:
        _, mean = self.mean_probs(stem)
        mask, lab = self.annotation(stem, mean.shape[1:])
        s, k = self.inspector.sums(lab, mean)
        outside = int(((mask.astype(np.int64) >= self.num_classes)
                       & (mask.astype(np.int64) != self.ignore)).sum())
        modal = mode_filter(mask, 3, ignore_index=self.ignore)
        return {"stem": stem, "sums": s, "counts": k, "outside_classes": outside,
                "mode_changes": int((modal != mask).sum()),
                "small_region_pixels": small_region_pixels(mask, self.min_region, self.ignore),
                "ignored": int((lab == self.ignore).sum()), "pixels": int(mask.size),
                "height": int(mask.shape[0]), "width": int(mask.shape[1])}

    # ---- pass 2
    def scores(self, stem: str) -> dict:
        pred, mean = self.mean_probs(stem)
        mask, lab = self.annotation(stem, mean.shape[1:])
        sc, cand, hist, counted = self.inspector.score(lab, mean)
        quality = float(self.inspector.quality(sc, self.temperature)[0])
        confident = self.inspector.reaches_threshold(pred, mean.max(0))
        code = cand.astype(np.uint8) * np.where(confident, 2, 1).astype(np.uint8)
        dtype = np.uint8 if self.num_classes <= 256 else np.uint16
        buf = io.BytesIO()
        np.savez(buf, scores=sc, candidates=code, pred=pred.astype(dtype))
        atomic.write_bytes(self.cache(stem), buf.getvalue())
        bins = np.flatnonzero(hist)
        valid = lab != self.ignore
        agreement = float((pred[valid] == lab[valid]).mean()) if valid.any() else float("nan")
        return {"stem": stem, "quality": quality, "counted": counted, "bins": bins,
                "bin_counts": hist[bins], "model_agreement": agreement}

    def load(self, stem: str):
        with np.load(self.cache(stem)) as z:
            return z["scores"], z["candidates"], z["pred"]

    # ---- pass 3
    def gather(self, item: tuple[str, int]) -> tuple[str, np.ndarray]:
        stem, b = item
        sc, _, _ = self.load(stem)
        return stem, sc[cutoffs.in_bin(sc, b)]


class _Flag:
    """Pass 4: flags, issue mask, fixed mask and picture of one image."""

    def __init__(self, work: _Work, fix: str | None, pictures: set[str], images: str | None):
        self.work = work
        self.fix, self.pictures, self.images = fix, pictures, images

    def __call__(self, stem: str) -> dict:
        w = self.work
        sc, code, pred = w.load(stem)
        flags = w.inspector.issues(sc, code, chunk=stem)
        out = Path(w.out)
        write_mask(out / "issues" / f"{stem}.png", flags.astype(np.uint8) * 255,
                   compress_level=1)
        fixed = 0
        mask = None
        if self.fix is not None or stem in self.pictures:
            found = find_mask(Path(w.gt), stem)
            mask, pal = read_mask(found, with_palette=True)
        if self.fix is not None:
            change = flags & (code == 2)
            new = np.where(change, pred.astype(mask.dtype), mask)
            fixed = int(change.sum())
            path = Path(self.fix) / found.relative_to(w.gt)  # the gt folder's layout
            path.parent.mkdir(parents=True, exist_ok=True)
            # the annotation's own format: its palette (or none), its bit depth
            write_mask(path, new, pal if mask.dtype == np.uint8 else None, compress_level=1)
        if stem in self.pictures:
            picture(out / "pictures" / f"{stem}.png", stem, mask, pred, flags, w.num_classes,
                    self.images)
        return {"stem": stem, "issue_pixels": int(flags.sum()), "fixed": fixed}


def audit(stores: Sequence[ConfidenceStore | str | Path], gt: str | Path, out: str | Path, *,
          images: str | Path | None = None, top: int = 20, fix: str | Path | None = None,
          weights: Sequence[float] | None = None, ignore_index: int = 255,
          min_region: int = 16, temperature: float = 0.1, workers: int | None = None,
          engine: str = "local", backend: str = "auto", progress: bool = True) -> AuditReport:
    """Audit annotation masks against out-of-fold probabilities; write a report folder.

    Parameters
    ----------
    stores : sequence of ConfidenceStore, StoreSet or paths
        Out-of-fold predictions, one entry per model: a confidence store, or a store set (one
        model's fold stores, their paths joined with commas: ``"oof/a_f0,oof/a_f1"``), all of
        one class list; several models are averaged (weights as in :func:`segkit.soft_vote`).
        Images are the stems in every entry (others are reported in ``report.missing``).
        Image sizes may differ from image to image.
    gt : path
        Folder of annotation PNGs (``dir/name.png`` for stem ``dir+name``, or ``<stem>.png``).
    out : path
        Report folder: ``audit.csv``, ``issues/``, ``index.html``, ``pictures/``, ``audit.json``.
    images : path, optional
        Photo folder for the page (``dir/name.jpg`` ...); without it the panels show masks only.
    top : int
        How many of the worst images the page shows with pictures.
    fix : path, optional
        Write corrected masks there: flagged pixels whose predicted class reaches its
        confidence threshold take the prediction.
    ignore_index : int
        Annotation label that is not audited (labels outside the class list are audited as
        ignored, and counted in ``outside_classes``).
    min_region : int
        Islands and holes below this many pixels count in ``small_region_pixels``.
    temperature : float
        Softmin temperature of the image quality (cleanlab's 0.1).
    workers, engine : parallelism (see :func:`segkit.jobs.engine.map_items`).
    backend : the kernels' backend ("auto": the fastest here).

    Returns
    -------
    AuditReport

    Examples
    --------
    >>> report = segkit.audit(["oof/swin_a", "oof/swin_b"], "data/masks",  # doctest: +SKIP
    ...                       "audit", images="data/images", top=30, fix="data/masks_fixed")
    """
    from ._common import check_engine, single_threaded_kernels

    t0 = time.perf_counter()
    nworkers = check_engine(engine, workers)
    with single_threaded_kernels(engine == "local" and nworkers == 1):
        try:
            return _audit(stores, gt, out, images, top, fix, weights, ignore_index, min_region,
                          temperature, workers, engine, backend, progress, t0)
        finally:  # the scratch cache (6 bytes per pixel) never outlives the run
            shutil.rmtree(Path(out) / CACHE, ignore_errors=True)


def _audit(stores, gt, out, images, top, fix, weights, ignore_index, min_region, temperature,
           workers, engine, backend, progress, t0) -> AuditReport:
    from ..ops.soft_vote import check_weights
    from .engine import map_items

    opened = open_stores(stores)
    check_weights(weights, len(opened))
    gt, out = _check_arguments(gt, out, images, top, fix, ignore_index, min_region, temperature)
    classes = opened[0].classes
    c = len(classes)
    stems, missing = common_stems(opened)
    out.mkdir(parents=True, exist_ok=True)
    atomic.remove_temporaries(out)
    (out / CACHE).mkdir(exist_ok=True)
    (out / "issues").mkdir(exist_ok=True)
    work = _Work(StoreReader(opened), None if weights is None else list(weights),
                 str(gt), str(out), c, ignore_index, int(min_region), float(temperature),
                 backend)
    report = AuditReport(out=out, images=len(stems), missing=missing)
    kw = dict(workers=workers, engine=engine, unit="image", progress=progress)

    inspector = LabelInspector(c, ignore_index=ignore_index, backend=backend)
    rows = _pass_thresholds(work, inspector, stems, kw)
    _pass_scores(work, inspector, stems, rows, kw)
    _pass_cutoff(work, inspector, stems, kw)
    count = inspector.estimated

    # pass 4: flags, masks, pictures
    ranked = sorted(stems, key=lambda s: (np.nan_to_num(rows[s]["quality"], nan=np.inf), s))
    pictures = set(ranked[:top])
    if fix is not None:
        Path(fix).mkdir(parents=True, exist_ok=True)
    work.inspector = inspector.detached()
    flag = _Flag(work, None if fix is None else str(fix), pictures,
                 None if images is None else str(images))
    for r in map_items(flag, stems, desc="audit 4/4 flags", **kw):
        report.fixed += r.pop("fixed")
        rows[r["stem"]].update(r)
    shutil.rmtree(out / CACHE, ignore_errors=True)
    _remove_stale(out / "issues", set(stems))
    _remove_stale(out / "pictures", pictures)

    _fill_report(report, rows, ranked, count, inspector.thresholds)
    write_csv(out / "audit.csv", report.rows)
    write_html(out / "index.html", report, classes, ranked[:top])
    report.seconds = time.perf_counter() - t0
    atomic.write_json(out / "audit.json", {
        "stores": [store_identity(s) for s in opened], "gt": str(gt.resolve()),
        "weights": None if weights is None else [float(x) for x in weights],
        "classes": classes, "thresholds": report.thresholds, "estimated_issues": count,
        "flagged": report.issues, "pixels": report.pixels, "images": report.images,
        "fix": None if fix is None else str(fix), "fixed_pixels": report.fixed,
        "missing": missing, "seconds": report.seconds})
    return report


def _check_arguments(gt, out, images, top, fix, ignore_index, min_region,
                     temperature) -> tuple[Path, Path]:
    """Refuse bad folders and options; the gt and out folders as paths."""
    gt = Path(gt)
    if not gt.is_dir():
        raise PathNotFoundError(f"gt folder {gt} does not exist")
    if images is not None and not Path(images).is_dir():
        raise PathNotFoundError(f"images folder {images} does not exist")
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 0:
        raise InputError(f"top must be a non-negative integer; got {top!r}")
    if isinstance(min_region, bool) or not isinstance(min_region, (int, np.integer)) \
            or min_region < 0:
        raise InputError(f"min_region must be a non-negative integer; got {min_region!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise InputError(f"ignore_index must be an integer label; got {ignore_index!r}")
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise InputError(f"temperature must be a positive number; got {temperature!r}")
    out = Path(out)
    if fix is not None and Path(fix).resolve() in (gt.resolve(), out.resolve()):
        raise InputError(f"fix must be a new folder, not the gt or out folder; got {fix}")
    return gt, out


def _pass_thresholds(work: _Work, inspector: LabelInspector, stems: list[str],
                     kw: dict) -> dict[str, dict]:
    """Pass 1: the thresholds' tallies into `inspector`, and the model-free signals; the rows
    by stem."""
    from .engine import map_items

    rows: dict[str, dict] = {}
    work.inspector = inspector.detached()
    for r in map_items(work.sums, stems, desc="audit 1/4 thresholds", **kw):
        inspector.add_sums(r.pop("sums"), r.pop("counts"))
        rows[r["stem"]] = r
    return rows


def _pass_scores(work: _Work, inspector: LabelInspector, stems: list[str],
                 rows: dict[str, dict], kw: dict) -> None:
    """Pass 2: scores (to the cache), quality; the scores' tallies into `inspector`."""
    from .engine import map_items

    inspector.thresholds  # noqa: B018 - ends pass 1: the workers' copies carry them
    work.inspector = inspector.detached()
    for r in map_items(work.scores, stems, desc="audit 2/4 scores", **kw):
        inspector.add_scores(r.pop("bin_counts"), r.pop("counted"), bins=r.pop("bins"))
        rows[r["stem"]].update(r)


def _pass_cutoff(work: _Work, inspector: LabelInspector, stems: list[str], kw: dict) -> None:
    """Pass 3: the cutoff and the tie order, found by `inspector` from the scores of the one
    histogram bin it needs (gathered from the cache, by stem in flat order)."""
    from .engine import map_items

    def gather(b: int) -> dict[str, np.ndarray]:
        in_bin = dict(map_items(work.gather, [(s, b) for s in stems], desc="audit 3/4 cutoff",
                                **kw))
        return {s: in_bin[s] for s in stems}  # flat order: images in stem order

    inspector.find_cutoff(gather)


def _fill_report(report: AuditReport, rows: dict[str, dict], ranked: list[str], count: int,
                 thresholds: np.ndarray) -> None:
    """The issue fractions of the rows, and the report's rows (worst first) and totals."""
    for r in rows.values():
        valid = r["pixels"] - r["ignored"]
        r["issue_fraction"] = r["issue_pixels"] / valid if valid else 0.0
    report.rows = [rows[s] for s in ranked]
    report.pixels = int(sum(r["pixels"] for r in report.rows))
    report.issues = int(sum(r["issue_pixels"] for r in report.rows))
    report.estimated = int(count)
    report.thresholds = [float(t) for t in thresholds]


def _remove_stale(folder: Path, stems: set[str]) -> None:
    """Remove the <stem>.png files of an earlier run that this run did not write."""
    if folder.is_dir():
        for path in folder.glob("*.png"):
            if path.stem not in stems:
                path.unlink()
