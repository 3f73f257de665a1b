"""The ensemble setting: the one home of what `segkit tune` writes and `segkit ensemble
--tuned` / `segkit crf --tuned` apply.

An **ensemble setting** is three parts:

* ``weights``: one soft-vote weight per model (>= 0, checked by
  :func:`segkit.ops.soft_vote.check_weights`);
* ``bias``: one additive offset per class on the log of the averaged probabilities, or None;
* ``crf``: a **CRF setting** (a dict, see below), or None ("off").

A **CRF setting** is a dict of the keys in :data:`CRF_KEYS` (keyword arguments of
:func:`segkit.convcrf`): the configuration ``filter_size``, ``blur``, ``num_iter``,
``unary_kind`` and the parameters ``pos_compat``, ``col_compat``, ``pos_sdims``,
``col_schan``. A **fitted CRF setting** (``segkit tune`` fits it by gradient) also holds
``weight``: one message weight per class (ConvCRF's trainable ``weight``; a preset has 0.2
for every class). Presets are named by string and become settings here
(:func:`crf_setting`): "convcrf" on averaged probabilities (``unary_kind="probs"``), and
"seed", the original recipe's CRF, which passed the probabilities as logits
(``unary_kind="logits"``, 200 iterations). The **recipe** is the whole setting the original
recipe used: equal weights, no bias, the "seed" CRF (:func:`recipe_crf`).

A setting is applied to one image by :func:`setting_labels` (NumPy only, no torch): a CRF
setting, fitted or not, is keyword arguments of :func:`segkit.convcrf`, which applies per-class
weights on every backend.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, PathNotFoundError, SegkitError
from ..io import atomic
from ..ops.convcrf import convcrf
from ..ops.soft_vote import check_weights
from ..ops.vote_confusion import bias_scale, check_bias

#: The file `segkit tune` writes into its output folder.
TUNED = "tuned.json"
#: The format tag and version of tuned.json.
FORMAT, VERSION = "segkit-tuned", 2
#: The keys of a CRF setting (keyword arguments of :func:`segkit.convcrf`).
CRF_KEYS = ("filter_size", "blur", "num_iter", "pos_compat", "col_compat", "pos_sdims",
            "col_schan", "unary_kind")
#: What a fitted CRF setting learned (besides its configuration).
LEARNED_KEYS = ("weight", "pos_compat", "col_compat", "pos_sdims", "col_schan")
#: Probabilities are floored to this before a fitted CRF takes their log (float16 stores
#: round tiny probabilities to 0; the trainable op needs them > 0).
PROB_FLOOR = 1e-7


def crf_setting(preset: str, **overrides: Any) -> dict[str, Any]:
    """The CRF setting of a preset, as applied to averaged probabilities.

    Parameters
    ----------
    preset : {"convcrf", "seed"}
        "convcrf": ConvCRF's default configuration with ``unary_kind="probs"``; "seed": the
        original recipe's CRF as it ran (probabilities passed as logits).
    **overrides
        Keys of :data:`CRF_KEYS` replacing the preset's values.

    Returns
    -------
    dict
        A CRF setting (keys :data:`CRF_KEYS`).

    Examples
    --------
    >>> from segkit.jobs.settings import crf_setting
    >>> crf_setting("convcrf")["unary_kind"], crf_setting("seed")["num_iter"]
    ('probs', 200)
    """
    from ..ops.convcrf import CRF_PRESETS

    if preset not in CRF_PRESETS:
        raise InputError(f"crf preset must be one of {', '.join(map(repr, CRF_PRESETS))}; "
                         f"got {preset!r}")
    kind = "logits" if preset == "seed" else "probs"
    return check_crf({**{k: CRF_PRESETS[preset][k] for k in CRF_KEYS}, "unary_kind": kind,
                      **overrides})


def recipe_crf() -> dict[str, Any]:
    """The original recipe's CRF setting: ``crf_setting("seed")`` (filter 5, blur 1, 200
    iterations, the averaged probabilities passed as logits).

    Returns
    -------
    dict
        A CRF setting.
    """
    return crf_setting("seed")


def is_fitted(crf: dict | None) -> bool:
    """Whether `crf` is a fitted CRF setting (it has per-class ``weight``).

    Parameters
    ----------
    crf : dict or None

    Returns
    -------
    bool
    """
    return isinstance(crf, dict) and crf.get("weight") is not None


def check_crf(crf: Any, num_classes: int | None = None) -> dict[str, Any] | None:
    """A CRF setting validated (a preset name becomes its setting), or None for None.

    Parameters
    ----------
    crf : dict, str or None
        A CRF setting (keys :data:`CRF_KEYS`, plus ``weight`` and optionally ``compat`` for a
        fitted one) or a preset name ("convcrf", "seed").
    num_classes : int, optional
        Checks that a fitted setting has one ``weight`` per class.

    Returns
    -------
    dict or None

    Raises
    ------
    InputError
        Naming the bad key or value.
    """
    if crf is None:
        return None
    if isinstance(crf, str):
        return crf_setting(crf)
    if not isinstance(crf, dict):
        raise InputError(f"crf must be a CRF setting (a dict), a preset name or null; got "
                         f"{crf!r}")
    unknown = sorted(set(crf) - set(CRF_KEYS) - {"weight", "compat"})
    if unknown:
        raise InputError(f"crf has unknown keys {unknown}; known: {', '.join(CRF_KEYS)}, "
                         "weight, compat")
    from ..ops.convcrf import convcrf_params

    learned = {"weight", "compat"}
    convcrf_params(None, **{k: v for k, v in crf.items() if k not in learned})  # a bad value
    out = dict(crf)
    if crf.get("compat") is not None:  # ConvCRF's C x C compatibility (the one record checks)
        p = convcrf_params(None, compat=crf["compat"])
        if num_classes is not None and len(p.compat) != num_classes:
            raise InputError(f"crf compat is {len(p.compat)} x {len(p.compat)} for "
                             f"{num_classes} classes")
        out["compat"] = [list(r) for r in p.compat]
    weight = crf.get("weight")
    if weight is not None:
        if not isinstance(weight, (list, tuple)) or len(weight) < 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in weight):
            raise InputError(f"crf weight must be a list of finite numbers, one per class; "
                             f"got {weight!r}")
        if num_classes is not None and len(weight) != num_classes:
            raise InputError(f"crf weight has {len(weight)} values for {num_classes} classes")
        for key in ("pos_compat", "col_compat"):
            if key in crf and crf[key] < 0:
                raise InputError(f"crf {key} must be >= 0; got {crf[key]}")
        out["weight"] = [float(v) for v in weight]
    return out


def crf_scores(mean: np.ndarray, image: np.ndarray, crf: dict) -> np.ndarray:
    """The CRF scores (C, H, W) float32 of one image's averaged probabilities.

    Parameters
    ----------
    mean : array (C, H, W)
        Averaged probabilities (float32 or float16).
    image : array (H, W, 3)
        The RGB image, uint8 (0-255).
    crf : dict
        A CRF setting: keyword arguments of :func:`segkit.convcrf` (a fitted one, with
        per-class ``weight``, runs on the probabilities floored at :data:`PROB_FLOOR`).

    Returns
    -------
    array (C, H, W) float32
    """
    weight = crf.get("weight")
    unary = np.asarray(mean)
    if weight is not None:  # a fitted CRF takes the log of the probabilities
        unary = np.maximum(np.asarray(mean, np.float32), np.float32(PROB_FLOOR))
    return np.asarray(convcrf(unary, image, **crf))


def setting_labels(mean: np.ndarray, scale: np.ndarray | None, crf: dict | None,
                   image: np.ndarray | None, bias: np.ndarray | None = None) -> np.ndarray:
    """Labels of one image under an ensemble setting, from its averaged probabilities.

    Without a CRF: ``argmax_c mean_c * scale_c`` in float32 (``scale = exp(bias)``, ties to
    the smallest class: the arithmetic of :func:`segkit.vote_confusion`); with one:
    ``argmax_c crf_scores_c + bias_c`` (:func:`crf_scores`).

    Parameters
    ----------
    mean : array (C, H, W) float32
        The soft vote's averaged probabilities under the setting's weights.
    scale : array (C,) or None
        ``exp(bias)`` (``segkit.ops.vote_confusion.bias_scale``), for the path without a
        CRF.
    crf : dict or None
        A CRF setting (:func:`check_crf`).
    image : array (H, W, 3) uint8 or None
        Needed with a CRF.
    bias : array (C,) or None
        Added to the CRF scores.

    Returns
    -------
    array (H, W) int64
    """
    if crf is None:
        score = mean if scale is None else mean * scale.astype(np.float32)[:, None, None]
        return np.argmax(score, axis=0)
    scores = crf_scores(mean, image, crf)
    if bias is not None:
        scores = scores + np.asarray(bias, np.float32)[:, None, None]
    return np.argmax(scores, axis=0)


def setting_scale(bias: Any, num_classes: int) -> np.ndarray | None:
    """``exp(bias)`` as :func:`setting_labels` takes it (None for no bias).

    Parameters
    ----------
    bias : sequence of float or None
    num_classes : int

    Returns
    -------
    array (C,) or None
    """
    return None if bias is None else bias_scale(np.asarray(bias, np.float64), num_classes)


def check_tuned(doc: Any, where: str = "tuned") -> dict:
    """A tuned setting (the contents of a tuned.json, or the dict a caller passes as
    ``tuned=``) checked, with its CRF preset name, if any, turned into its CRF setting.

    The one check of a tuned setting: :func:`load_tuned` runs it on a file's contents, and
    ``segkit.ensemble`` / ``segkit.crf_job`` on a dict they are given, so a bad value is
    refused before any image is processed.

    Parameters
    ----------
    doc : dict
        Holds ``weights`` (one >= 0 per model), ``classes`` (the class names), and optionally
        ``bias`` (one finite number per class, or None) and ``crf`` (a CRF setting, a preset
        name, or None; a fitted setting's ``weight`` has one value per class).
    where : str
        What `doc` is (a path, "tuned (dict)"), named in the messages.

    Returns
    -------
    dict
        A copy of `doc` with ``weights`` and ``bias`` as lists of floats, ``classes`` as a
        list and ``crf`` checked (:func:`check_crf`).

    Raises
    ------
    InputError, InputTypeError
        Naming `where`, the field and the bad value.

    Examples
    --------
    >>> from segkit.jobs.settings import check_tuned
    >>> doc = check_tuned({"weights": [1, 1], "classes": ["a", "b"], "crf": "seed"})
    >>> doc["crf"]["num_iter"], doc["weights"], doc["bias"]
    (200, [1.0, 1.0], None)
    """
    if not isinstance(doc, dict) or "weights" not in doc or "classes" not in doc:
        got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise InputError(f"{where}: not a segkit tuned setting (a dict with weights and "
                         f"classes, as `segkit tune` writes); got {got}")
    classes = doc["classes"]
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (list, tuple)) or \
            len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise InputError(f"{where}: classes must be a list of at least 2 class names; got "
                         f"{classes!r}")
    weights = doc["weights"]
    if isinstance(weights, (str, bytes)) or not isinstance(weights, (list, tuple, np.ndarray)):
        raise InputError(f"{where}: weights must be a list of numbers, one per model; got "
                         f"{weights!r}")
    try:
        check_weights(weights, len(weights))
        bias = check_bias(doc.get("bias"), len(classes))
        crf = check_crf(doc.get("crf"), len(classes))
    except SegkitError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    return {**doc, "weights": [float(w) for w in weights], "classes": list(classes),
            "bias": None if bias is None else [float(b) for b in bias], "crf": crf}


def load_tuned(path: str | Path) -> dict:
    """Read and check a tuned.json (or the folder holding one).

    Parameters
    ----------
    path : path
        ``tuned.json`` or its folder.

    Returns
    -------
    dict
        The document, checked by :func:`check_tuned`: ``weights`` (one per model), ``bias``
        (one per class or None) and ``crf`` (a CRF setting or None).

    Raises
    ------
    PathNotFoundError, InputError
    """
    path = Path(path)
    if path.is_dir():
        path = path / TUNED
    if not path.is_file():
        raise PathNotFoundError(f"tuned: no such file {path} (write one with `segkit tune`)")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except ValueError as exc:  # bad JSON, or bytes that are not UTF-8 (a binary file)
        raise InputError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
    return check_tuned(doc, str(path))


def write_tuned(out: str | Path, doc: dict) -> Path:
    """Write `doc` (weights, bias, crf, classes, ...) atomically as ``out/tuned.json``.

    Parameters
    ----------
    out : path
        The folder (created).
    doc : dict
        Must hold ``weights`` and ``classes``; ``format`` and ``version`` are set here.

    Returns
    -------
    Path
        The file written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "version": VERSION, **doc}
    check_tuned(doc, str(out / TUNED))  # what load_tuned will check, before writing
    atomic.write_json(out / TUNED, doc)
    return out / TUNED
