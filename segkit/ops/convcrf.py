"""``segkit.convcrf``: ConvCRF post-processing (mean-field inference of a convolutional CRF),
exact to ConvCRF's ``GaussCRF`` with its default configuration."""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ..errors import InputError, InputTypeError
from .. import _backend, _validate
from ..reference.convcrf import DEFAULTS, coefficients
from .convcrf_backends import CHECKS_LOGITS, READS_UNARY, RUNNERS

UNARY_KINDS = ("logits", "probs")
INITS = ("convcrf", "softmax")

#: Named settings. "convcrf": ConvCRF's default_conf (Kraehenbuehl and Koltun's Gaussian
#: parameters, 11x11 filter on a 4x blurred grid, 5 iterations). "seed": the original
#: recipe's setting (5x5 filter, no blur, 200 iterations), which passed the ensemble's
#: probabilities where ConvCRF expects logits: pass probabilities with unary_kind="logits"
#: to reproduce it.
CRF_PRESETS: dict[str, dict[str, Any]] = {
    "convcrf": dict(DEFAULTS),
    "seed": {**DEFAULTS, "filter_size": 5, "blur": 1, "num_iter": 200, "unary_kind": "logits"},
}


@dataclass(frozen=True)
class ConvCrfParams:
    """A complete, validated ConvCRF setting (build one with :func:`convcrf_params`).

    The compiled kernels take its float32 constants as the C++ record of the same name,
    ``segkit._C.ConvCrfParams`` (:attr:`kernel_params`)."""
    filter_size: int
    blur: int
    num_iter: int
    pos_sdims: float
    pos_compat: float
    col_schan: float
    col_compat: float
    col_sdims: float | None
    weight_init: float
    unary_weight: float
    unary_kind: str
    init: str
    final_softmax: bool
    #: What a fitted CRF learned beyond the scalars: one message weight per class (None:
    #: ``weight_init`` for every class) and ConvCRF's ``convcomp`` C x C compatibility
    #: (M' = M + compat @ M; None: none). Tuples, so that the record stays hashable.
    weight: tuple[float, ...] | None = None
    compat: tuple[tuple[float, ...], ...] | None = None

    @property
    def fitted(self) -> bool:
        """Whether the setting needs the per-class kernel (unequal class weights or a
        compatibility matrix); equal weights run as ``weight_init``."""
        return self.compat is not None or (
            self.weight is not None and any(w != self.weight[0] for w in self.weight))

    def check_classes(self, c: int) -> None:
        """InputError unless the learned arrays fit C classes."""
        if self.weight is not None and len(self.weight) != c:
            raise InputError(f"weight has {len(self.weight)} values for {c} classes")
        if self.compat is not None and len(self.compat) != c:
            raise InputError(f"compat is {len(self.compat)} x {len(self.compat)} for {c} "
                             "classes")

    def reference_kwargs(self) -> dict[str, Any]:
        """The setting as keyword arguments of the NumPy reference (every field)."""
        return asdict(self)

    def as_dict(self) -> dict[str, Any]:
        """The setting as plain JSON values (tuned.json, the jobs); ``convcrf_params(None,
        **d)`` gives it back."""
        d = asdict(self)
        d["weight"] = None if self.weight is None else list(self.weight)
        d["compat"] = None if self.compat is None else [list(r) for r in self.compat]
        return d

    def kernel_constants(self) -> dict[str, Any]:
        """The float32 constants the compiled kernels take (as ConvCRF's float32 tensors), by
        the field names of the C++ parameter record (csrc/cpu/convcrf.h ConvCrfParams)."""
        a, w = coefficients(self.weight_init, self.unary_weight)
        return dict(
            filter_size=self.filter_size, blur=self.blur, num_iter=self.num_iter,
            pos_inv=float(np.float32(1.0 / self.pos_sdims)),
            col_inv=float(np.float32(1.0 / self.col_schan)),
            colpos_inv=None if self.col_sdims is None else float(np.float32(1.0 / self.col_sdims)),
            pos_compat=float(np.float32(self.pos_compat)),
            col_compat=float(np.float32(self.col_compat)),
            unary_coef=float(a), message_coef=float(w),
            unary_kind=self.unary_kind, init=self.init, final_softmax=bool(self.final_softmax))

    @property
    def kernel_params(self):
        """The C++ parameter record (``segkit._C.ConvCrfParams``) of this setting, built once
        per setting (not stored on the setting, which stays picklable)."""
        return _kernel_record(self)


