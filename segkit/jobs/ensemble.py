"""`segkit.ensemble`: soft voting over confidence stores, image by image.

For every image present in all stores: read each model's float16 probabilities (memory-mapped;
a model is one confidence store, or a store set of its fold stores),
fuse them with :func:`segkit.soft_vote`, optionally refine with ConvCRF on the averaged
probabilities and the image, and write the label map as a palette PNG (and, on request, the
averaged probabilities as a new confidence store, so ensembles compose). Images run in parallel
(local process pool or Ray) with a progress bar; memory stays flat (one image per worker).
Optionally the competition's submission CSV is written afterwards, streamed in the sample
submission's order.

Output folder::

    OUT/ensemble.json      the guard: what made the labels (stores, weights, CRF) and the
                           last run's counts
    OUT/labels/<stem>.png  label maps (palette PNG; 16-bit PNG above 256 classes)
    OUT/probs/             the averaged probabilities as a ConfidenceStore (save_probs)

Resumable: outputs are written atomically, and a rerun skips an image whose outputs exist and
check out (the label map decoded: its size and that it holds classes only; the probabilities'
file header and size); leftover temporary files are removed. The guard (``ensemble.json``,
:mod:`segkit.jobs._owner`) refuses a rerun with other stores, weights or CRF into the same
folder rather than mixing them, and ``resume=False`` removes the other setting's outputs
before it records its own, so a run that stops part way never leaves them to be resumed.

Each image is voted and labelled by one :class:`segkit.jobs.settings.EnsembleSetting` (the
weights, and a CRF preset, or a tuned setting's bias and CRF).
"""
from __future__ import annotations

import datetime
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError, PathNotFoundError
from ..io import atomic
from ..io.masks import read_mask, write_mask
from ..io.names import flatten_name, unflatten_name
from ..io.store import ConfidenceStore, StoreError, common_stems, open_stores, store_identity
from ..io.submission import DOWNSAMPLE, read_sample_ids, write_submission
from ..ops.convcrf import CRF_PRESETS
from ..ops.soft_vote import check_weights
from ._owner import claim
from ._stores import StoreReader, image_of, per_process
from .settings import EnsembleSetting, read_tuned

#: The guard: the record of what made the labels of an out folder (and the last run's counts).
GUARD = "ensemble.json"
#: The keys of GUARD that must match for a run to resume.
GUARD_KEYS = ("stores", "factors", "crf", "classes", "bias", "crf_setting")
#: zlib level of the label PNGs: 1 writes a 512x512 map ~4x faster than PIL's default 6.
PNG_COMPRESS_LEVEL = 1


@dataclass
class EnsembleReport:
    """What one `ensemble` run did."""
    out: Path
    images: int = 0                      # images present in every store
    written: int = 0                     # voted and written in this run
    skipped: int = 0                     # already done (resume)
    missing: dict[str, list[str]] = field(default_factory=dict)  # store -> stems it lacks
    submission: Path | None = None
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = [f"ensemble: {self.images} images ({self.written} written, {self.skipped} "
                 f"already done) in {self.seconds:.1f} s -> {self.out}"]
        for root, stems in self.missing.items():
            lines.append(f"  {root} lacks {len(stems)} image(s) the other stores have: "
                         f"{', '.join(stems[:5])}{' ...' if len(stems) > 5 else ''}")
        if self.submission:
            lines.append(f"  submission: {self.submission}")
        return "\n".join(lines)


