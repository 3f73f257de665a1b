"""`segkit.tune`: choose ensemble weights, a per-class bias and the ConvCRF setting on
out-of-fold (OOF) predictions, by dataset mIoU.

Each model is a confidence store, or a store set of its fold stores (``a_fold0,a_fold1``:
every fold's model wrote its own validation images), so the models' probabilities cover the
training images without having seen them. Against the ground-truth masks:

1. **Hold-out.** A seeded fraction (`holdout`) of the OOF images is set aside; the search never
   sees it. Its mIoU (and per-class IoU) is reported for equal weights, for the recipe's setting
   (equal weights + the "seed" ConvCRF, probabilities passed as logits) and for the tuned one.
2. **Pixels.** Every image is read once (parallel over images). A pixel whose label no
   candidate can change (every model's top class is the same one, with a probability more than
   ``exp(2 * bias_bound)`` times every other class's) is counted once into a fixed confusion
   matrix; the others are kept in memory, float16, models x classes each. This is exact: with
   weights >= 0 and ``|bias_c| <= bias_bound`` such a pixel's label is that class for every
   candidate. A candidate is then one pass of the fused Numba kernel
   (:func:`segkit.vote_confusion`: weighted vote, ``x exp(bias)``, argmax, confusion counts)
   over the kept pixels, in parallel.
3. **Search** (`search` holds "weights" and/or "bias"): a seeded coordinate search. From equal
   weights and zero bias, each round visits the coordinates (one weight per model, one bias per
   class) in a random order; for each it steps up, and if that does not raise the mIoU, down,
   and keeps stepping while the mIoU rises. A weight step adds ``step`` to one weight and
   renormalises to sum 1 (weights stay >= 0); a bias step adds ``step`` within
   ``[-bias_bound, bias_bound]``. A round without gain halves the steps (weights from 0.25,
   bias from 0.5); the search ends when the steps fall below 1/64 of their start or after
   `budget` candidates.
4. **CRF** ("crf" in `search`, `images` needed): on `crf_images` search images (seeded), the
   tuned vote without CRF ("off") is compared with ConvCRF candidates run on the averaged
   probabilities: the "convcrf" and "seed" presets, then seeded random draws of filter size,
   blur, iterations, compatibilities, scales and unary kind (`crf_budget` in all). The bias is
   added to the CRF's output scores. A CRF is kept only if it beats "off" on that subset.
5. **Refit.** After the held-out measurement, the weights and bias are searched again on all
   OOF images (starting from the tuned values, same budget); the CRF choice is kept. Those are
   the values written, for ``segkit ensemble --tuned``.

Outputs: ``OUT/tuned.json`` (weights, bias, crf, metrics, history, settings) and
``OUT/tuning.png`` (the objective over candidates; per-class held-out IoU before and after).
"""
from __future__ import annotations

import datetime
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError, InputTypeError, PathNotFoundError
from ..io import atomic
from ..io.masks import read_mask
from ..io.store import common_stems, open_stores, store_identity
from ..ops.confusion import iou_scores
from ..ops.soft_vote import check_weights
from ..ops.vote_confusion import bias_scale, check_bias, confusion_of_pixels, settled_pixels
from ._stores import StoreReader
from .engine import map_items

TUNED = "tuned.json"
SEARCHES = ("weights", "bias", "crf")
#: First step of a weight (added to one weight before renormalising) and of a bias.
WEIGHT_STEP, BIAS_STEP = 0.25, 0.5
#: The search stops when the steps fall below their start divided by this.
MIN_STEP_DIVISOR = 64
#: The ConvCRF settings the CRF search draws from (besides the two presets).
CRF_SPACE: dict[str, tuple] = {
    "filter_size": (3, 5, 7, 9, 11), "blur": (1, 2, 4), "num_iter": (1, 2, 5, 10),
    "pos_compat": (1.0, 3.0, 6.0), "col_compat": (3.0, 5.0, 10.0, 20.0),
    "pos_sdims": (1.0, 3.0, 6.0), "col_schan": (5.0, 13.0, 30.0),
    "unary_kind": ("probs", "logits"),
}
CRF_KEYS = tuple(CRF_SPACE)


