"""`segkit.tune`: choose ensemble weights, a per-class bias and the CRF on out-of-fold (OOF)
predictions, by dataset mIoU, and write the setting it measured.

Each model is a confidence store, or a store set of its fold stores (``a_fold0,a_fold1``:
every fold's model wrote its own validation images), so the models' probabilities cover the
training images without having seen them. Against the ground-truth masks:

1. **Hold-out.** A seeded fraction (`holdout`) of the OOF images is set aside: the weight,
   bias and CRF fits never see it.
2. **Weights and bias** (`search` holds "weights" and/or "bias"): a seeded coordinate search
   (:mod:`segkit.jobs._tune_search`) on the search images, each candidate one pass of the
   fused :func:`segkit.vote_confusion` kernel over the pixels a candidate can change
   (:mod:`segkit.jobs._tune_pixels`: exact).
3. **CRF** ("crf" in `search`, `images` needed, torch needed): a ConvCRF fitted by gradient
   on crops of the search images with the tuned weights and bias frozen
   (:mod:`segkit.jobs._tune_crf`). The candidates are "off", the presets "convcrf" and
   "seed" (:func:`segkit.jobs.settings.crf_setting`) and "fitted".
4. **Held-out measurement**, one parallel pass over the held-out images, through the code
   ``segkit ensemble --tuned`` runs (:func:`segkit.jobs.settings.setting_labels`): equal
   weights, the recipe (equal weights + the "seed" CRF, with `images`), and every CRF
   candidate with the tuned weights and bias. The held-out images choose the CRF candidate
   (ties go to the simpler one, in the order above); that setting is written and its
   held-out mIoU is reported as "tuned". (Choosing on the figure it reports makes it
   slightly optimistic: the best of at most four.)
5. **Refit** (``refit=True``): weights and bias searched again on all OOF images, reported
   in a separate ``refit`` block with its own (all-OOF, no CRF) figures; not written as the
   setting.

Outputs: ``OUT/tuned.json`` (the setting, metrics, history, the CRF fit's record; written by
:func:`segkit.jobs.settings.write_tuned`) and ``OUT/tuning.png``.
"""
from __future__ import annotations

import datetime
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError, PathNotFoundError
from ..io.store import common_stems, open_stores, store_identity
from ._stores import StoreReader, mask_index
from ._tune_crf import CANDIDATES, crf_candidates, fit_crf, fit_options, require_torch
from ._tune_pixels import PixelReader, PixelSet, miou_of, scores_dict, setting_confusions
from ._tune_report import TuneResult, fmt_miou, plot
from ._tune_search import CoordinateSearch
from .engine import map_items
from .settings import recipe_crf, write_tuned

SEARCHES = ("weights", "bias", "crf")


def parse_search(search: Any) -> tuple[str, ...]:
    """The search keywords ("weights,bias" or a sequence) checked; InputError otherwise."""
    if isinstance(search, str):
        search = [s.strip() for s in search.split(",") if s.strip()]
    search = tuple(search)
    bad = [s for s in search if s not in SEARCHES]
    if bad or not search:
        raise InputError(f"search must name some of {', '.join(SEARCHES)}; got {search!r}")
    return search