class _VoteImage:
    """The per-image work (a picklable callable: it crosses process and Ray boundaries)."""

    def __init__(self, stores: StoreReader, setting: EnsembleSetting, out: str,
                 num_classes: int, images: str | None, save_probs: bool, resume: bool,
                 backend: str, tuned: bool = False):
        self.reader = stores
        self.setting = setting
        self.out = out
        self.num_classes = num_classes
        self.images = images
        self.save_probs = save_probs
        self.resume = resume
        self.backend = backend
        self.tuned = tuned  # a tuned CRF checks that the stores hold probabilities

    def probs_store(self) -> ConfidenceStore:
        root = Path(self.out) / "probs"
        return per_process(self.reader.token, f"probs:{root}", lambda: ConfidenceStore(root))

    def label_path(self, stem: str) -> Path:
        return Path(self.out) / "labels" / f"{stem}.png"

    def done(self, stem: str, shape: tuple[int, int, int]) -> bool:
        """Outputs of `stem` exist and check out against its (C, H, W): the label map decodes,
        has the size (H, W) and holds classes only; the probabilities' file has the shape
        (header and size)."""
        from ..io.masks import MaskError

        path = self.label_path(stem)
        if not path.is_file():
            return False
        try:
            labels = read_mask(path)
        except (MaskError, OSError, ValueError):  # unreadable or truncated: redo it
            return False
        if labels.shape != shape[1:] or (labels.size and int(labels.max()) >= shape[0]):
            return False
        if self.save_probs:
            try:
                return self.probs_store().shape(stem) == shape
            except (KeyError, StoreError):
                return False
        return True

    def __call__(self, stem: str) -> tuple[str, str]:
        from ..palette import palette_for

        shape = self.reader.shape(stem)  # validates each file's header and size
        if self.resume and self.done(stem, shape):
            return stem, "skipped"
        probs = self.reader.read(stem)  # memory-mapped float16
        setting = self.setting
        refine = setting.bias is not None or setting.crf is not None
        need_mean = self.save_probs or refine
        result = setting.vote(probs, return_probs=need_mean, backend=self.backend)
        labels, mean = result if need_mean else (result, None)
        if refine:  # the vote's labels are argmax(mean): only a bias or a CRF changes them
            image = None
            if setting.crf is not None:
                if self.tuned:
                    from ._probs import check_probabilities

                    check_probabilities(mean, f"{stem}: the averaged probabilities")
                image = image_of(stem, self.images, labels.shape)
            labels = setting.labels(mean, image).astype(labels.dtype)
        if self.save_probs:
            self.probs_store().write(stem, mean, check=False)
        palette = palette_for(self.num_classes) if self.num_classes <= 256 else None
        write_mask(self.label_path(stem), labels, palette, compress_level=PNG_COMPRESS_LEVEL)
        return stem, "written"