def recipe_crf() -> dict[str, Any]:
    """The original recipe's ConvCRF call as a setting: preset "seed" (filter 5, blur 1, 200
    iterations), the averaged probabilities passed as logits."""
    from ..ops.convcrf import CRF_PRESETS

    return {k: CRF_PRESETS["seed"][k] for k in CRF_KEYS}


def preset_crf(name: str, **overrides: Any) -> dict[str, Any]:
    from ..ops.convcrf import CRF_PRESETS

    return {**{k: CRF_PRESETS[name][k] for k in CRF_KEYS}, **overrides}


def check_crf(crf: Any) -> dict[str, Any] | None:
    """A ConvCRF setting (a dict of the keys in CRF_KEYS) validated, or None."""
    if crf is None:
        return None
    if not isinstance(crf, dict):
        raise InputError(f"crf must be a dict of ConvCRF settings or null; got {crf!r}")
    unknown = sorted(set(crf) - set(CRF_KEYS))
    if unknown:
        raise InputError(f"crf has unknown keys {unknown}; known: {', '.join(CRF_KEYS)}")
    from ..ops.convcrf import crf_params

    crf_params(None, **crf)  # raises on a bad value, naming it
    return dict(crf)


# ---- applying a setting to one image (shared with `segkit ensemble --tuned`) -------------------
def setting_labels(mean: np.ndarray, scale: np.ndarray | None, crf: dict | None,
                   image: np.ndarray | None, bias: np.ndarray | None = None) -> np.ndarray:
    """Labels of one image from its averaged probabilities `mean` (C, H, W) float32: without a
    CRF ``argmax_c mean_c * exp(b_c)`` (float32, ties to the smallest class: the arithmetic of
    :func:`segkit.vote_confusion`); with one, ``argmax_c crf_scores_c + b_c``."""
    if crf is None:
        score = mean if scale is None else mean * scale.astype(np.float32)[:, None, None]
        return np.argmax(score, axis=0)
    import segkit

    scores = np.asarray(segkit.convcrf(mean, image, **crf))
    if bias is not None:
        scores = scores + bias.astype(np.float32)[:, None, None]
    return np.argmax(scores, axis=0)


# ---- per-image work (picklable) ----------------------------------------------------------------
class _Pixels:
    """Reads one image of every model and its mask; returns the fixed pixels' confusion
    matrix and the other pixels (float16 bits, (M, C, P)) with their labels."""

    def __init__(self, stores: "StoreReader", masks: dict[str, str], num_classes: int,
                 ignore_index: int | None, ratio: float):
        self.stores = stores if isinstance(stores, StoreReader) else StoreReader(stores)
        self.masks, self.num_classes = masks, num_classes
        self.ignore_index, self.ratio = ignore_index, ratio

    def read(self, stem: str) -> tuple[list[np.ndarray], np.ndarray]:
        probs = self.stores.read(stem)
        gt = read_mask(self.masks[stem])
        if gt.shape != probs[0].shape[1:]:
            raise InputError(f"{stem}: mask {self.masks[stem]} is {gt.shape[1]}x{gt.shape[0]}, "
                             f"the probabilities {probs[0].shape[2]}x{probs[0].shape[1]}")
        return probs, gt

    def __call__(self, stem: str):
        probs, gt = self.read(stem)
        c = self.num_classes
        g = gt.astype(np.int64).ravel()
        valid = np.ones(g.shape, bool) if self.ignore_index is None else g != self.ignore_index
        if ((g[valid] < 0) | (g[valid] >= c)).any():
            bad = g[valid][(g[valid] < 0) | (g[valid] >= c)][0]
            raise InputError(f"{stem}: mask {self.masks[stem]} has label {int(bad)} outside "
                             f"0..{c - 1} (and not ignore_index {self.ignore_index})")
        planes = [np.ascontiguousarray(p).reshape(c, -1) for p in probs]
        fixed = valid.copy()
        first = None
        for plane in planes:  # every model: the same top class, far ahead
            top, settled = settled_pixels(plane, self.ratio)
            fixed &= settled
            if first is None:
                first = top
            else:
                fixed &= top == first
        planes = [plane.view(np.uint16) if plane.dtype == np.float16 else plane
                  for plane in planes]
        cm = np.bincount(g[fixed] * c + first[fixed], minlength=c * c).reshape(c, c)
        keep = valid & ~fixed
        data = np.stack([np.compress(keep, plane, axis=1) for plane in planes])
        labels = g[keep].astype(np.uint8 if c <= 256 else np.uint16)
        return stem, cm.astype(np.int64), data, labels