@functools.lru_cache(maxsize=64)
def _kernel_record(params: ConvCrfParams):
    from .. import _C

    record = _C.ConvCrfParams()
    for name, value in params.kernel_constants().items():
        setattr(record, name, value)
    return record


def _real(name: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"{name} must be a real number; got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite; got {value}")
    if positive and value <= 0:
        raise InputError(f"{name} must be > 0; got {value}")
    return value


def convcrf_params(preset: str | None = None, **overrides: Any) -> ConvCrfParams:
    """The setting of a call: ConvCRF's defaults, then the preset's values, then every
    override that is not None; validated (errors name the argument and the bad value)."""
    if preset is not None:
        _validate.choice("preset", preset, tuple(CRF_PRESETS))
    unknown = set(overrides) - set(DEFAULTS) - {"weight", "compat"}
    if unknown:
        raise InputTypeError(f"unknown ConvCRF parameter(s): {', '.join(sorted(unknown))}")
    p = dict(DEFAULTS)
    if preset is not None:
        p.update(CRF_PRESETS[preset])
    p.update({k: v for k, v in overrides.items() if v is not None})

    filter_size = _validate.integer("filter_size", p["filter_size"], minimum=1)
    if filter_size % 2 == 0:
        raise InputError(f"filter_size must be odd; got {filter_size}")
    blur = _validate.integer("blur", p["blur"], minimum=1)
    if blur > 1 and blur % 2:
        raise InputError(f"blur must be 1 or even (ConvCRF's pooling); got {blur}")
    num_iter = _validate.integer("num_iter", p["num_iter"], minimum=1)
    final_softmax = p["final_softmax"]
    if not isinstance(final_softmax, (bool, np.bool_)):
        raise InputTypeError(f"final_softmax must be True or False; got {final_softmax!r}")
    return ConvCrfParams(
        filter_size=filter_size, blur=blur, num_iter=num_iter,
        pos_sdims=_real("pos_sdims", p["pos_sdims"], positive=True),
        pos_compat=_real("pos_compat", p["pos_compat"]),
        col_schan=_real("col_schan", p["col_schan"], positive=True),
        col_compat=_real("col_compat", p["col_compat"]),
        col_sdims=None if p["col_sdims"] is None else _real("col_sdims", p["col_sdims"],
                                                            positive=True),
        weight_init=_real("weight_init", p["weight_init"]),
        unary_weight=_real("unary_weight", p["unary_weight"]),
        unary_kind=_validate.choice("unary_kind", p["unary_kind"], UNARY_KINDS),
        init=_validate.choice("init", p["init"], INITS),
        final_softmax=bool(final_softmax),
        weight=_learned("weight", p.get("weight"), 1), compat=_learned("compat", p.get("compat"), 2))


def _learned(name: str, value: Any, ndim: int):
    """A learned array (weight: C values; compat: C x C) as nested float tuples, or None."""
    if value is None:
        return None
    if type(value).__module__.startswith("torch"):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputTypeError(f"{name} must be an array of numbers; got {value!r}") from None
    if name == "compat" and arr.ndim == 4 and arr.shape[2:] == (1, 1):
        arr = arr[:, :, 0, 0]  # ConvCRF's 1x1 convolution weight
    if name == "weight" and arr.ndim == 4 and arr.shape[0] == 1 and arr.shape[2:] == (1, 1):
        arr = arr.reshape(-1)  # ConvCRF's (1, C, 1, 1)
    if arr.ndim != ndim or arr.shape[0] < 2 or (ndim == 2 and arr.shape[1] != arr.shape[0]):
        raise InputError(f"{name} must be {'C values' if ndim == 1 else 'a C x C matrix'} "
                         f"(C >= 2); got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} must be finite; got {arr.tolist()}")
    arr = arr.astype(np.float32).astype(np.float64)  # the float32 the kernels take
    return tuple(arr.tolist()) if ndim == 1 else tuple(tuple(r) for r in arr.tolist())


