"""`segkit.tune`: choose ensemble weights, a per-class bias and the CRF on out-of-fold (OOF)
predictions, by dataset mIoU, and write the setting it measured.

Each model is a confidence store, or a store set of its fold stores (``a_fold0,a_fold1``:
every fold's model wrote its own validation images), so the models' probabilities cover the
training images without having seen them. Against the ground-truth masks, in stages (each a
function below; the options are one record, :class:`TuneOptions`):

1. **Split** (:func:`split_stems`). A seeded fraction (`holdout`) of the OOF images is set
   aside: the weight, bias and CRF fits never see it.
2. **Read** (:func:`read_search`), one parallel pass: each search image is read once, for the
   search (its settled pixels counted, the others kept: :mod:`segkit.jobs._tune_pixels`) and,
   when it is one of the CRF fit's images, for the fit.
3. **Weights and bias** (:func:`search_weights`; `search` holds "weights" and/or "bias"): a
   seeded coordinate search (:mod:`segkit.jobs._tune_search`), each candidate one pass of the
   fused :func:`segkit.vote_confusion` kernel over the pixels a candidate can change (exact).
4. **CRF** ("crf" in `search`, `images` needed, torch needed): a ConvCRF fitted by gradient
   on crops of the fit's images with the tuned weights and bias frozen
   (:func:`segkit.jobs._tune_crf.fit_crf`). The candidates are "off", the presets "convcrf"
   and "seed" (:meth:`segkit.jobs.settings.EnsembleSetting.preset`) and "fitted".
5. **Held-out measurement** (:func:`measure_holdout`), one parallel pass over the held-out
   images, through the code ``segkit ensemble --tuned`` runs
   (:class:`segkit.jobs.settings.EnsembleSetting`): equal weights, the recipe (equal weights +
   the "seed" CRF, with `images`), and every CRF candidate with the tuned weights and bias.
   The held-out images choose the CRF candidate (ties go to the simpler one, in the order
   above); that setting is written and its held-out mIoU is reported as "tuned". (Choosing on
   the figure it reports makes it slightly optimistic: the best of at most four.)
6. **Refit** (:func:`refit_all`, ``refit=True``): weights and bias searched again on all OOF
   images, reported in a separate ``refit`` block with its own (all-OOF, no CRF) figures; not
   written as the setting.
7. **Write** (:func:`write_result`): ``OUT/tuned.json`` (the setting, metrics, history, the
   CRF fit's record, the options; :func:`segkit.jobs.settings.write_tuned`) and
   ``OUT/tuning.png``.
"""
from __future__ import annotations

import contextlib
import datetime
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .._backend import OP_BACKENDS, resolve
from ..errors import InputError, PathNotFoundError
from ..io.store import common_stems, open_stores, store_identity
from ._stores import StoreReader, mask_index
from ._tune_crf import CANDIDATES, crf_candidates, fit_crf, fit_draw, require_torch
from ._tune_options import SEARCHES, TuneOptions, parse_search, tune_options
from ._tune_pixels import (PixelReader, PixelSet, SearchReader, miou_of, scores_dict,
                           setting_confusions)
from ._tune_report import TuneResult, fmt_miou, plot
from ._tune_search import CoordinateSearch
from .engine import map_items
from .settings import EnsembleSetting, write_tuned

__all__ = ["tune", "TuneOptions", "parse_search", "SEARCHES"]


@dataclass
class OofData:
    """What the stages share: the options, the opened stores, the OOF stems with a mask, the
    pixel reader and the engine's resolved worker count."""
    options: TuneOptions
    opened: list
    classes: list[str]
    stems: list[str]
    reader: PixelReader
    workers: int
    say: Callable[[str], Any]
    timings: list[float] = field(default_factory=list)

    @property
    def images(self) -> str | None:
        """The images folder as text (what the workers get), or None."""
        return None if self.options.images is None else str(self.options.images)