class _CrfCounts:
    """Confusion matrices of one image under full settings (weights, bias, CRF): the CRF
    path, per image (it needs the whole image). An item is (stem, [setting index, ...]);
    the image is read and voted once for all its settings."""

    def __init__(self, reader: _Pixels, images: str | None, settings: list[tuple]):
        self.reader, self.images, self.settings = reader, images, settings

    def __call__(self, item) -> list[tuple[int, np.ndarray]]:
        import segkit
        from ..io.images import find_image, read_image

        stem, which = item
        probs, gt = self.reader.read(stem)
        c = self.reader.num_classes
        g = gt.astype(np.int64).ravel()
        valid = np.ones(g.shape, bool) if self.reader.ignore_index is None else \
            g != self.reader.ignore_index
        image, means, out = None, {}, []
        for k in which:
            weights, bias, crf = self.settings[k]
            key = tuple(weights)
            if key not in means:
                means[key] = segkit.soft_vote(probs, weights, return_probs=True)[1]
            if crf is not None and image is None:
                image = read_image(find_image(Path(self.images), stem))
                if image.shape[:2] != gt.shape:
                    raise InputError(f"{stem}: image is {image.shape[1]}x{image.shape[0]}, "
                                     f"the probabilities {gt.shape[1]}x{gt.shape[0]}")
            b = None if bias is None else np.asarray(bias, np.float64)
            labels = setting_labels(means[key], None if b is None else bias_scale(b, c), crf,
                                    image, b).ravel()
            out.append((k, np.bincount(g[valid] * c + labels[valid],
                                       minlength=c * c).reshape(c, c)))
        return out


def full_confusions(reader: _Pixels, images: str | None, stems: Sequence[str],
                    settings: list[tuple], *, workers: int, engine: str, progress: bool,
                    desc: str) -> list[np.ndarray]:
    """(C, C) counts of every setting (weights, bias, crf) over `stems`: one parallel pass,
    each task one image under all settings."""
    c = reader.num_classes
    cms = [np.zeros((c, c), np.int64) for _ in settings]
    if not settings:
        return cms
    items = [(s, list(range(len(settings)))) for s in stems]
    counter = _CrfCounts(reader, images, [(list(map(float, w)), None if b is None else
                                           list(map(float, b)), crf) for w, b, crf in settings])
    for part in map_items(counter, items, workers=min(workers, len(items)), engine=engine,
                          desc=desc, unit="image", progress=progress):
        for k, cm in part:
            cms[k] += cm
    return cms


# ---- the kept pixels of a set of images --------------------------------------------------------
@dataclass
class PixelSet:
    """Fixed confusion counts plus the kept pixels of some images (see the module docstring)."""
    fixed: np.ndarray
    data: np.ndarray          # (M, C, P) uint16 (float16 bits)
    gt: np.ndarray            # (P,)
    stems: list[str]

    @classmethod
    def join(cls, parts: list[tuple], m: int, c: int) -> "PixelSet":
        parts = sorted(parts, key=lambda r: r[0])
        fixed = np.zeros((c, c), np.int64)
        for r in parts:
            fixed += r[1]
        data = np.concatenate([r[2] for r in parts], axis=2) if parts else \
            np.zeros((m, c, 0), np.uint16)
        gt = np.concatenate([r[3] for r in parts]) if parts else np.zeros(0, np.uint8)
        return cls(fixed, np.ascontiguousarray(data), gt, [r[0] for r in parts])

    @classmethod
    def union(cls, a: "PixelSet", b: "PixelSet") -> "PixelSet":
        return cls(a.fixed + b.fixed, np.ascontiguousarray(np.concatenate([a.data, b.data], 2)),
                   np.concatenate([a.gt, b.gt]), a.stems + b.stems)

    @property
    def kept(self) -> int:
        return int(self.gt.size)

    @property
    def pixels(self) -> int:
        return int(self.fixed.sum()) + self.kept

    def confusion(self, weights, bias) -> np.ndarray:
        m, c = self.data.shape[:2]
        factors = check_weights(weights, m)
        scale = bias_scale(None if bias is None else np.asarray(bias, np.float64), c)
        return self.fixed + confusion_of_pixels(self.data, self.gt, factors, scale, None)


