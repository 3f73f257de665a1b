"""`segkit tune`'s CRF candidates and the CRF fitted by gradient (decoupled, as ConvCRF's
paper fitted its CRF on held-out images: the models' probabilities are frozen).

The fit runs on `images` seeded search images (:func:`fit_draw`; read once, by the search's
read, as :class:`FitImage`): their soft vote under the tuned weights, the images and the
masks. Each step takes a seeded mini-batch of random crops and minimises the
cross-entropy of the CRF's scores plus the tuned bias against the masks (ignore_index left
out) with Adam; the CRF is :class:`segkit.torch.ConvCRF` (``trainable=True``) with the
"convcrf" preset's configuration (filter 11 on a 4x blurred grid, 5 iterations: the cheapest of
the presets, 16x fewer cells than blur 1, and the fit then starts at the "convcrf"
candidate's parameters, so the two differ only by what was learned) on probabilities. It learns the
per-class message weight (kept >= 0), both compatibilities and both bandwidths. The loss
divides the scores by a learnt temperature (argmax, which is what is applied, does not change
with it): ConvCRF's messages are unnormalised and its scores overconfident, and without it
the cross-entropy pulls the message weights to 0 and below to calibrate them (on the demo's
data that fit scored 0.52 held-out mIoU against 0.70 for no CRF; with it, 0.74).
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError, MissingPackageError
from ..ops.convcrf import convcrf_params
from ._stores import image_of
from .settings import CRF_KEYS, LEARNED_KEYS, PROB_FLOOR, EnsembleSetting, check_crf

#: The CRF candidates, in the order a tie goes to (the simplest first).
CANDIDATES = ("off", "convcrf", "seed", "fitted")
#: The target value of ignored pixels in the loss.
IGNORED = -100
#: torch threads of the fit: one, so its float reductions, and the fitted setting, do not
#: depend on the machine's core count (the CRF kernels' own threads do not change them).
FIT_THREADS = 1


@dataclass(frozen=True)
class FitOptions:
    """The CRF fit's settings (``TuneOptions.fit()``: checked there)."""
    images: int = 32
    crop: int = 128
    batch: int = 4
    steps: int = 400
    lr: float = 0.02


def preset_crf(name: str) -> dict:
    """A CRF preset as tuned.json holds it (:meth:`EnsembleSetting.preset`)."""
    return EnsembleSetting.preset(name).to_dict()["crf"]


def crf_candidates(fitted: dict | None) -> dict[str, dict | None]:
    """The CRFs the held-out images choose among, as tuned.json holds them (name -> CRF,
    None for off)."""
    out = {"off": None, "convcrf": preset_crf("convcrf"), "seed": preset_crf("seed")}
    if fitted is not None:
        out["fitted"] = fitted
    return out


def fit_draw(stems: Sequence[str], seed: int,
             count: int) -> tuple[list[str], np.random.Generator]:
    """The fit's images (`count` of `stems`, seeded, sorted) and the random stream its crops
    then draw from (its own stream: the search is unchanged by it)."""
    rng = np.random.default_rng([int(seed), 19])
    return sorted(stems[i] for i in rng.permutation(len(stems))[:count]), rng


@dataclass
class FitImage:
    """One fit image as read, before the weights are tuned: every model's (C, H, W)
    probabilities as stored, the image (H, W, 3) uint8 and the targets (H, W) int64
    (IGNORED where not counted)."""
    stem: str
    probs: list
    image: np.ndarray
    target: np.ndarray

    @classmethod
    def of(cls, stem: str, probs: Sequence[np.ndarray], labels: np.ndarray, valid: np.ndarray,
           images: str, shape: tuple[int, int]) -> "FitImage":
        """From the read of the search (`labels` and `valid` flat, `shape` (H, W))."""
        return cls(stem, [np.array(p) for p in probs], image_of(stem, images, shape),
                   np.where(valid, labels, IGNORED).reshape(shape))

    def inputs(self, weights: list[float], backend: str = "auto") -> tuple:
        """(averaged probabilities (C, H, W) float32 floored, image (3, H, W) float32,
        targets) under the tuned `weights`."""
        mean = EnsembleSetting(weights).vote(self.probs, return_probs=True,
                                             backend=backend)[1]
        return (np.maximum(mean, np.float32(PROB_FLOOR)),
                np.ascontiguousarray(self.image.transpose(2, 0, 1), np.float32), self.target)