def search_backend(backend: str) -> str:
    """The backend of the search's kernels (settled_pixels, vote_confusion: numpy and numba
    only) for tune's `backend`: numpy is the reference, every other name their fast kernel."""
    return backend if backend in OP_BACKENDS["vote_confusion"] else "auto"


def _check_run(gt, options: TuneOptions) -> int:
    """The checks that need no store, before any file is read; returns the worker count."""
    from ._common import check_engine

    workers = check_engine(options.engine, options.workers)
    if "crf" in options.search and options.images is None:
        raise InputError("search 'crf' needs the images: pass images=<folder> (--images)")
    if "crf" in options.search:
        require_torch()
    if options.images is not None and not Path(options.images).is_dir():
        raise PathNotFoundError(f"images folder {options.images} does not exist")
    if not Path(gt).is_dir():
        raise PathNotFoundError(f"gt: no such folder {gt}")
    resolve(options.backend)  # BackendUnavailableError before anything is read
    return workers


def open_oof(models: Sequence[Any], gt, options: TuneOptions,
             say: Callable[[str], Any]) -> OofData:
    """Check the options' paths and engine, open the stores and pair their stems with masks
    (and images); nothing is read yet."""
    workers = _check_run(gt, options)
    opened = open_stores(models, name="models")
    _check_distinct(opened)
    classes = opened[0].classes
    stems, masks = _oof_stems(opened, gt)
    if options.images is not None:
        _check_images(options.images, stems)
    reader = PixelReader(StoreReader(opened), masks, len(classes), options.ignore_index,
                         math.exp(2 * options.bias_bound) * (1 + 1e-3),
                         search_backend(options.backend))
    return OofData(options, opened, classes, stems, reader, workers, say)


