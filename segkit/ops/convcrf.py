"""``segkit.convcrf``: ConvCRF post-processing (mean-field inference of a convolutional CRF),
exact to ConvCRF's ``GaussCRF`` with its default configuration."""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InputError, InputTypeError
from .. import _backend, _validate
from ..reference.convcrf import DEFAULTS, coefficients

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

    def reference_kwargs(self) -> dict[str, Any]:
        """The setting as keyword arguments of the NumPy reference (every field)."""
        return asdict(self)

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
    unknown = set(overrides) - set(DEFAULTS)
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
        final_softmax=bool(final_softmax))


def convcrf(unary: Any, image: Any, *, preset: str | None = None, filter_size: int | None = None,
            blur: int | None = None, num_iter: int | None = None, pos_sdims: float | None = None,
            pos_compat: float | None = None, col_schan: float | None = None,
            col_compat: float | None = None, col_sdims: float | None = None,
            weight_init: float | None = None, unary_weight: float | None = None,
            unary_kind: str | None = None, init: str | None = None,
            final_softmax: bool | None = None, backend: str = "auto"):
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
                   final_softmax: bool | None = None, backend: str = "auto"):
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
    name = _backend.resolve(backend, unary, image)
    if name == "cuda":
        from .._cuda import op_stream

        with op_stream(unary, image):  # the whole op on the caller's stream (torch's, for tensors)
            return _run_on(name, unary, image, params, finish)
    return _run_on(name, unary, image, params, finish)


def _run_on(name: str, unary: Any, image: Any, params: ConvCrfParams, finish=None):
    if name == "cuda":
        import cupy as xp

        from .._cuda import as_cupy

        u, back = as_cupy(unary)
        img, _ = as_cupy(image)
    else:
        xp = np
        u, img, back = np.asarray(_detached(unary)), np.asarray(_detached(image)), None
    u4, img4, squeeze = canonical_shapes(u, img)
    if np.dtype(u4.dtype).kind != "f":
        raise InputTypeError(f"unary must be float32 or float16 scores; got dtype {u4.dtype}")
    scores = xp.array(u4, dtype=np.float32, order="C", copy=True)
    check_unary_values(scores, params.unary_kind, xp)
    img4 = image_dtype(img4, xp)
    if scores.size:
        scores = _RUNNERS[name](scores, img4, params)
    scores = scores[0] if squeeze else scores
    out = finish(scores) if finish is not None else scores
    return back(out) if back is not None else out


def _detached(x):
    """torch CPU tensors without autograd history (NumPy refuses those that have one)."""
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        return x.detach()
    return x


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


def check_unary_values(scores, unary_kind: str, xp) -> None:
    if scores.size == 0:
        return
    if not bool(xp.isfinite(scores).all()):
        bad = int((~xp.isfinite(scores)).sum())
        raise InputError(f"unary contains NaN or inf ({bad} values)")
    if unary_kind == "probs":
        low = float(scores.min())
        if low < 0:
            raise InputError(f"unary: unary_kind='probs' needs probabilities >= 0; got a minimum "
                             f"of {low:.3g} (pass logits with unary_kind='logits')")
        if not bool((scores.max(axis=1) > 0).all()):
            raise InputError("unary: unary_kind='probs', but some pixels have probability 0 for "
                             "every class")


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


def _run_numpy(scores, img, params: ConvCrfParams):
    from ..reference.convcrf import convcrf_numpy

    return convcrf_numpy(scores, img.astype(np.float32), **params.reference_kwargs())


def _host_image(img):
    item = img.itemsize
    if img.size and (min(img.strides) < 0 or any(s % item for s in img.strides)):
        img = np.ascontiguousarray(img)
    return img


def _run_numba(scores, img, params: ConvCrfParams):
    from .._numba.convcrf import convcrf as kernel

    k = params.kernel_constants()
    k.update(unary_kind=UNARY_KINDS.index(k["unary_kind"]), init=INITS.index(k["init"]))
    kernel(scores, _host_image(img), **k)
    return scores


def _run_cpp(scores, img, params: ConvCrfParams):
    from .. import _C

    _C.convcrf(scores, _host_image(img), params.kernel_params)
    return scores


def _run_cuda(scores, img, params: ConvCrfParams):
    import cupy

    from .. import _cuda

    def launch(name, total, args):
        _cuda.launch(_cuda.get_kernel("convcrf", name), total, args)  # op_stream's stream

    item = img.itemsize
    if img.size and (min(img.strides) < 0 or any(s % item for s in img.strides)):
        img = cupy.ascontiguousarray(img)
    cuda_steps(scores, img, params.kernel_constants(), launch,
               lambda shape: cupy.empty(shape, np.float32))
    return scores


def cuda_steps(scores, img, k: dict, launch, empty) -> None:
    """The CUDA backend's launch sequence (csrc/cuda/convcrf.cu), in place on `scores`; `k` is
    :meth:`ConvCrfParams.kernel_constants`.

    `launch(kernel_name, work_items, args)` runs one kernel, `empty(shape)` allocates a float32
    device array; tests drive the same sequence with the kernels compiled for the host. Each
    kernel's name says what it runs (no mode codes among the arguments).
    """
    from ..reference.convcrf import pool_geometry

    n, c, h, w = scores.shape
    b, s = k["blur"], k["filter_size"] // 2
    hp, p0 = pool_geometry(h, b)
    wp, p1 = pool_geometry(w, b)
    col_pos = k["colpos_inv"] is not None
    nf = 7 if col_pos else 5
    i32, i64, f32 = np.int32, np.int64, np.float32
    cells = n * hp * wp
    feat = empty((n, nf, hp, wp))
    item = img.itemsize
    launch(f"convcrf_features_{'u8' if img.dtype == np.uint8 else 'f32'}", cells,
           (img, feat, i64(n), i32(h), i32(w), i32(hp), i32(wp), i32(p0), i32(p1), i32(b),
            *(i64(st // item) for st in img.strides), f32(k["pos_inv"]), f32(k["col_inv"]),
            i32(col_pos), f32(k["colpos_inv"] or 0.0)))
    launch(f"convcrf_unary_{k['unary_kind']}", n * h * w, (scores, i64(n), i32(c), i64(h * w)))
    q = [empty((n, c, hp, wp)), empty((n, c, hp, wp))]
    m = empty((n, c, hp, wp))
    a, wt = f32(k["unary_coef"]), f32(k["message_coef"])
    geometry = (i64(n), i32(c), i32(h), i32(w), i32(hp), i32(wp), i32(p0), i32(p1), i32(b), a,
                wt)
    start_soft = k["unary_kind"] == "probs" or k["init"] == "softmax"
    # Q_0 = U (ConvCRF's start for logits) or softmax(U)
    launch("convcrf_start_softmax" if start_soft else "convcrf_start", cells,
           (scores, m, q[0], *geometry))
    message = "convcrf_message_colpos" if col_pos else "convcrf_message"
    for it in range(k["num_iter"]):
        launch(message, cells, (q[it % 2], m, feat, i64(n), i32(c), i32(hp), i32(wp), i32(s),
                                f32(k["pos_compat"]), f32(k["col_compat"])))
        if it < k["num_iter"] - 1:
            step = "convcrf_step"  # update, softmax, pooled into the next Q
        else:
            step = "convcrf_last_step_softmax" if k["final_softmax"] else "convcrf_last_step"
        launch(step, cells, (scores, m, q[(it + 1) % 2], *geometry))


_RUNNERS = {"numpy": _run_numpy, "numba": _run_numba, "cpp": _run_cpp, "cuda": _run_cuda}