def require_torch() -> None:
    """MissingPackageError unless torch imports (checked before tune reads anything)."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingPackageError("search 'crf' fits the CRF with torch: pip install "
                                  f"'segkit[mmseg]' (or torch >= 2.1); {exc}") from exc


def fit_crf(fit_images: list[FitImage], rng: np.random.Generator, weights, bias, *,
            options: FitOptions, say: Callable[[str], Any],
            backend: str = "auto") -> tuple[dict | None, dict]:
    """Fit a CRF setting by gradient on seeded crops of `fit_images` (see the module
    docstring) under the tuned `weights` and `bias`.

    Parameters
    ----------
    fit_images : list of FitImage
        The images :func:`fit_draw` chose, as the search read them (sorted by stem). The list
        is emptied: each image's probabilities are let go once its averaged probabilities are
        made (the fit holds one copy of its images, not two).
    rng : numpy.random.Generator
        :func:`fit_draw`'s stream (the crops).
    weights, bias : the tuned weights (one per model) and bias (one per class, or None).
    options : FitOptions
    say : callable
        Receives the progress lines.
    backend : str
        The soft vote's (the fit itself runs on torch's CPU op).

    Returns
    -------
    (dict or None, dict)
        The fitted CRF setting (None when the fit diverged) and its record: its options,
        images, configuration, start, learned values, loss history, seconds.
    """
    require_torch()
    t0 = time.perf_counter()
    w = [float(v) for v in weights]
    stems = [f.stem for f in fit_images]
    data = []
    while fit_images:
        data.append(fit_images.pop(0).inputs(w, backend))
    c = data[0][0].shape[0]
    crop = min([options.crop] + [d[2].shape[0] for d in data] + [d[2].shape[1] for d in data])
    base = preset_crf("convcrf")
    losses, diverged, learned = _train(data, rng, bias, base, options, crop)
    fitted = None
    if diverged is None:
        try:
            fitted = check_crf({**base, **{k: learned[k] for k in LEARNED_KEYS}}, c)
        except InputError as exc:  # a parameter went to inf, NaN or out of its range
            diverged = f"the learned setting is not usable ({exc})"
    seconds = time.perf_counter() - t0
    record = {"options": {**asdict(options), "crop_used": crop},
              "images": stems,
              "config": {k: base[k] for k in CRF_KEYS if k not in LEARNED_KEYS},
              "start": {**{k: base[k] for k in LEARNED_KEYS if k != "weight"},
                        "weight": [convcrf_params("convcrf").weight_init] * c},
              "learned": None if fitted is None else {k: fitted[k] for k in LEARNED_KEYS},
              "loss": losses, "seconds": seconds, "threads": FIT_THREADS,
              "diverged": diverged}
    _say_fit(say, options, record, fitted)
    return fitted, record


def _train(data: list, rng: np.random.Generator, bias, base: dict, options: FitOptions,
           crop: int) -> tuple[list[float], str | None, dict | None]:
    """Adam on the CRF's parameters and a temperature: (losses, why it diverged or None,
    the learned parameters or None)."""
    import torch
    import torch.nn.functional as F

    from ..torch import ConvCRF

    c = data[0][0].shape[0]
    crf = ConvCRF(trainable=True, num_classes=c, **base)
    # the loss sees the scores divided by a learnt temperature: argmax (what is applied) does
    # not change with it, and the CRF's parameters need not shrink the ConvCRF's large,
    # unnormalised messages to become calibrated (which pulls the weights to 0 and below)
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([*crf.parameters(), log_t], lr=options.lr)
    b = torch.zeros(c) if bias is None else torch.tensor([float(v) for v in bias])
    b = b.to(torch.float32).view(1, c, 1, 1)
    losses: list[float] = []
    threads = torch.get_num_threads()
    # torch splits its reductions (the loss, the pooling's and softmax's backward) by its
    # thread count, and their float sums then differ in the last bits: one thread makes the
    # fit, and so tuned.json, the same on every machine
    torch.set_num_threads(FIT_THREADS)
    try:
        for step in range(options.steps):
            unary, image, target = _batch(data, rng, options.batch, crop)
            counted = int((target != IGNORED).sum())
            try:
                scores = (crf(unary, image) + b) / log_t.exp()
            except InputError as exc:  # the CRF refuses what the last step made of it
                if step == 0:
                    raise
                return losses, f"step {step + 1} of {options.steps}: {exc}", None
            loss = F.cross_entropy(scores, target, ignore_index=IGNORED, reduction="sum") \
                / max(counted, 1)
            value = float(loss.detach())
            if not math.isfinite(value):
                return losses, (f"the loss became {value} at step {step + 1} of "
                                f"{options.steps}"), None
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():  # message weights stay >= 0: a negative one sharpens noise
                crf.weight.clamp_(min=0.0)
            losses.append(value)
    finally:
        torch.set_num_threads(threads)
    return losses, None, crf.parameters_now()


def _say_fit(say: Callable[[str], Any], options: FitOptions, record: dict,
             fitted: dict | None) -> None:
    """The fit's progress line (and the warning when it diverged)."""
    losses, diverged = record["loss"], record["diverged"]
    if diverged is not None:
        warnings.warn(f"the CRF fit diverged: {diverged} (crf_lr {options.lr:g}); the fitted "
                      "candidate is dropped and the held-out images choose among off and the "
                      "presets. A smaller --crf-lr may converge", stacklevel=4)
        say(f"    crf fit diverged after {len(losses)} steps: {diverged}; candidate dropped")
        return
    head, tail = (float(np.mean(losses[:max(1, len(losses) // 10)])),
                  float(np.mean(losses[-max(1, len(losses) // 10):])))
    crop = record["options"]["crop_used"]
    say(f"    crf fit: {options.steps} steps of {options.batch} crops {crop}x{crop} from "
        f"{len(record['images'])} search images in {record['seconds']:.1f} s; loss "
        f"{head:.4f} -> {tail:.4f}; "
        + ", ".join(f"{k} {fitted[k]:.3g}" for k in LEARNED_KEYS if k != "weight")
        + "; weight " + ", ".join(f"{v:.3f}" for v in fitted["weight"]))


def _batch(data: list, rng: np.random.Generator, size: int, crop: int):
    """One step's seeded crops: (unary, image, target) tensors."""
    import torch

    batch = [[], [], []]
    for k in rng.integers(len(data), size=size):
        mean, image, target = data[int(k)]
        h, w = target.shape
        y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        for part, arr in zip(batch, (mean, image, target)):
            part.append(arr[..., y:y + crop, x:x + crop])
    return (torch.from_numpy(np.ascontiguousarray(np.stack(p))) for p in batch)