def split_stems(stems: Sequence[str], holdout: float,
                rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(search stems in `stems`' order, held-out stems sorted): a seeded `holdout` fraction,
    at least one image on each side."""
    order = rng.permutation(len(stems))
    n_hold = min(len(stems) - 1, max(1, int(round(holdout * len(stems)))))
    hold = sorted(stems[i] for i in order[:n_hold])
    held = set(hold)
    return [s for s in stems if s not in held], hold


def read_search(run: OofData, search: Sequence[str], hold: Sequence[str],
                fit: Sequence[str]) -> tuple[PixelSet, PixelSet | None, list, float]:
    """The one read of the search images (and of the held-out ones when `hold` is given: the
    refit's): their PixelSets, the fit's images `fit` (a subset of `search`; FitImage, by
    stem) and the seconds it took."""
    o, m, c = run.options, len(run.opened), len(run.classes)
    t = time.perf_counter()
    parts = list(map_items(SearchReader(run.reader, run.images, fit), list(search) + list(hold),
                           workers=run.workers, engine=o.engine, desc="tune: read",
                           unit="image", progress=o.progress))
    seconds = time.perf_counter() - t
    held = set(hold)
    backend = search_backend(o.backend)
    pix = PixelSet.join([p for p, _ in parts if p[0] not in held], m, c, backend)
    pix_hold = PixelSet.join([p for p, _ in parts if p[0] in held], m, c, backend) \
        if hold else None
    fit_images = sorted((f for _, f in parts if f is not None), key=lambda f: f.stem)
    if pix.pixels == 0:
        raise InputError(f"the {len(search)} search images have no pixel to count: every "
                         f"mask pixel is ignore_index ({o.ignore_index}) or outside the images")
    run.say(f"    read in {seconds:.1f} s: {pix.kept:,} of {pix.pixels:,} search pixels can "
            f"change label ({100 * pix.kept / max(pix.pixels, 1):.1f}%; kept in memory, "
            f"{pix.kept * m * c * 2 / 2**20:,.0f} MiB)")
    return pix, pix_hold, fit_images, seconds


def search_weights(run: OofData, pix: PixelSet, rng: np.random.Generator, history: list, *,
                   start: tuple | None = None, stage: str = "search"):
    """The coordinate search of weights and bias on `pix` from `start` (equal weights, zero
    bias by default): (weights, bias or None, its mIoU, candidates used)."""
    o, m, c = run.options, len(run.opened), len(run.classes)

    def objective(w, b):
        t = time.perf_counter()
        value = miou_of(pix.confusion(w, b))
        run.timings.append(time.perf_counter() - t)
        return value

    searcher = CoordinateSearch(objective, rng, "weights" in o.search, "bias" in o.search,
                                float(o.bias_bound), int(o.budget), history, stage=stage)
    if start is None:
        start = (np.full(m, 1.0 / m), None)
    w0, b0 = start
    if b0 is None and "bias" in o.search:
        b0 = np.zeros(c)
    w, b, best = searcher.run(w0, b0)
    return w, b, best, searcher.used


def measure_holdout(run: OofData, hold: Sequence[str], weights, bias,
                    candidates: dict) -> dict:
    """Every setting on the held-out images in one parallel pass: the metrics block (equal,
    recipe, tuned; the CRF candidates) with the chosen candidate under ``crf_choice``."""
    o, m, classes = run.options, len(run.opened), run.classes
    equal = np.full(m, 1.0 / m)
    measured = {"equal": EnsembleSetting(equal)}
    if o.images is not None:  # the original recipe: equal weights, the seed CRF
        measured["recipe"] = EnsembleSetting.preset("seed", weights=equal)
    measured.update({f"crf:{k}": EnsembleSetting.from_tuned(
        {"weights": weights, "bias": bias, "crf": v, "classes": classes})
        for k, v in candidates.items()})
    cms = dict(zip(measured, setting_confusions(
        run.reader, run.images, hold, list(measured.values()), workers=run.workers,
        engine=o.engine, progress=o.progress, desc="tune: hold-out", backend=o.backend)))
    if not cms["equal"].any():
        raise InputError(f"the {len(hold)} held-out images have no pixel to count: every mask "
                         f"pixel is ignore_index ({o.ignore_index}); nothing is written")
    scored = {k[4:]: scores_dict(cms[k], classes) for k in measured if k.startswith("crf:")}
    name = max(scored, key=lambda k: (scored[k]["miou"], -CANDIDATES.index(k)))
    crf_search = "crf" in o.search
    metrics = {"holdout": {"equal": scores_dict(cms["equal"], classes),
                           "recipe": scores_dict(cms["recipe"], classes)
                           if "recipe" in cms else None,
                           "tuned": scored[name]},
               "crf_candidates": scored if crf_search else None,
               "crf_choice": name, "holdout_images": len(hold),
               "search_images": len(run.stems) - len(hold),
               "recipe_note": None if o.images is not None else
               "not measured: the recipe's ConvCRF needs --images"}
    if crf_search:
        run.say("    held-out mIoU of the CRF candidates: " + ", ".join(
            f"{k} {v['miou']:.4f}" for k, v in scored.items()) + f" -> {name}")
    run.say("    held-out mIoU: " + ", ".join(f"{k} {fmt_miou(v)}"
                                              for k, v in metrics["holdout"].items()))
    return metrics


def refit_all(run: OofData, pix_all: PixelSet, rng: np.random.Generator, history: list,
              weights, bias) -> dict:
    """Weights and bias searched again on all OOF images from the tuned values: the
    ``refit`` block (reported, not written as the setting)."""
    m = len(run.opened)
    w_all, b_all, best, used = search_weights(run, pix_all, rng, history, stage="refit",
                                              start=(weights, bias))
    run.say(f"    refit on all {len(run.stems)} OOF images (reported, not written): mIoU "
            f"{best:.4f} ({used} candidates)")
    return {"weights": [float(v) for v in w_all],
            "bias": None if b_all is None or not np.any(b_all) else [float(v) for v in b_all],
            "oof_miou": best, "oof_equal_miou": miou_of(pix_all.confusion(np.full(m, 1.0 / m),
                                                                           None)),
            "note": "weights and bias searched again on all OOF images (search + hold-out) "
                    "from the tuned values, without CRF; its figures are on the images it was "
                    "fitted on. Not the written setting: ensemble --tuned applies weights, "
                    "bias and crf above."}


def tune(models: Sequence[Any], gt: str | Path, out: str | Path,
         options: TuneOptions | None = None, *, log: Callable[[str], Any] | None = print,
         **settings: Any) -> TuneResult:
    """Tune ensemble weights, a per-class bias and the CRF on out-of-fold predictions.

    Parameters
    ----------
    models : sequence of stores, store sets or their paths
        One entry per model, in the order ``segkit ensemble --tuned`` will get the test
        stores; a model's fold stores join with commas (``"stores/a_f0,stores/a_f1"``).
    gt : path
        Ground-truth label PNGs; ``dir/name.png`` and ``dir+name.png`` match stem ``dir+name``.
    out : path
        Folder for ``tuned.json`` and ``tuning.png``.
    options : TuneOptions, optional
        The options (defaults: ``TuneOptions()``); see :class:`segkit.jobs.tune.TuneOptions`
        (images, search, holdout, budget, seed, bias_bound, crf_images, crf_crop, crf_batch,
        crf_steps, crf_lr, refit, ignore_index, workers, engine, backend, progress).
    log : callable or None
        Receives the progress lines (default print).
    **settings
        Options by name, replacing those of `options` (``search="weights,bias,crf"``).

    Returns
    -------
    TuneResult
        weights, bias, crf (the written setting), crf_name, metrics (held-out scores of
        "equal", "recipe", "tuned" and of every CRF candidate), history, crf_fit, refit.

    Raises
    ------
    InputError, InputTypeError
        A bad option (named, with its value), before any file is read.
    PathNotFoundError, BackendUnavailableError, MissingPackageError
        A missing folder or image, a backend this machine lacks, torch for the CRF fit.

    Examples
    --------
    >>> r = segkit.tune(["oof/a_f0,oof/a_f1", "oof/b_f0,oof/b_f1"], "data/masks", "tuned",
    ...                 images="data/images", search="weights,bias,crf")  # doctest: +SKIP
    >>> r.weights, r.crf_name, r.metrics["holdout"]["tuned"]["miou"]     # doctest: +SKIP
    """
    t0 = time.perf_counter()
    torch_threads = _torch_threads()  # before any kernel runs (see _kernel_threads)
    o = tune_options(options, settings)
    run = open_oof(models, gt, o, log or (lambda s: None))
    rng = np.random.default_rng(o.seed)
    search, hold = split_stems(run.stems, o.holdout, rng)
    run.say(f"tune: {len(run.opened)} models x {len(run.classes)} classes, {len(run.stems)} OOF "
            f"images: {len(search)} for the search, {len(hold)} held out (seed {o.seed}); "
            f"search {', '.join(o.search)}")
    fit_stems, fit_rng = fit_draw(search, o.seed, o.crf_images) if "crf" in o.search \
        else ([], None)
    pix, pix_hold, fit_images, t_read = read_search(run, search, hold if o.refit else [],
                                                    fit_stems)
    history: list = []
    with _kernel_threads(run, torch_threads):
        w, b, best, used = search_weights(run, pix, rng, history)
        run.say(f"    search: {used} candidates, {np.mean(run.timings) * 1e3:.1f} ms each; "
                f"search-set mIoU {history[0]['miou']:.4f} (equal) -> {best:.4f}")
        b = None if b is not None and not np.any(b) else b
        fitted, crf_fit = fit_crf(fit_images, fit_rng, w, b, options=o.fit(), say=run.say,
                                  backend=o.backend) if "crf" in o.search else (None, None)
        candidates = crf_candidates(fitted) if "crf" in o.search else {"off": None}
        metrics = measure_holdout(run, hold, w, b, candidates)
        refit = refit_all(run, pix + pix_hold, rng, history, w, b) if o.refit else None
        per_candidate = float(np.median(run.timings)) if run.timings else float("nan")
    result = TuneResult(
        out=Path(out), weights=[float(v) for v in w],
        bias=None if b is None else [float(v) for v in b],
        crf=candidates[metrics["crf_choice"]], metrics=metrics, history=history,
        crf_name=metrics["crf_choice"], crf_fit=crf_fit, refit=refit,
        seconds=time.perf_counter() - t0,
        info={"images": len(run.stems), "holdout_images": len(hold), "kept_pixels": pix.kept,
              "pixels": pix.pixels, "seconds_per_candidate": per_candidate,
              "read_seconds": t_read})
    write_result(result, run, gt, hold)
    return result


def write_result(result: TuneResult, run: OofData, gt, hold: Sequence[str]) -> None:
    """``tuned.json`` (the setting, what it was measured with and how) and ``tuning.png``."""
    write_tuned(result.out, {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "models": [store_identity(s) for s in run.opened], "classes": run.classes,
        "weights": result.weights, "bias": result.bias, "crf": result.crf,
        "crf_name": result.crf_name, "metrics": result.metrics, "crf_fit": result.crf_fit,
        "refit": result.refit, "settings": run.options.tuned_settings(gt),
        "holdout_stems": list(hold), "timing": {**result.info, "seconds": result.seconds},
        "history": result.history})
    plot(result.out / "tuning.png", result.history, result.metrics, run.classes,
         None if result.crf_fit is None else result.crf_fit["loss"])


@contextlib.contextmanager
def _kernel_threads(run: OofData, torch_threads: int | None):
    """The search's kernel threads (`workers` on the local engine); the caller's kernel and
    torch thread counts restored afterwards (Numba's OpenMP layer shares torch's)."""
    from .._backend import get_num_threads, set_num_threads

    before = get_num_threads()
    set_num_threads(run.workers if run.options.engine == "local" else 0)
    try:
        yield
    finally:
        set_num_threads(before)
        _torch_threads(torch_threads)


def _oof_stems(opened, gt) -> tuple[list[str], dict[str, str]]:
    stems, missing = common_stems(opened)
    masks = {k: str(v) for k, v in mask_index(gt).items()}
    no_mask = [s for s in stems if s not in masks]
    stems = [s for s in stems if s in masks]
    if missing:
        text = "; ".join(f"{root} lacks {len(s)} (e.g. {', '.join(s[:3])})"
                         for root, s in missing.items())
        warnings.warn(f"tuning on the {len(stems)} images present in every model; {text}",
                      stacklevel=4)
    if no_mask:
        warnings.warn(f"{len(no_mask)} images have no mask in {gt} (e.g. {no_mask[0]}); "
                      "they are left out", stacklevel=4)
    if len(stems) < 2:
        raise InputError(f"need at least 2 OOF images with a mask in {gt}; found {len(stems)}")
    return stems, masks


def _torch_threads(restore: int | None = None) -> int | None:
    """torch's thread count if torch is imported (None otherwise); sets it to `restore`."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):
        return None
    if restore is not None:
        torch.set_num_threads(restore)
    return torch.get_num_threads()


def _check_distinct(opened) -> None:
    """InputError when one store is given as two models (or in two models' store sets): the
    search would weigh one model twice."""
    seen: dict[str, int] = {}
    for i, model in enumerate(opened):
        for part in getattr(model, "parts", [model]):
            root = str(part.root.resolve())
            if root in seen and seen[root] != i:
                raise InputError(f"models {seen[root] + 1} and {i + 1} both hold the store "
                                 f"{root}: give each model once")
            seen[root] = i


def _check_images(images, stems: Sequence[str]) -> None:
    """Every OOF image is found in `images` before anything is read (the hold-out measures the
    recipe's CRF on them, the CRF fit crops them): PathNotFoundError naming the missing."""
    from ..io.images import find_image

    missing = []
    for stem in stems:
        try:
            find_image(images, stem)
        except FileNotFoundError:
            missing.append(stem)
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise PathNotFoundError(f"images folder {images} has no image for {len(missing)} of the "
                                f"{len(stems)} OOF images: {', '.join(missing[:3])}{more}")