def ensemble(stores: Sequence[ConfidenceStore | str | Path], weights: Sequence[float] | None,
             out: str | Path, *, crf: str | None = None, images: str | Path | None = None,
             submission: str | Path | None = None, sample: str | Path | None = None,
             size: int = 256, downsample: str = "nearest", save_probs: bool = False,
             strict: bool = False, workers: int | None = None, engine: str = "local",
             resume: bool = True, backend: str = "auto", progress: bool = True,
             tuned: str | Path | dict | None = None) -> EnsembleReport:
    """Soft-vote the images of several confidence stores into label maps (and a submission).

    Parameters
    ----------
    stores : sequence of ConfidenceStore, StoreSet or paths
        One entry per model: a confidence store, or a store set (one model's fold stores,
        their paths joined with commas: ``"stores/a_f0,stores/a_f1"``). Two or more (one is
        allowed: it just takes the argmax), with the same classes in the same order. Images
        are the stems present in every entry; stems missing from some are reported (a warning
        and ``report.missing``), or refused with `strict`.
    weights : sequence of floats or None
        One non-negative weight per entry of `stores` (normalised by their sum, see
        :func:`segkit.soft_vote`); None for equal weights.
    out : path
        Output folder: ``labels/<stem>.png``, ``probs/`` (with `save_probs`), ``ensemble.json``.
    crf : str, optional
        A ConvCRF preset (``segkit.CRF_PRESETS``: "convcrf", "seed") run on the averaged
        probabilities and the image (`images` is then required). "seed" passes the
        probabilities as logits, as the original recipe did; other presets as probabilities.
    images : path, optional
        Folder of the images; ``dir+name`` stems map to ``images/dir/name.jpg`` (or .png...).
    submission : path, optional
        Write the submission CSV there after voting (see :mod:`segkit.io.submission`).
    sample : path, optional
        The sample submission whose image ids (and order) the CSV follows; without it the rows
        are the voted stems, sorted, with ids ``dir/name.jpg``.
    size, downsample :
        Side of the submission's label maps and how they are resized: "nearest" (the
        original), "mode" (block majority) or "max" (block maximum, the mmseg template's).
    save_probs : bool
        Also store the averaged probabilities (float16) as a confidence store in ``out/probs``.
    strict : bool
        Refuse to run when some store lacks images that others have.
    workers, engine : parallelism (see :func:`segkit.jobs.engine.map_items`).
    resume : bool
        Skip images whose outputs are already there (default); False recomputes everything.
    backend : the soft-vote backend ("auto": the fastest here).
    tuned : path or dict, optional
        A ``tuned.json`` of :func:`segkit.tune` (or its folder, or the loaded dict): its
        weights (one per store, the stores in the order they were tuned), per-class bias
        (labels = argmax_c log mean_c + b_c) and ConvCRF setting (then `images` is required)
        replace `weights` and `crf`, which must then be None. A dict is checked as a file is
        (:func:`segkit.jobs.settings.check_tuned`, before any image; its ``crf`` may name a
        preset).

    Returns
    -------
    EnsembleReport
    """
    t0 = time.perf_counter()
    opened = open_stores(stores)
    bias = crf_setting = None
    if tuned is not None:
        weights, bias, crf_setting, setting = _tuned_setting(tuned, weights, crf, images,
                                                             opened)
    factors = check_weights(weights, len(opened))
    _check_options(crf, tuned, images, size, downsample, sample, submission)
    if tuned is None:
        setting = (EnsembleSetting(weights) if crf is None
                   else EnsembleSetting.preset(crf, weights=weights))

    out = Path(out)
    record = _prepare_out(out, opened, weights, factors, crf, bias, crf_setting, resume)
    classes = record["classes"]

    stems, missing = common_stems(opened)
    if missing:
        text = "; ".join(f"{root} lacks {len(s)} (e.g. {', '.join(s[:3])})"
                         for root, s in missing.items())
        if strict:
            raise StoreError(f"stores differ in their images (strict): {text}")
        warnings.warn(f"voting the {len(stems)} images present in every store; {text}",
                      stacklevel=2)
    if save_probs:
        ConfidenceStore.create(out / "probs", classes, model="segkit ensemble",
                               config={"stores": record["stores"],
                                       "weights": record["factors"], "crf": crf,
                                       "bias": bias, "crf_setting": crf_setting})

    report = EnsembleReport(out=out, images=len(stems), missing=missing)
    work = _VoteImage(StoreReader(opened), setting, str(out), len(classes),
                      None if images is None else str(images), save_probs, resume, backend,
                      tuned=tuned is not None)
    _vote(work, stems, report, workers, engine, progress)

    if submission is not None:
        report.submission = write_ensemble_submission(out, submission, sample, stems,
                                                      size=size, downsample=downsample,
                                                      progress=progress)
    report.seconds = time.perf_counter() - t0
    _record_run(out, record, report, missing)
    return report


def _tuned_setting(tuned: str | Path | dict, weights: Sequence[float] | None, crf: str | None,
                   images: str | Path | None, opened: list) -> tuple[Any, Any, Any, Any]:
    """The weights, bias and CRF of a tuned document as the guard records them, and its
    EnsembleSetting, checked against the stores."""
    if weights is not None or crf is not None:
        raise InputError("give either tuned or weights/crf: the tuned setting holds the "
                         "weights, bias and CRF")
    doc, _ = read_tuned(tuned)
    if len(doc["weights"]) != len(opened):
        raise InputError(f"tuned has {len(doc['weights'])} weights for {len(opened)} stores: "
                         "pass the test stores of the tuned models, in the same order")
    if list(doc["classes"]) != opened[0].classes:
        raise StoreError(f"tuned was made for classes {doc['classes']}, but the stores list "
                         f"{opened[0].classes}")
    weights, bias, crf_setting = doc["weights"], doc.get("bias"), doc.get("crf")
    if crf_setting is not None and images is None:
        raise InputError("the tuned setting has a ConvCRF: pass images=<folder> (--images)")
    if crf_setting is not None and not Path(images).is_dir():
        raise PathNotFoundError(f"images folder {images} does not exist")
    return weights, bias, crf_setting, EnsembleSetting.from_tuned(doc)