def convcrf(unary: Any, image: Any, *, preset: str | None = None, filter_size: int | None = None,
            blur: int | None = None, num_iter: int | None = None, pos_sdims: float | None = None,
            pos_compat: float | None = None, col_schan: float | None = None,
            col_compat: float | None = None, col_sdims: float | None = None,
            weight_init: float | None = None, unary_weight: float | None = None,
            unary_kind: str | None = None, init: str | None = None,
            final_softmax: bool | None = None, weight: Any = None, compat: Any = None,
            backend: str = "auto"):
    """Refine segmentation scores with ConvCRF (mean-field inference of a convolutional CRF).

    Equal to ConvCRF's ``GaussCRF`` (Teichmann and Cipolla, 2018) with its default
    configuration, for any image size and batch, without ConvCRF's (N, C, k*k, H, W) unfold
    tensor: the fast backends compute the k x k Gaussian weights once per image and make one
    pass over Q per iteration (memory O(C*H*W + k*k*H*W/blur^2)).

    Every setting left at None takes the preset's value, or ConvCRF's default without a preset.

    Parameters
    ----------
    unary : array, shape (N, C, H, W) or (C, H, W)
        Class scores, float32 or float16 (float64 is accepted), C >= 2, finite. Logits by
        default; probabilities with ``unary_kind="probs"``. NumPy arrays, CuPy arrays, torch
        tensors (CPU or CUDA).
    image : array, shape (N, 3, H, W), (N, H, W, 3), (H, W, 3) or (3, H, W)
        The RGB image(s), uint8 or float in 0-255 (for other ranges scale ``col_schan``).
        When both layouts fit (H = W = 3) a 4-D image is read as (N, 3, H, W) and a 3-D one
        as (H, W, 3).
    preset : {"convcrf", "seed"}, optional
        ``segkit.CRF_PRESETS``: "convcrf" is ConvCRF's default_conf; "seed" the original
        recipe (filter_size 5, blur 1, 200 iterations, unary_kind "logits").
    filter_size : odd int, default 11
        Side of the message window on the pooled grid (it spans filter_size * blur pixels).
    blur : int, 1 or even, default 4
        Features and Q are averaged over blur x blur cells (the padding, ceil(off/2) before
        the first row and column for off = (blur - H % blur) % blur, is not counted); the
        message is upsampled bilinearly (align_corners=False) and cropped.
    num_iter : int >= 1, default 5
    pos_sdims, pos_compat : float, default 3, 3
        Spatial kernel: ``pos_compat * exp(-|dp|^2 / (2 pos_sdims^2))`` in pixels.
    col_schan, col_compat : float, default 13, 10
        Colour kernel: ``col_compat * exp(-|dI|^2 / (2 col_schan^2))`` (RGB in 0-255).
    col_sdims : float, optional
        Adds a spatial term ``|dp|^2 / col_sdims^2`` to the colour kernel (ConvCRF's use_bias);
        off by default, as in ConvCRF's default_conf.
    weight_init, unary_weight : float, default 0.2, 1
        pred = (unary_weight - weight_init) * U + weight_init * message.
    unary_kind : {"logits", "probs"}, default "logits"
        "logits": U = log_softmax(unary) (ConvCRF's default; its first message is computed on
        U itself, a quirk kept for equality). "probs": U = log(unary) and Q_0 = softmax(U)
        (ConvCRF with logsoftmax off; probabilities must be >= 0 with a positive value at
        every pixel).
    init : {"convcrf", "softmax"}, default "convcrf"
        "softmax" starts from the textbook Q_0 = softmax(U) for either kind.
    final_softmax : bool, default False
        Return probabilities (softmax after the last iteration) instead of scores.
    weight, compat : array (C,) and array (C, C), optional
        A fitted CRF (``segkit.torch.ConvCRF(trainable=True)``, ``segkit tune``): one message
        weight per class in place of ``weight_init``, and ConvCRF's ``convcomp``
        compatibility (M' = M + compat @ M). Every backend applies them (the C++ and CUDA
        backends through the trainable op's forward, which keeps nothing for a backward).
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}
        "auto" takes "cuda" for GPU arrays and the fastest CPU backend otherwise.

    Returns
    -------
    array of float32, the unary's shape
        The scores after the last iteration (argmax over the class axis gives labels, see
        :func:`convcrf_labels`). A NumPy array for host input; a CuPy array or torch CUDA
        tensor for GPU input, on the same device.

    Examples
    --------
    >>> import numpy as np, segkit
    >>> rng = np.random.default_rng(0)
    >>> image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    >>> logits = rng.standard_normal((4, 40, 60)).astype(np.float32)
    >>> segkit.convcrf(logits, image).shape
    (4, 40, 60)
    >>> segkit.convcrf(logits, image, filter_size=7, blur=1, num_iter=10).dtype
    dtype('float32')
    """
    settings = dict(locals())
    return _scores(settings)