def _check_numbers(holdout, budget, seed, bias_bound) -> None:
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or \
            not 0 < holdout < 1:
        raise InputError(f"holdout must be a fraction in (0, 1); got {holdout!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise InputError(f"budget must be an integer >= 1; got {budget!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0; got {seed!r}")
    if not isinstance(bias_bound, (int, float)) or not 0 < bias_bound <= 20:
        raise InputError(f"bias_bound must be in (0, 20]; got {bias_bound!r}")


def _oof_stems(opened, gt) -> tuple[list[str], dict[str, str]]:
    stems, missing = common_stems(opened)
    masks = {k: str(v) for k, v in mask_index(gt).items()}
    no_mask = [s for s in stems if s not in masks]
    stems = [s for s in stems if s in masks]
    if missing:
        text = "; ".join(f"{root} lacks {len(s)} (e.g. {', '.join(s[:3])})"
                         for root, s in missing.items())
        warnings.warn(f"tuning on the {len(stems)} images present in every model; {text}",
                      stacklevel=3)
    if no_mask:
        warnings.warn(f"{len(no_mask)} images have no mask in {gt} (e.g. {no_mask[0]}); "
                      "they are left out", stacklevel=3)
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


def tune(models: Sequence[Any], gt: str | Path, out: str | Path, *,
         images: str | Path | None = None, search: Sequence[str] | str = ("weights", "bias"),
         holdout: float = 0.2, budget: int = 200, seed: int = 0, workers: int | None = None,
         engine: str = "local", ignore_index: int | None = 255, bias_bound: float = 2.0,
         crf_images: int = 32, crf_crop: int = 128, crf_batch: int = 4, crf_steps: int = 400,
         crf_lr: float = 0.02, refit: bool = False, progress: bool = True,
         log: Callable[[str], Any] | None = print) -> TuneResult:
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
    images : path, optional
        The images (needed for the CRF and the recipe's CRF on the hold-out).
    search : {"weights", "bias", "crf"} subset (or "weights,bias"), default weights and bias
        "crf" fits a CRF by gradient (needs torch and `images`) and lets the held-out images
        choose among "off", the "convcrf" and "seed" presets and the fitted CRF.
    holdout : float in (0, 1), default 0.2
        Fraction of the OOF images set aside (seeded), never seen by the fits.
    budget : int, default 200
        Candidates of weights and bias per search (the refit gets the same).
    seed : int
        Seeds the hold-out draw, the coordinate order and the CRF fit (crops, torch).
    workers, engine : parallelism of the image reads and CRF runs; `workers` also sets the
        kernel threads of the search.
    ignore_index : int or None, default 255
    bias_bound : float, default 2.0
        Biases stay in [-bias_bound, bias_bound] (this bounds which pixels can change label).
    crf_images : int, default 32
        Search images (seeded) the CRF fit draws its crops from (held in memory).
    crf_crop, crf_batch, crf_steps, crf_lr : default 128, 4, 400, 0.02
        Crop side (at most the smallest fit image), crops per step, Adam steps, learning rate.
    refit : bool, default False
        Also search weights and bias again on all OOF images; reported in ``refit``, not
        written as the setting.
    progress : bool
    log : callable or None
        Receives the progress lines (default print).

    Returns
    -------
    TuneResult
        weights, bias, crf (the written setting), crf_name, metrics (held-out scores of
        "equal", "recipe", "tuned" and of every CRF candidate), history, crf_fit, refit.

    Examples
    --------
    >>> r = segkit.tune(["oof/a_f0,oof/a_f1", "oof/b_f0,oof/b_f1"], "data/masks", "tuned",
    ...                 images="data/images", search="weights,bias,crf")  # doctest: +SKIP
    >>> r.weights, r.crf_name, r.metrics["holdout"]["tuned"]["miou"]     # doctest: +SKIP
    """
    from .._backend import get_num_threads, set_num_threads
    from ._common import check_engine

    t0 = time.perf_counter()
    torch_threads = _torch_threads()  # before any kernel runs (see the finally below)
    say = log or (lambda s: None)
    search = parse_search(search)
    _check_numbers(holdout, budget, seed, bias_bound)
    fit = fit_options(images=crf_images, crop=crf_crop, batch=crf_batch, steps=crf_steps,
                      lr=crf_lr)
    if not isinstance(refit, bool):
        raise InputError(f"refit must be True or False; got {refit!r}")
    workers = check_engine(engine, workers)
    if "crf" in search and images is None:
        raise InputError("search 'crf' needs the images: pass images=<folder> (--images)")
    if "crf" in search:
        require_torch()
    if images is not None and not Path(images).is_dir():
        raise PathNotFoundError(f"images folder {images} does not exist")
    if not Path(gt).is_dir():
        raise PathNotFoundError(f"gt: no such folder {gt}")
    opened = open_stores(models, name="models")
    _check_distinct(opened)
    classes = opened[0].classes
    m, c = len(opened), len(classes)
    stems, masks = _oof_stems(opened, gt)
    if images is not None:
        _check_images(images, stems)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(stems))
    n_hold = min(len(stems) - 1, max(1, int(round(holdout * len(stems)))))
    hold_stems = sorted(stems[i] for i in order[:n_hold])
    hold_set = set(hold_stems)
    search_stems = [s for s in stems if s not in hold_set]
    say(f"tune: {m} models x {c} classes, {len(stems)} OOF images: {len(search_stems)} for the "
        f"search, {n_hold} held out (seed {seed}); search {', '.join(search)}")

    reader = PixelReader(StoreReader(opened), masks, c, ignore_index,
                         math.exp(2 * bias_bound) * (1 + 1e-3))
    t_read = time.perf_counter()
    parts = list(map_items(reader, search_stems + (hold_stems if refit else []),
                           workers=workers, engine=engine, desc="tune: read", unit="image",
                           progress=progress))
    t_read = time.perf_counter() - t_read
    pix_search = PixelSet.join([r for r in parts if r[0] not in hold_set], m, c)
    pix_hold = PixelSet.join([r for r in parts if r[0] in hold_set], m, c) if refit else None
    del parts
    if pix_search.pixels == 0:
        raise InputError(f"the {len(search_stems)} search images have no pixel to count: every "
                         f"mask pixel is ignore_index ({ignore_index}) or outside the images")
    say(f"    read in {t_read:.1f} s: {pix_search.kept:,} of {pix_search.pixels:,} search "
        f"pixels can change label ({100 * pix_search.kept / max(pix_search.pixels, 1):.1f}%; "
        f"kept in memory, {pix_search.kept * m * c * 2 / 2**20:,.0f} MiB)")

    equal = np.full(m, 1.0 / m)
    history: list = []
    timings: list[float] = []

    def objective_on(pix: PixelSet):
        def f(w, b):
            t = time.perf_counter()
            value = miou_of(pix.confusion(w, b))
            timings.append(time.perf_counter() - t)
            return value
        return f

    before = get_num_threads()
    set_num_threads(workers if engine == "local" else 0)
    try:
        searcher = CoordinateSearch(objective_on(pix_search), rng, "weights" in search,
                                    "bias" in search, float(bias_bound), int(budget), history)
        w_fit, b_fit, best_search = searcher.run(equal, np.zeros(c) if "bias" in search
                                                 else None)
        say(f"    search: {searcher.used} candidates, {np.mean(timings) * 1e3:.1f} ms each; "
            f"search-set mIoU {history[0]['miou']:.4f} (equal) -> {best_search:.4f}")
        if b_fit is not None and not np.any(b_fit):
            b_fit = None

        crf_fit, fitted = None, None
        if "crf" in search:
            fitted, crf_fit = fit_crf(reader, str(images), search_stems, w_fit, b_fit,
                                      seed=int(seed), options=fit, workers=workers,
                                      engine=engine, say=say)
        candidates = crf_candidates(fitted) if "crf" in search else {"off": None}

        # the held-out measurement: every setting in one parallel pass
        measured = {"equal": (equal, None, None)}
        if images is not None:
            measured["recipe"] = (equal, None, recipe_crf())
        measured.update({f"crf:{k}": (w_fit, b_fit, v) for k, v in candidates.items()})
        cms = dict(zip(measured, setting_confusions(
            reader, None if images is None else str(images), hold_stems,
            list(measured.values()), workers=workers, engine=engine, progress=progress,
            desc="tune: hold-out")))
        if not cms["equal"].any():
            raise InputError(f"the {n_hold} held-out images have no pixel to count: every mask "
                             f"pixel is ignore_index ({ignore_index}); nothing is written")
        scored = {k[4:]: scores_dict(cms[k], classes) for k in measured if k.startswith("crf:")}
        crf_name = max(scored, key=lambda k: (scored[k]["miou"], -CANDIDATES.index(k)))
        crf = candidates[crf_name]
        metrics = {"holdout": {"equal": scores_dict(cms["equal"], classes),
                               "recipe": scores_dict(cms["recipe"], classes)
                               if "recipe" in cms else None,
                               "tuned": scored[crf_name]},
                   "crf_candidates": scored if "crf" in search else None,
                   "crf_choice": crf_name, "holdout_images": n_hold,
                   "search_images": len(search_stems),
                   "recipe_note": None if images is not None else
                   "not measured: the recipe's ConvCRF needs --images"}
        if "crf" in search:
            say("    held-out mIoU of the CRF candidates: " + ", ".join(
                f"{k} {v['miou']:.4f}" for k, v in scored.items()) + f" -> {crf_name}")
        say("    held-out mIoU: " + ", ".join(f"{k} {fmt_miou(v)}"
                                              for k, v in metrics["holdout"].items()))

        refit_block = None
        if refit:
            pix_all = PixelSet(pix_search.settled + pix_hold.settled,
                               np.ascontiguousarray(np.concatenate([pix_search.data,
                                                                    pix_hold.data], 2)),
                               np.concatenate([pix_search.gt, pix_hold.gt]),
                               pix_search.stems + pix_hold.stems)
            again = CoordinateSearch(objective_on(pix_all), rng, "weights" in search,
                                     "bias" in search, float(bias_bound), int(budget),
                                     history, stage="refit")
            w_all, b_all, best_all = again.run(w_fit, np.zeros(c) if b_fit is None and
                                               "bias" in search else b_fit)
            refit_block = {
                "weights": [float(v) for v in w_all],
                "bias": None if b_all is None or not np.any(b_all) else
                [float(v) for v in b_all],
                "oof_miou": best_all, "oof_equal_miou": miou_of(pix_all.confusion(equal, None)),
                "note": "weights and bias searched again on all OOF images (search + hold-out) "
                        "from the tuned values, without CRF; its figures are on the images it "
                        "was fitted on. Not the written setting: ensemble --tuned applies "
                        "weights, bias and crf above."}
            say(f"    refit on all {len(stems)} OOF images (reported, not written): mIoU "
                f"{best_all:.4f} ({again.used} candidates)")
        per_candidate = float(np.median(timings)) if timings else float("nan")
    finally:
        set_num_threads(before)
        _torch_threads(torch_threads)  # Numba's OpenMP layer shares torch's thread count

    seconds = time.perf_counter() - t0
    result = TuneResult(
        out=Path(out), weights=[float(v) for v in w_fit],
        bias=None if b_fit is None else [float(v) for v in b_fit], crf=crf, metrics=metrics,
        history=history, crf_name=crf_name, crf_fit=crf_fit, refit=refit_block,
        seconds=seconds, info={"images": len(stems), "holdout_images": n_hold,
                               "kept_pixels": pix_search.kept, "pixels": pix_search.pixels,
                               "seconds_per_candidate": per_candidate,
                               "read_seconds": t_read})
    write_tuned(out, {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "models": [store_identity(s) for s in opened], "classes": classes,
        "weights": result.weights, "bias": result.bias, "crf": crf, "crf_name": crf_name,
        "metrics": metrics, "crf_fit": crf_fit, "refit": refit_block,
        "settings": {"search": list(search), "holdout": holdout, "budget": budget,
                     "seed": seed, "bias_bound": bias_bound, "crf_images": crf_images,
                     "crf_crop": crf_crop, "crf_batch": crf_batch, "crf_steps": crf_steps,
                     "crf_lr": crf_lr, "refit": refit, "ignore_index": ignore_index,
                     "images": None if images is None else str(images), "gt": str(gt)},
        "holdout_stems": hold_stems, "timing": {**result.info, "seconds": seconds},
        "history": history})
    plot(Path(out) / "tuning.png", history, metrics, classes,
         None if crf_fit is None else crf_fit["loss"])
    return result