def miou_of(cm: np.ndarray) -> float:
    return float(iou_scores(cm)["miou"])


# ---- the search ---------------------------------------------------------------------------------
@dataclass
class _Search:
    """Coordinate search state (see the module docstring, step 3)."""
    objective: Callable[[np.ndarray, np.ndarray | None], float]
    rng: np.random.Generator
    tune_weights: bool
    tune_bias: bool
    bias_bound: float
    budget: int
    history: list = field(default_factory=list)
    stage: str = "search"
    used: int = 0

    def score(self, w: np.ndarray, b: np.ndarray | None, move: str) -> float:
        value = self.objective(w, b)
        self.used += 1
        self.history.append({"stage": self.stage, "candidate": len(self.history),
                             "weights": [float(v) for v in w],
                             "bias": None if b is None else [float(v) for v in b],
                             "move": move, "miou": value})
        return value

    def run(self, w0: np.ndarray, b0: np.ndarray | None) -> tuple[np.ndarray, Any, float]:
        w, b = w0.astype(np.float64).copy(), None if b0 is None else b0.astype(np.float64).copy()
        best = self.score(w, b, "start")
        coords = ([("w", i) for i in range(len(w))] if self.tune_weights and len(w) > 1 else []) \
            + ([("b", i) for i in range(len(b))] if self.tune_bias and b is not None else [])
        sw, sb = WEIGHT_STEP, BIAS_STEP
        while coords and self.used < self.budget:
            improved = False
            for j in self.rng.permutation(len(coords)):
                kind, i = coords[j]
                for sign in (1.0, -1.0):
                    moved = False
                    while self.used < self.budget:
                        cand = self.step(w, b, kind, i, sign * (sw if kind == "w" else sb))
                        if cand is None:
                            break
                        value = self.score(*cand, f"{kind}{i}{'+' if sign > 0 else '-'}")
                        if value > best + 1e-12:
                            (w, b), best, moved = cand, value, True
                        else:
                            break
                    if moved:
                        improved = True
                        break
                if self.used >= self.budget:
                    break
            if not improved:
                sw, sb = sw / 2, sb / 2
                if sw < WEIGHT_STEP / MIN_STEP_DIVISOR and sb < BIAS_STEP / MIN_STEP_DIVISOR:
                    break
        return w, b, best

    def step(self, w, b, kind, i, delta):
        if kind == "w":
            new = w.copy()
            new[i] = max(0.0, new[i] + delta)
            if new[i] == w[i] or new.sum() <= 0:
                return None
            return new / new.sum(), b
        new = b.copy()
        new[i] = min(self.bias_bound, max(-self.bias_bound, new[i] + delta))
        if new[i] == b[i]:
            return None
        return w, new


def _crf_candidates(rng: np.random.Generator, n: int) -> list[dict]:
    out = [preset_crf("convcrf", unary_kind="probs"), recipe_crf()]
    seen = {tuple(sorted(c.items())) for c in out}
    tries = 0
    while len(out) < n and tries < 100 * n:
        tries += 1
        cand = {k: v[int(rng.integers(len(v)))] for k, v in CRF_SPACE.items()}
        cand = {k: (v.item() if hasattr(v, "item") else v) for k, v in cand.items()}
        key = tuple(sorted(cand.items()))
        if key not in seen:
            seen.add(key)
            out.append(cand)
    return out[:n]


