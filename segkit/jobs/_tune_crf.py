"""`segkit tune`'s CRF candidates and the CRF fitted by gradient (decoupled, as ConvCRF's
paper fitted its CRF on held-out images: the models' probabilities are frozen).

The fit runs on `images` seeded search images: their soft vote under the tuned weights, the
images and the masks. Each step takes a seeded mini-batch of random crops and minimises the
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
from ..ops.soft_vote import soft_vote
from ._stores import image_of
from ._tune_pixels import PixelReader
from .engine import map_items
from .settings import CRF_KEYS, LEARNED_KEYS, PROB_FLOOR, check_crf, crf_setting

#: The CRF candidates, in the order a tie goes to (the simplest first).
CANDIDATES = ("off", "convcrf", "seed", "fitted")
#: The target value of ignored pixels in the loss.
IGNORED = -100
#: torch threads of the fit: one, so its float reductions, and the fitted setting, do not
#: depend on the machine's core count (the CRF kernels' own threads do not change them).
FIT_THREADS = 1


@dataclass(frozen=True)
class FitOptions:
    """The CRF fit's settings (:func:`fit_options` checks them)."""
    images: int = 32
    crop: int = 128
    batch: int = 4
    steps: int = 400
    lr: float = 0.02


def fit_options(**values: Any) -> FitOptions:
    """A checked :class:`FitOptions`; InputError naming the bad keyword otherwise."""
    for name in ("images", "crop", "batch", "steps"):
        v = values[name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"crf_{name} must be an integer >= 1; got {v!r}")
    lr = values["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) \
            or lr <= 0:
        raise InputError(f"crf_lr must be a number > 0; got {lr!r}")
    return FitOptions(int(values["images"]), int(values["crop"]), int(values["batch"]),
                      int(values["steps"]), float(lr))


def crf_candidates(fitted: dict | None) -> dict[str, dict | None]:
    """The CRF settings the held-out images choose among (name -> setting, None for off)."""
    out = {"off": None, "convcrf": crf_setting("convcrf"), "seed": crf_setting("seed")}
    if fitted is not None:
        out["fitted"] = fitted
    return out


class _FitImage:
    """One fit image: (stem, averaged probabilities (C, H, W) float32 floored, image
    (3, H, W) float32, targets (H, W) int64 with IGNORED where not counted)."""

    def __init__(self, reader: PixelReader, images: str, weights: list[float]):
        self.reader, self.images, self.weights = reader, images, weights

    def __call__(self, stem: str):
        probs, gt = self.reader.read(stem)
        g, valid = self.reader.labels(stem, gt)
        mean = soft_vote(probs, self.weights, return_probs=True)[1]
        image = image_of(stem, self.images, gt.shape)
        target = np.where(valid, g, IGNORED).reshape(gt.shape)
        return (stem, np.maximum(mean, np.float32(PROB_FLOOR)),
                np.ascontiguousarray(image.transpose(2, 0, 1), np.float32), target)


def require_torch() -> None:
    """MissingPackageError unless torch imports (checked before tune reads anything)."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingPackageError("search 'crf' fits the CRF with torch: pip install "
                                  f"'segkit[mmseg]' (or torch >= 2.1); {exc}") from exc


def fit_crf(reader: PixelReader, images: str, stems: Sequence[str], weights, bias, *,
            seed: int, options: FitOptions, workers: int, engine: str,
            say: Callable[[str], Any]) -> tuple[dict, dict]:
    """Fit a CRF setting by gradient on seeded crops of `stems` (see the module docstring).

    Returns (the fitted CRF setting, a record: its settings, images, loss history, seconds).
    """
    require_torch()
    import torch
    import torch.nn.functional as F

    from ..torch import ConvCRF

    t0 = time.perf_counter()
    c = reader.num_classes
    rng = np.random.default_rng([int(seed), 19])  # its own stream: the search is unchanged
    subset = sorted(stems[i] for i in rng.permutation(len(stems))[:options.images])
    data = [r[1:] for r in sorted(  # the engine yields in completion order: sort by stem
        map_items(_FitImage(reader, images, [float(v) for v in weights]), subset,
                  workers=min(workers, len(subset)), engine=engine, desc="tune: crf fit",
                  unit="image", progress=False), key=lambda r: r[0])]
    crop = min([options.crop] + [d[2].shape[0] for d in data] + [d[2].shape[1] for d in data])
    base = crf_setting("convcrf")
    crf = ConvCRF(trainable=True, num_classes=c, **base)
    # the loss sees the scores divided by a learnt temperature: argmax (what is applied) does
    # not change with it, and the CRF's parameters need not shrink the ConvCRF's large,
    # unnormalised messages to become calibrated (which pulls the weights to 0 and below)
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([*crf.parameters(), log_t], lr=options.lr)
    b = torch.zeros(c) if bias is None else torch.tensor([float(v) for v in bias])
    b = b.to(torch.float32).view(1, c, 1, 1)
    losses: list[float] = []
    diverged = None
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
                diverged = f"step {step + 1} of {options.steps}: {exc}"
                break
            loss = F.cross_entropy(scores, target, ignore_index=IGNORED, reduction="sum") \
                / max(counted, 1)
            value = float(loss.detach())
            if not math.isfinite(value):
                diverged = f"the loss became {value} at step {step + 1} of {options.steps}"
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():  # message weights stay >= 0: a negative one sharpens noise
                crf.weight.clamp_(min=0.0)
            losses.append(value)
    finally:
        torch.set_num_threads(threads)
    fitted = None
    if diverged is None:
        learned = crf.parameters_now()
        try:
            fitted = check_crf({**base, **{k: learned[k] for k in LEARNED_KEYS}}, c)
        except InputError as exc:  # a parameter went to inf, NaN or out of its range
            diverged = f"the learned setting is not usable ({exc})"
    seconds = time.perf_counter() - t0
    record = {"options": {**asdict(options), "crop_used": crop}, "images": subset,
              "config": {k: base[k] for k in CRF_KEYS if k not in LEARNED_KEYS},
              "start": {**{k: base[k] for k in LEARNED_KEYS if k != "weight"},
                        "weight": [convcrf_params("convcrf").weight_init] * c},
              "learned": None if fitted is None else {k: fitted[k] for k in LEARNED_KEYS},
              "loss": losses, "seconds": seconds, "threads": FIT_THREADS,
              "diverged": diverged}
    if diverged is not None:
        warnings.warn(f"the CRF fit diverged: {diverged} (crf_lr {options.lr:g}); the fitted "
                      "candidate is dropped and the held-out images choose among off and the "
                      "presets. A smaller --crf-lr may converge", stacklevel=3)
        say(f"    crf fit diverged after {len(losses)} steps: {diverged}; candidate dropped")
        return None, record
    head, tail = (float(np.mean(losses[:max(1, len(losses) // 10)])),
                  float(np.mean(losses[-max(1, len(losses) // 10):])))
    say(f"    crf fit: {options.steps} steps of {options.batch} crops {crop}x{crop} from "
        f"{len(subset)} search images in {seconds:.1f} s; loss {head:.4f} -> {tail:.4f}; "
        + ", ".join(f"{k} {fitted[k]:.3g}" for k in LEARNED_KEYS if k != "weight")
        + "; weight " + ", ".join(f"{v:.3f}" for v in fitted["weight"]))
    return fitted, record


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