def _scores(settings: dict, finish=None):
    """The float32 scores of one convcrf / convcrf_labels call's arguments, or `finish` of
    them, in the caller's kind."""
    s = dict(settings)
    unary, image, preset, backend = s.pop("unary"), s.pop("image"), s.pop("preset"), \
        s.pop("backend")
    return _run(unary, image, convcrf_params(preset, **s), backend, finish)


def convcrf_labels(unary: Any, image: Any, *, preset: str | None = None,
                   filter_size: int | None = None, blur: int | None = None,
                   num_iter: int | None = None, pos_sdims: float | None = None,
                   pos_compat: float | None = None, col_schan: float | None = None,
                   col_compat: float | None = None, col_sdims: float | None = None,
                   weight_init: float | None = None, unary_weight: float | None = None,
                   unary_kind: str | None = None, init: str | None = None,
                   final_softmax: bool | None = None, weight: Any = None, compat: Any = None,
                   backend: str = "auto"):
    """Labels after ConvCRF: the argmax over classes of :func:`convcrf` (same arguments).

    Returns uint8 labels for C <= 256 classes, int32 otherwise, of shape (N, H, W) or (H, W);
    ties go to the smallest class. Same array kind as :func:`convcrf` returns.

    >>> import numpy as np, segkit
    >>> rng = np.random.default_rng(0)
    >>> probs = rng.dirichlet(np.ones(3), (32, 48)).transpose(2, 0, 1).astype(np.float32)
    >>> image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    >>> segkit.convcrf_labels(probs, image, unary_kind="probs").dtype
    dtype('uint8')
    """
    def labels_of(scores):
        dtype = np.uint8 if scores.shape[-3] <= 256 else np.int32
        return scores.argmax(axis=-3).astype(dtype)

    return _scores({k: v for k, v in locals().items() if k != "labels_of"}, labels_of)


# ---------------------------------------------------------------------------------------

def _run(unary: Any, image: Any, params: ConvCrfParams, backend: str, finish=None):
    """Validate, convert and run; returns the scores (or `finish` of them) in the caller's
    kind."""
    with OP.call(backend, unary, image) as call:  # resolve; on CUDA the caller's stream
        return _run_on(call, call.array(unary), call.array(image), params, finish)


def _run_on(call, u: Any, img: Any, params: ConvCrfParams, finish=None):
    xp = np
    if call.backend == "cuda":
        import cupy as xp
    u4, img4, squeeze = canonical_shapes(u, img)
    params.check_classes(u4.shape[1])
    if params.weight is not None and not params.fitted:  # equal weights: weight_init
        params = replace(params, weight_init=params.weight[0], weight=None)
    if np.dtype(u4.dtype).kind != "f":
        raise InputTypeError(f"unary must be float32 or float16 scores; got dtype {u4.dtype}")
    if call.backend in READS_UNARY:  # copied only where dtype or layout need it
        scores = xp.ascontiguousarray(u4, dtype=np.float32)
    else:  # the runner updates it in place
        scores = xp.array(u4, dtype=np.float32, order="C", copy=True)
    if call.backend not in CHECKS_LOGITS or params.unary_kind != "logits":
        check_unary_values(scores, params.unary_kind, xp)
    img4 = image_dtype(img4, xp)
    scores = call.runner(scores, img4, params) if scores.size else scores.copy()
    scores = scores[0] if squeeze else scores
    return call.back(finish(scores) if finish is not None else scores)