# ---- result -------------------------------------------------------------------------------------
@dataclass
class TuneResult:
    """What :func:`tune` chose and measured (also in ``out/tuned.json``)."""
    out: Path
    weights: list[float]
    bias: list[float] | None
    crf: dict | None
    metrics: dict
    history: list
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def __str__(self) -> str:
        m = self.metrics
        lines = [f"tune: {self.info.get('images', '?')} OOF images "
                 f"({self.info.get('holdout_images', '?')} held out) in {self.seconds:.1f} s "
                 f"-> {self.out / TUNED}",
                 "  weights: " + ", ".join(f"{w:.3f}" for w in self.weights),
                 "  bias:    " + ("none" if self.bias is None else
                                  ", ".join(f"{b:+.2f}" for b in self.bias)),
                 f"  crf:     {self.crf if self.crf else 'off'}",
                 "  held-out mIoU: " + ", ".join(
                     f"{k} {_fmt_miou(v)}"
                     for k, v in m["holdout"].items())]
        shown = {k: v for k, v in m["holdout"].items() if v is not None}
        if shown:
            lines.append("  held-out IoU per class: " + "".join(f"{k:>9s}" for k in shown))
            for name in next(iter(shown.values()))["iou"]:
                cells = [v["iou"][name] for v in shown.values()]
                lines.append(f"    {name[:22]:22s}" + "".join(
                    "      n/a" if x is None else f"{x:9.4f}" for x in cells))
        return "\n".join(lines)