def _check_options(crf: str | None, tuned: Any, images: str | Path | None, size: int,
                   downsample: str, sample: str | Path | None,
                   submission: str | Path | None) -> None:
    """Refuse a bad downsample, size, CRF preset or images folder, or a stray sample."""
    if downsample not in DOWNSAMPLE:
        raise InputError(f"downsample must be one of {', '.join(map(repr, DOWNSAMPLE))}; got "
                         f"{downsample!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"size must be a positive integer; got {size!r}")
    if crf is not None and tuned is None:
        if crf not in CRF_PRESETS:
            raise InputError(f"crf must be one of {', '.join(map(repr, CRF_PRESETS))}; got "
                             f"{crf!r}")
        if images is None:
            raise InputError("crf needs the images: pass images=<folder>")
        if not Path(images).is_dir():
            raise PathNotFoundError(f"images folder {images} does not exist")
    if sample is not None and submission is None:
        raise InputError("sample is only used with submission=<csv path>")


def _prepare_out(out: Path, opened: list, weights: Sequence[float] | None,
                 factors: Sequence[float], crf: str | None, bias: Any,
                 crf_setting: Any, resume: bool) -> dict[str, Any]:
    """Create `out`, clear its temporaries and claim it for this setting: the guard's record
    (returned)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic.remove_temporaries(out)
    classes = opened[0].classes
    record = {"stores": [store_identity(s) for s in opened],
              "weights": None if weights is None else [float(w) for w in weights],
              "factors": [float(f) for f in factors], "crf": crf, "classes": classes,
              "bias": bias, "crf_setting": crf_setting}
    _guard(out, record, resume)
    return record


def _vote(work: _VoteImage, stems: Sequence[str], report: EnsembleReport,
          workers: int | None, engine: str, progress: bool) -> None:
    """Vote every image on the engine's workers, counting written and skipped in `report`."""
    from .engine import map_items

    for _, status in map_items(work, stems, workers=workers, engine=engine, desc="ensemble",
                               unit="image", progress=progress):
        if status == "skipped":
            report.skipped += 1
        else:
            report.written += 1


def _record_run(out: Path, record: dict[str, Any], report: EnsembleReport,
                missing: dict[str, list[str]]) -> None:
    """Write the guard's record with this run's counts."""
    atomic.write_json(out / GUARD, {**record, "updated": _now(),
                                       "last_run": {"images": report.images,
                                                    "written": report.written,
                                                    "skipped": report.skipped,
                                                    "missing": missing,
                                                    "submission": str(report.submission)
                                                    if report.submission else None}})


def write_ensemble_submission(out: Path, submission: str | Path, sample: str | Path | None,
                              stems: Sequence[str], *, size: int = 256,
                              downsample: str = "nearest", progress: bool = True) -> Path:
    """The submission CSV from the label maps in ``out/labels``."""
    labels_dir = Path(out) / "labels"
    ids = read_sample_ids(sample) if sample is not None else [unflatten_name(s) for s in stems]
    lacking = [i for i in ids if not (labels_dir / f"{flatten_name(i)}.png").is_file()]
    if lacking:
        raise StoreError(f"the submission needs a label map for every image of "
                         f"{'the sample' if sample else 'the stores'}; {len(lacking)} have none "
                         f"(e.g. {', '.join(lacking[:5])}): they are missing from a store")
    return write_submission(submission, ids,
                            lambda i: read_mask(labels_dir / f"{flatten_name(i)}.png"),
                            size=size, downsample=downsample, progress=progress)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _guard(out: Path, record: dict[str, Any], resume: bool) -> None:
    """The guard of :mod:`segkit.jobs._owner`: a resumed run refuses labels of other settings;
    ``resume=False`` removes them (labels and probabilities) before it writes GUARD."""
    def outputs():
        return [*(out / "labels").glob("*.png"), *(out / "probs").glob("*.npy")]

    claim(out, GUARD, {**record, "updated": _now()}, resume=resume, keys=GUARD_KEYS,
          outputs=outputs, what="an ensemble made with other settings",
          hint="use another out folder, or resume=False (--no-resume) to recompute it")