def canonical_shapes(u, img):
    """(unary (N, C, H, W), image view (N, 3, H, W), squeeze) or a ValueError."""
    if u.ndim not in (3, 4):
        raise InputError(f"unary must be (C, H, W) or (N, C, H, W); got shape {tuple(u.shape)}")
    _validate.fits_memory("unary", u.shape, 4)
    c, h, w = u.shape[-3:]
    if c < 2:
        raise InputError(f"unary must have at least 2 classes; got C={c} "
                         f"(shape {tuple(u.shape)})")
    ish = tuple(img.shape)
    if u.ndim == 3:
        if ish == (h, w, 3):
            return u[None], img.transpose(2, 0, 1)[None], True
        if ish == (3, h, w):
            return u[None], img[None], True
        raise InputError(f"image must be (H, W, 3) or (3, H, W) = ({h}, {w}, 3) or (3, {h}, {w}) "
                         f"for a unary of shape {tuple(u.shape)}; got shape {ish}")
    n = u.shape[0]
    if ish == (n, 3, h, w):
        return u, img, False
    if ish == (n, h, w, 3):
        return u, img.transpose(0, 3, 1, 2), False
    raise InputError(f"image must be (N, 3, H, W) = ({n}, 3, {h}, {w}) or (N, H, W, 3) = "
                     f"({n}, {h}, {w}, 3) for a unary of shape {tuple(u.shape)}; got shape {ish}")


def check_finite_unary(scores, xp) -> None:
    """InputError naming how many values of the unary are NaN or inf, if any."""
    if scores.size and not all_finite(scores, xp):
        bad = int((~xp.isfinite(scores)).sum())
        raise InputError(f"unary contains NaN or inf ({bad} values)")


def check_unary_values(scores, unary_kind: str, xp) -> None:
    if scores.size == 0:
        return
    check_finite_unary(scores, xp)
    if unary_kind == "probs":
        low = float(scores.min())
        if low < 0:
            raise InputError(f"unary: unary_kind='probs' needs probabilities >= 0; got a minimum "
                             f"of {low:.3g} (pass logits with unary_kind='logits')")
        if not bool((scores.max(axis=1) > 0).all()):
            raise InputError("unary: unary_kind='probs', but some pixels have probability 0 for "
                             "every class")


def all_finite(a, xp) -> bool:
    """Whether every value of the float32 array `a` is finite, without a temporary of its size
    on the host: a finite sum of squares (float32; NaN and inf propagate) proves it, and only
    values above 1.8e19 (whose squares overflow) or a bad value take the exact test."""
    if xp is np and a.flags.c_contiguous:
        flat = a.reshape(-1)
        if math.isfinite(float(np.einsum("i,i->", flat, flat))):  # not BLAS: no thread pool
            return True
    return bool(xp.isfinite(a).all())


def image_dtype(img, xp):
    """uint8 and float32 images pass as they are; other floats become float32."""
    dt = np.dtype(img.dtype)
    if dt == np.uint8:
        return img
    if dt.kind != "f":
        raise InputTypeError(f"image must be uint8 or floating point (values 0-255); got dtype {dt}")
    if dt != np.float32:
        img = img.astype(np.float32)
    if img.size and not bool(xp.isfinite(img).all()):
        raise InputError("image contains NaN or inf")
    return img


#: The backends of convcrf and its runner on each (segkit/ops/convcrf_backends.py): float32
#: scores (N, C, H, W), updated in place, the image (N, 3, H, W) and a :class:`ConvCrfParams`.
OP = _backend.register("convcrf", RUNNERS)