def _fmt_miou(v: dict | None) -> str:
    return "n/a" if v is None else f"{v['miou']:.4f}"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _scores_dict(cm: np.ndarray, classes: list[str]) -> dict:
    s = iou_scores(cm)
    return {"miou": s["miou"], "pixel_acc": s["pixel_acc"],
            "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(classes, s["iou"])}}


def parse_search(search: Any) -> tuple[str, ...]:
    if isinstance(search, str):
        search = [s.strip() for s in search.split(",") if s.strip()]
    search = tuple(search)
    bad = [s for s in search if s not in SEARCHES]
    if bad or not search:
        raise InputError(f"search must name some of {', '.join(SEARCHES)}; got {search!r}")
    return search


def tune(models: Sequence[Any], gt: str | Path, out: str | Path, *,
         images: str | Path | None = None, search: Sequence[str] | str = ("weights", "bias"),
         holdout: float = 0.2, budget: int = 200, seed: int = 0, workers: int | None = None,
         engine: str = "local", ignore_index: int | None = 255, bias_bound: float = 2.0,
         crf_images: int = 8, crf_budget: int = 12, progress: bool = True,
         log: Callable[[str], Any] | None = print) -> TuneResult:
    """Tune ensemble weights, a per-class bias and ConvCRF on out-of-fold predictions.

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
        The images (needed for the CRF search and the recipe's CRF on the hold-out).
    search : {"weights", "bias", "crf"} subset (or "weights,bias"), default weights and bias
    holdout : float in (0, 1), default 0.2
        Fraction of the OOF images set aside (seeded) and never seen by the search.
    budget : int, default 200
        Candidates of weights and bias per search (the refit gets the same).
    seed : int
        Seeds the hold-out draw, the coordinate order and the CRF draws.
    workers, engine : parallelism of the image reads and CRF runs; `workers` also sets the
        kernel threads of the search.
    ignore_index : int or None, default 255
    bias_bound : float, default 2.0
        Biases stay in [-bias_bound, bias_bound] (this bounds which pixels can change label).
    crf_images, crf_budget : images of the CRF search subset and CRF candidates tried.

    Returns
    -------
    TuneResult (weights, bias, crf, metrics with the held-out mIoU of "equal", "recipe" and
    "tuned", history).

    Examples
    --------
    >>> r = segkit.tune(["oof/a_f0,oof/a_f1", "oof/b_f0,oof/b_f1"], "data/masks", "tuned")  # doctest: +SKIP
    >>> r.weights, r.metrics["holdout"]["tuned"]["miou"]                                   # doctest: +SKIP
    """
    from .._backend import get_num_threads, set_num_threads
    from ._common import check_engine
    from .evaluate import mask_index

    t0 = time.perf_counter()
    say = log or (lambda s: None)
    search = parse_search(search)
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or \
            not 0 < holdout < 1:
        raise InputError(f"holdout must be a fraction in (0, 1); got {holdout!r}")
    for name, value, low in (("budget", budget, 1), ("crf_images", crf_images, 1),
                             ("crf_budget", crf_budget, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"{name} must be an integer >= {low}; got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer; got {seed!r}")
    if not isinstance(bias_bound, (int, float)) or not 0 < bias_bound <= 20:
        raise InputError(f"bias_bound must be in (0, 20]; got {bias_bound!r}")
    workers = check_engine(engine, workers)
    if "crf" in search and images is None:
        raise InputError("search 'crf' needs the images: pass images=<folder> (--images)")
    if images is not None and not Path(images).is_dir():
        raise PathNotFoundError(f"images folder {images} does not exist")
    if not Path(gt).is_dir():
        raise PathNotFoundError(f"gt: no such folder {gt}")
    if isinstance(models, (str, Path)):
        raise InputTypeError(f"models must be a sequence of stores; got one: {models!r}")
    opened = open_stores(models)
    classes = opened[0].classes
    m, c = len(opened), len(classes)
    stems, missing = common_stems(opened)
    masks = {k: str(v) for k, v in mask_index(gt).items()}
    no_mask = [s for s in stems if s not in masks]
    stems = [s for s in stems if s in masks]
    if missing:
        text = "; ".join(f"{root} lacks {len(s)} (e.g. {', '.join(s[:3])})"
                         for root, s in missing.items())
        warnings.warn(f"tuning on the {len(stems)} images present in every model; {text}",
                      stacklevel=2)
    if no_mask:
        warnings.warn(f"{len(no_mask)} images have no mask in {gt} (e.g. {no_mask[0]}); "
                      "they are left out", stacklevel=2)
    if len(stems) < 2:
        raise InputError(f"need at least 2 OOF images with a mask in {gt}; found {len(stems)}")

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(stems))
    n_hold = min(len(stems) - 1, max(1, int(round(holdout * len(stems)))))
    hold_stems = sorted(stems[i] for i in order[:n_hold])
    hold_set = set(hold_stems)
    search_stems = [s for s in stems if s not in hold_set]
    say(f"tune: {m} models x {c} classes, {len(stems)} OOF images: {len(search_stems)} for the "
        f"search, {n_hold} held out (seed {seed}); search {', '.join(search)}")

    ratio = math.exp(2 * bias_bound) * (1 + 1e-3)
    reader = _Pixels(StoreReader(opened), masks, c, ignore_index, ratio)
    t_read = time.perf_counter()
    parts = list(map_items(reader, stems, workers=workers, engine=engine, desc="tune: read",
                           unit="image", progress=progress))
    t_read = time.perf_counter() - t_read
    pix_search = PixelSet.join([r for r in parts if r[0] not in hold_set], m, c)
    pix_hold = PixelSet.join([r for r in parts if r[0] in hold_set], m, c)
    del parts
    total = pix_search.pixels + pix_hold.pixels
    kept = pix_search.kept + pix_hold.kept
    say(f"    read in {t_read:.1f} s: {kept:,} of {total:,} pixels can change label "
        f"({100 * kept / max(total, 1):.1f}%; kept in memory, {kept * m * c * 2 / 2**20:,.0f} MiB)")

    before = get_num_threads()
    set_num_threads(workers if engine == "local" else 0)
    try:
        equal = np.full(m, 1.0 / m)
        zero = np.zeros(c) if "bias" in search else None
        timings: list[float] = []

        def objective_on(pix: PixelSet):
            def f(w, b):
                t = time.perf_counter()
                value = miou_of(pix.confusion(w, b))
                timings.append(time.perf_counter() - t)
                return value
            return f

        history: list = []
        engine_search = _Search(objective_on(pix_search), rng, "weights" in search,
                                "bias" in search, float(bias_bound), int(budget), history)
        w_fit, b_fit, best_search = engine_search.run(equal, zero)
        say(f"    search: {engine_search.used} candidates, {np.mean(timings) * 1e3:.1f} ms each; "
            f"search-set mIoU {history[0]['miou']:.4f} (equal) -> {best_search:.4f}")
        if b_fit is not None and not np.any(b_fit):
            b_fit = None

        crf_choice, crf_history = None, []
        if "crf" in search:
            crf_choice, crf_history = _search_crf(reader, str(images), search_stems, w_fit,
                                                  b_fit, rng, crf_images, crf_budget, workers,
                                                  engine, say)

        # held-out metrics (the CRF settings in one parallel pass over the held-out images)
        with_crf = {}
        if images is not None:
            with_crf["recipe"] = (equal, None, recipe_crf())
        if crf_choice is not None:
            with_crf["tuned"] = (w_fit, b_fit, crf_choice)
        full = dict(zip(with_crf, full_confusions(
            reader, None if images is None else str(images), hold_stems,
            list(with_crf.values()), workers=workers, engine=engine, progress=progress,
            desc="tune: hold-out CRF")))
        cms = {"equal": pix_hold.confusion(equal, None), "recipe": full.get("recipe"),
               "tuned": full["tuned"] if "tuned" in full else pix_hold.confusion(w_fit, b_fit)}
        metrics = {"holdout": {k: None if v is None else _scores_dict(v, classes)
                               for k, v in cms.items()},
                   "holdout_images": n_hold, "search_images": len(search_stems),
                   "recipe_note": None if images is not None else
                   "not measured: the recipe's ConvCRF needs --images"}
        say("    held-out mIoU: " + ", ".join(
            f"{k} {_fmt_miou(v)}"
            for k, v in metrics["holdout"].items()))

        # refit on all OOF images
        pix_all = PixelSet.union(pix_search, pix_hold)
        del pix_search
        refit = _Search(objective_on(pix_all), rng, "weights" in search, "bias" in search,
                        float(bias_bound), int(budget), history, stage="refit")
        w_final, b_final, best_all = refit.run(w_fit, np.zeros(c) if b_fit is None and
                                               "bias" in search else b_fit)
        if b_final is not None and not np.any(b_final):
            b_final = None
        metrics["oof_all"] = {"tuned_refit_miou": best_all,
                              "equal_miou": miou_of(pix_all.confusion(equal, None))}
        say(f"    refit on all {len(stems)} OOF images: mIoU {best_all:.4f} "
            f"({refit.used} candidates)")
        per_candidate = float(np.median(timings)) if timings else float("nan")
    finally:
        set_num_threads(before)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = time.perf_counter() - t0
    result = TuneResult(out=out, weights=[float(v) for v in w_final],
                        bias=None if b_final is None else [float(v) for v in b_final],
                        crf=crf_choice, metrics=metrics, history=history + crf_history,
                        seconds=seconds,
                        info={"images": len(stems), "holdout_images": n_hold,
                              "kept_pixels": kept, "pixels": total,
                              "seconds_per_candidate": per_candidate, "read_seconds": t_read})
    doc = {"format": "segkit-tuned", "version": 1, "created": _now(),
           "models": [store_identity(s) for s in opened], "classes": classes,
           "weights": result.weights, "bias": result.bias, "crf": result.crf,
           "fit_without_holdout": {"weights": [float(v) for v in w_fit],
                                   "bias": None if b_fit is None else [float(v) for v in b_fit]},
           "refit": "weights and bias searched again on all OOF images (search + hold-out), "
                    "from the tuned values; the CRF choice is kept",
           "metrics": metrics,
           "settings": {"search": list(search), "holdout": holdout, "budget": budget,
                        "seed": seed, "bias_bound": bias_bound, "crf_images": crf_images,
                        "crf_budget": crf_budget, "ignore_index": ignore_index,
                        "images": None if images is None else str(images), "gt": str(gt)},
           "holdout_stems": hold_stems, "timing": {**result.info, "seconds": seconds},
           "history": result.history}
    atomic.write_json(out / TUNED, doc)
    _plot(out / "tuning.png", result.history, metrics, classes)
    return result


def _search_crf(reader, images, search_stems, w, b, rng, crf_images, crf_budget, workers,
                engine, say):
    """Compare ConvCRF candidates with "off" on a seeded subset of the search images."""
    subset = sorted(search_stems[i] for i in
                    rng.permutation(len(search_stems))[:min(crf_images, len(search_stems))])
    history = []
    candidates = [None] + _crf_candidates(rng, crf_budget)
    t = time.perf_counter()
    cms = full_confusions(reader, images, subset, [(w, b, cand) for cand in candidates],
                          workers=workers, engine=engine, progress=False, desc="tune: crf")
    secs = time.perf_counter() - t
    off = miou_of(cms[0])
    best, best_value = None, off
    for i, (cand, cm) in enumerate(zip(candidates, cms)):
        value = miou_of(cm)
        history.append({"stage": "crf", "candidate": i, "crf": cand, "miou": value})
        if cand is not None and value > best_value + 1e-12:
            best, best_value = cand, value
    say(f"    crf: {len(candidates) - 1} candidates on {len(subset)} search images in "
        f"{secs:.1f} s; off {off:.4f}, best {best_value:.4f} -> "
        f"{'kept: ' + str(best) if best else 'off'}")
    return best, history


def _plot(path: Path, history: list, metrics: dict, classes: list[str]) -> None:
    """The objective over candidates (search, refit, crf) above the per-class held-out IoU."""
    from PIL import Image, ImageDraw

    from ..viz import bar_chart

    width, height, left, top, bottom = 640, 220, 50, 28, 30
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 8), "mIoU per candidate (blue: search, orange: refit on all OOF, green: "
              "CRF subset)", fill=(0, 0, 0))
    values = [h["miou"] for h in history if h.get("miou") == h.get("miou")]
    if values:
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1e-6
        n = max(1, len(history) - 1)
        colours = {"search": (31, 119, 180), "refit": (255, 127, 14), "crf": (44, 160, 44)}
        for i, h in enumerate(history):
            if h.get("miou") != h.get("miou"):
                continue
            x = left + int((width - left - 10) * i / n)
            y = top + int((height - top - bottom) * (1 - (h["miou"] - lo) / (hi - lo)))
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colours.get(h["stage"], (0, 0, 0)))
        draw.text((4, top - 6), f"{hi:.4f}", fill=(0, 0, 0))
        draw.text((4, height - bottom - 6), f"{lo:.4f}", fill=(0, 0, 0))
        draw.text((left, height - bottom + 8), f"candidates: {len(history)}", fill=(0, 0, 0))
    series = {k: [np.nan if v["iou"][n] is None else v["iou"][n] for n in classes]
              for k, v in metrics["holdout"].items() if v is not None}
    bars = bar_chart(series, classes, "held-out per-class IoU", width=width)
    out = Image.new("RGB", (width, height + bars.height), (255, 255, 255))
    out.paste(canvas, (0, 0))
    out.paste(bars, (0, height))
    with atomic.atomic_path(path) as tmp:
        out.save(tmp, format="PNG")


def load_tuned(path: str | Path) -> dict:
    """A tuned.json, checked: weights (one per model), bias (one per class or null), crf."""
    import json

    path = Path(path)
    if path.is_dir():
        path = path / TUNED
    if not path.is_file():
        raise PathNotFoundError(f"tuned: no such file {path} (write one with `segkit tune`)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(doc, dict) or "weights" not in doc or "classes" not in doc:
        raise InputError(f"{path}: not a segkit tuned.json (no weights/classes)")
    check_weights(doc["weights"], len(doc["weights"]))
    check_bias(doc.get("bias"), len(doc["classes"]))
    doc["crf"] = check_crf(doc.get("crf"))
    return doc
