"""The ensemble setting: how every job turns one image's model probabilities into labels.

An **ensemble setting** (:class:`EnsembleSetting`) is three parts:

* ``weights``: one soft-vote weight per model (>= 0; None: equal weights);
* ``bias``: one additive offset per class on the log of the averaged probabilities, or None;
* ``crf``: a ConvCRF record (:class:`segkit.ops.convcrf.ConvCrfParams`, unary kind included),
  or None ("off").

Every job applies it one way (ensemble, crf, tune's held-out pass, the audit, the recipe):
:meth:`EnsembleSetting.vote` averages the models' probabilities under the weights;
:meth:`EnsembleSetting.labels` of the average is ``argmax_c mean_c * exp(bias_c)`` (float32,
as :func:`segkit.vote_confusion`) without a CRF, ``argmax_c crf_c + bias_c`` with one (the
bias after the CRF; a CRF with per-class ``weight`` takes them floored at :data:`PROB_FLOOR`).

**Presets** become settings in one place, :meth:`EnsembleSetting.preset`. A preset keeps its
name at every level: "convcrf" and "seed" are the CRFs of :data:`segkit.CRF_PRESETS`; what a
job adds is the unary kind its input is taken as (:data:`PRESET_UNARY_KIND`): an ensemble's
input is probabilities, so "convcrf" runs with ``unary_kind="probs"``, while "seed", the
original recipe's CRF, keeps its ``unary_kind="logits"`` (the recipe passed probabilities as
logits). The record says which (``crf.unary_kind``).

**tuned.json** (``segkit tune`` writes it, ``--tuned`` applies it) holds a setting as plain
JSON: ``weights``, ``bias``, ``crf`` (a dict of :data:`CRF_KEYS`, plus ``weight`` and
optionally ``compat`` when fitted; or a preset name), ``classes``, and the run's arguments
(its ``settings`` block, :class:`segkit.jobs.tune.TuneOptions`).
:meth:`EnsembleSetting.from_tuned` and :meth:`EnsembleSetting.to_dict` convert. The jobs'
out-folder records (``ensemble.json``, ``crf_settings.json``) are their *guards*
(:mod:`segkit.jobs._owner`), not settings.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError, InputTypeError, PathNotFoundError, SegkitError
from ..io import atomic
from ..ops.convcrf import ConvCrfParams, convcrf, convcrf_params
from ..ops.soft_vote import check_weights, soft_vote
from ..ops.vote_confusion import bias_scale, check_bias

#: The file `segkit tune` writes into its output folder.
TUNED = "tuned.json"
#: The format tag and version of tuned.json.
FORMAT, VERSION = "segkit-tuned", 2
#: The keys of a CRF in tuned.json (keyword arguments of :func:`segkit.convcrf`).
CRF_KEYS = ("filter_size", "blur", "num_iter", "pos_compat", "col_compat", "pos_sdims",
            "col_schan", "unary_kind")
#: What a fitted CRF learned (besides its configuration).
LEARNED_KEYS = ("weight", "pos_compat", "col_compat", "pos_sdims", "col_schan")
#: Probabilities are floored to this before a fitted CRF takes their log (float16 stores
#: round tiny probabilities to 0; the trainable op needs them > 0).
PROB_FLOOR = 1e-7
#: The unary kind each CRF preset takes averaged probabilities as: "convcrf" as what they
#: are, "seed" as logits (the original recipe's call, reproduced).
PRESET_UNARY_KIND = {"convcrf": "probs", "seed": "logits"}


@dataclass(frozen=True)
class EnsembleSetting:
    """One ensemble setting: soft-vote weights, per-class bias, ConvCRF (see the module).

    Parameters
    ----------
    weights : sequence of float, optional
        One weight >= 0 per model (normalised by their sum); None: equal weights.
    bias : sequence of float, optional
        One finite offset per class, added to the log of the averaged probabilities.
    crf : ConvCrfParams, optional
        The CRF run on the averaged probabilities and the image (its ``unary_kind`` says how
        it takes them); None: no CRF.

    Examples
    --------
    >>> import numpy as np
    >>> from segkit.jobs.settings import EnsembleSetting
    >>> s = EnsembleSetting.preset("seed")
    >>> s.crf.unary_kind, s.crf.num_iter, EnsembleSetting.preset("convcrf").crf.unary_kind
    ('logits', 200, 'probs')
    >>> mean = np.array([[[0.5]], [[0.4]], [[0.1]]], np.float32)
    >>> EnsembleSetting(bias=(0.0, 0.5, 0.0)).labels(mean).tolist()
    [[1]]
    """
    weights: tuple[float, ...] | None = None
    bias: tuple[float, ...] | None = None
    crf: ConvCrfParams | None = None

    def __post_init__(self):
        if self.weights is not None:
            check_weights(self.weights, len(self.weights))
            object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if self.bias is not None:
            b = check_bias(self.bias, len(self.bias))
            object.__setattr__(self, "bias", tuple(float(v) for v in b))
        if self.crf is not None and not isinstance(self.crf, ConvCrfParams):
            raise InputTypeError(f"crf must be a ConvCrfParams record (segkit.ops.convcrf."
                                 f"convcrf_params) or None; got {type(self.crf).__name__}")

    @classmethod
    def preset(cls, name: str, *, weights: Sequence[float] | None = None,
               bias: Sequence[float] | None = None, **overrides: Any) -> EnsembleSetting:
        """The setting whose CRF is the preset `name`, applied to averaged probabilities.

        Parameters
        ----------
        name : {"convcrf", "seed"}
            A key of :data:`segkit.CRF_PRESETS`; its unary kind is
            :data:`PRESET_UNARY_KIND` ``[name]`` unless an override gives one.
        weights, bias : optional
            As in :class:`EnsembleSetting`.
        **overrides
            Keyword arguments of :func:`segkit.convcrf` replacing the preset's values (None:
            the preset's).

        Returns
        -------
        EnsembleSetting
        """
        if name not in PRESET_UNARY_KIND:
            raise InputError(f"crf preset must be one of "
                             f"{', '.join(map(repr, PRESET_UNARY_KIND))}; got {name!r}")
        given = {k: v for k, v in overrides.items() if v is not None}
        crf = convcrf_params(name, **{"unary_kind": PRESET_UNARY_KIND[name], **given})
        return cls(weights, bias, crf)

    @classmethod
    def from_tuned(cls, doc: Any, where: str = "tuned") -> EnsembleSetting:
        """The setting of a tuned document (tuned.json's contents or a dict of the same keys),
        checked by :func:`check_tuned` (errors name `where`)."""
        doc = check_tuned(doc, where)
        crf = doc["crf"]
        return cls(doc["weights"], doc["bias"],
                   None if crf is None else convcrf_params(None, **crf))

    def to_dict(self) -> dict[str, Any]:
        """``weights``, ``bias`` and ``crf`` as tuned.json holds them (plain JSON values);
        :meth:`from_tuned` of them (with ``classes``) gives the setting back."""
        return {"weights": None if self.weights is None else list(self.weights),
                "bias": None if self.bias is None else list(self.bias),
                "crf": _crf_record(self.crf)}

    def vote(self, probs: Sequence[Any], *, return_probs: bool = False,
             backend: str = "auto"):
        """:func:`segkit.soft_vote` of the models' probabilities under the weights: labels,
        and with `return_probs` the float32 averaged probabilities :meth:`scores` takes."""
        weights = None if self.weights is None else list(self.weights)
        return soft_vote(probs, weights, return_probs=return_probs, backend=backend)

    def scores(self, probs: np.ndarray, image: np.ndarray | None = None, *,
               backend: str = "auto") -> np.ndarray:
        """The scores (C, H, W) whose argmax over classes are :meth:`labels`.

        Parameters
        ----------
        probs : array (C, H, W), float32 or float16
            One image's averaged probabilities (:meth:`vote`).
        image : array (H, W, 3) uint8, optional
            The RGB image; needed with a CRF.
        backend : str
            The ConvCRF backend (``"auto"``: the fastest for the arrays).

        Returns
        -------
        array (C, H, W)
            Without a CRF ``probs * exp(bias)`` in float32 (`probs` itself without a bias);
            with one, the CRF's float32 scores plus the bias.
        """
        p = np.asarray(probs)
        if self.bias is not None and len(self.bias) != p.shape[0]:
            raise InputError(f"bias has {len(self.bias)} values for {p.shape[0]} classes")
        if self.crf is None:
            return _scaled(p, self.scale())
        if image is None:
            raise InputError("a setting with a CRF needs the image")
        if self.crf.weight is not None:  # a fitted CRF takes the log of the probabilities
            p = np.maximum(np.asarray(p, np.float32), np.float32(PROB_FLOOR))
        scores = np.asarray(convcrf(p, image, backend=backend, **self.crf.as_dict()))
        if self.bias is not None:
            scores = scores + np.asarray(self.bias, np.float32)[:, None, None]
        return scores

    def labels(self, probs: np.ndarray, image: np.ndarray | None = None, *,
               backend: str = "auto") -> np.ndarray:
        """Labels (H, W) int64 of one image: ``argmax_c`` :meth:`scores`, ties to the
        smallest class (same arguments)."""
        return np.argmax(self.scores(probs, image, backend=backend), axis=0)

    def scale(self) -> np.ndarray | None:
        """``exp(bias)`` as float32 factors (:func:`setting_scale`), None without a bias."""
        return setting_scale(self.bias, 0 if self.bias is None else len(self.bias))


def _scaled(mean: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """``mean * scale`` per class in float32 (`mean` itself for None)."""
    return mean if scale is None else mean * scale.astype(np.float32)[:, None, None]


def setting_scale(bias: Any, num_classes: int) -> np.ndarray | None:
    """``exp(bias)`` (C,) as float32 factors (``segkit.ops.vote_confusion.bias_scale``, computed
    in float64), or None for no bias: what :meth:`EnsembleSetting.labels` multiplies by."""
    return None if bias is None else bias_scale(np.asarray(bias, np.float64), num_classes)


def _crf_record(crf: ConvCrfParams | None) -> dict[str, Any] | None:
    """A CRF record as tuned.json holds it: :data:`CRF_KEYS`, and ``weight`` / ``compat``
    when set; a value tuned.json cannot hold is refused, never dropped."""
    if crf is None:
        return None
    default = convcrf_params()
    extra = [f.name for f in fields(crf) if f.name not in (*CRF_KEYS, "weight", "compat")
             and getattr(crf, f.name) != getattr(default, f.name)]
    if extra:
        raise InputError(f"tuned.json holds a CRF's {', '.join(CRF_KEYS)}, weight and compat; "
                         f"this one also sets {', '.join(extra)}")
    out: dict[str, Any] = {k: getattr(crf, k) for k in CRF_KEYS}
    if crf.weight is not None:
        out["weight"] = list(crf.weight)
    if crf.compat is not None:
        out["compat"] = [list(r) for r in crf.compat]
    return out


def check_crf(crf: Any, num_classes: int | None = None) -> dict[str, Any] | None:
    """A CRF setting validated (a preset name becomes its setting), or None for None.

    Parameters
    ----------
    crf : dict, str or None
        A CRF as tuned.json holds it (keys :data:`CRF_KEYS`, plus ``weight`` and optionally
        ``compat`` for a fitted one) or a preset name ("convcrf", "seed": see
        :meth:`EnsembleSetting.preset`).
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
        return _crf_record(EnsembleSetting.preset(crf).crf)
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


def check_tuned(doc: Any, where: str = "tuned") -> dict:
    """A tuned document (the contents of a tuned.json, or the dict a caller passes as
    ``tuned=``) checked, with its CRF preset name, if any, turned into its CRF.

    The one check of a tuned document: :func:`load_tuned` runs it on a file's contents,
    :func:`read_tuned` on a dict a job is given, so a bad value is refused before any image
    is processed; :meth:`EnsembleSetting.from_tuned` makes the setting of the result.

    Parameters
    ----------
    doc : dict
        Holds ``weights`` (one >= 0 per model), ``classes`` (the class names), and optionally
        ``bias`` (one finite number per class, or None) and ``crf`` (a CRF setting, a preset
        name, or None; a fitted CRF's ``weight`` has one value per class).
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
    >>> check_tuned({"weights": [1, 1], "classes": ["a", "b"], "crf": "seed"})["crf"]["num_iter"]
    200
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


def read_tuned(tuned: str | Path | dict) -> tuple[dict, str]:
    """(the checked document, where it came from) of a ``tuned=`` argument: a tuned.json, its
    folder, or a dict (checked as a file is, named "tuned (dict)" in messages).

    Parameters
    ----------
    tuned : path or dict

    Returns
    -------
    (dict, str)
        :func:`check_tuned`'s document, and the file's resolved path or ``"(dict)"``.
    """
    if isinstance(tuned, dict):
        return check_tuned(tuned, "tuned (dict)"), "(dict)"
    path = Path(tuned)
    return load_tuned(path), str((path / TUNED if path.is_dir() else path).resolve())
