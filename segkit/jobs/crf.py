"""The ConvCRF dataset job behind `segkit crf`: per-image unaries (a confidence store or a
folder of .npy files) plus the images -> label PNGs (palette) and, optionally, a confidence
store of the refined probabilities.

One item per image through :func:`segkit.jobs.engine.map_items` (local process pool or Ray),
with a progress bar. Every output is written atomically; a resumed run checks the outputs it
finds (readable, the unary's shape) and recomputes only what is missing or broken.

Every image is refined by one :class:`segkit.jobs.settings.EnsembleSetting`: a preset's CRF
(with the overrides), or a tuned setting's CRF and bias. The out folder's guard,
``crf_settings.json`` (the CRF, the bias, the unary kind and the tuned setting's identity),
is written before any image: a resumed run with another setting is refused rather than mixed,
and ``resume=False`` removes the other setting's labels, rewrites the file and recomputes
every image.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, InputError
from ..io import atomic
from ..io.images import IMAGE_SUFFIXES, ImageLookupError, list_images  # noqa: F401
from ..ops.convcrf import convcrf_params
from ._owner import claim
from .engine import map_items
from .settings import EnsembleSetting, read_tuned

REPORT = "crf_report.json"
#: The guard: the record of the setting that made the labels of an out folder (checked by a
#: resumed run; the file keeps the name earlier versions gave it).
GUARD = "crf_settings.json"
#: The keys of GUARD that must match for a run to resume.
GUARD_KEYS = ("setting", "bias", "unary_kind", "tuned")


class CrfJobError(DataError):
    """Inputs the job cannot use (the message names the file or folder)."""


@dataclass(frozen=True)
class CrfTask:
    """One image: everything a worker process needs (small and picklable)."""
    stem: str
    unary: str
    image: str
    label_png: str
    store: str | None
    setting: EnsembleSetting        # its CRF (and a tuned setting's bias)
    backend: str = "auto"
    resume: bool = True
    tuned: bool = False             # a tuned setting: the unaries must be probabilities


def index_images(root: str | Path) -> dict[str, Path]:
    """Image files below `root` by output stem: 'batch_01_vt/0002.jpg' -> 'batch_01_vt+0002'
    (the original recipe's flattening), 'x.png' -> 'x' (``segkit.io.images.list_images``)."""
    root = Path(root)
    if not root.is_dir():
        raise CrfJobError(f"{root}: images folder not found")
    try:
        return list_images(root, allow_empty=True)
    except ImageLookupError as exc:
        raise CrfJobError(str(exc)) from None


def unary_files(source: str | Path) -> tuple[dict[str, Path], list[str] | None, bool]:
    """(stem -> .npy file, class names or None, whether it is a confidence store)."""
    from ..io.store import SET_SEPARATOR, ConfidenceStore, StoreError, open_store

    if SET_SEPARATOR in str(source) and not Path(source).is_dir():  # a store set "a,b"
        try:
            store = open_store(str(source))
        except (StoreError, ValueError) as exc:
            raise CrfJobError(str(exc)) from exc
        return {s: store.path(s) for s in store.stems()}, store.classes, True
    source = Path(source)
    if not source.is_dir():
        raise CrfJobError(f"{source}: unary folder not found")
    if (source / "meta.json").is_file():
        try:
            store = ConfidenceStore(source)
        except StoreError as exc:
            raise CrfJobError(str(exc)) from exc
        return {s: store.path(s) for s in store.stems()}, store.classes, True
    files = {p.stem: p for p in sorted(source.glob("*.npy")) if not atomic.is_temporary(p)}
    return files, None, False


def _label_dtype(num_classes: int):
    return np.uint8 if num_classes <= 256 else np.int32


def _done(task: CrfTask, shape: tuple[int, ...]) -> bool:
    """Whether this image's outputs exist and look right (a resumed run trusts only these)."""
    from ..io.masks import MaskError, read_mask
    from ..io.store import ConfidenceStore, StoreError

    png = Path(task.label_png)
    if not png.is_file():
        return False
    try:
        labels = read_mask(png)
    except MaskError:
        return False
    if labels.shape != shape[1:] or (labels.size and int(labels.max()) >= shape[0]):
        return False
    if task.store is not None:
        try:
            refined = ConfidenceStore(task.store).read(task.stem)
        except (KeyError, StoreError):
            return False
        if refined.shape != shape:
            return False
    return True


def run_one(task: CrfTask) -> dict[str, Any]:
    """Refine one image; returns a small report (the worker function of the job)."""
    from PIL import Image

    from ..io.masks import write_mask
    from ..io.store import ConfidenceStore
    from ..palette import palette_for
    from ._probs import check_probabilities

    t0 = time.perf_counter()
    try:
        unary = np.load(task.unary, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files
        raise CrfJobError(f"{task.unary}: unreadable ({type(exc).__name__}: {exc})") from exc
    if unary.ndim != 3:
        raise CrfJobError(f"{task.unary}: expected a (C, H, W) array; got shape {unary.shape}")
    if task.resume and _done(task, unary.shape):
        return {"stem": task.stem, "skipped": True}
    with Image.open(task.image) as im:
        image = np.asarray(im.convert("RGB"))
    if image.shape[:2] != unary.shape[1:]:
        raise CrfJobError(f"{task.image}: image is {image.shape[1]}x{image.shape[0]} but its "
                          f"unary {Path(task.unary).name} is {unary.shape[2]}x{unary.shape[1]}")
    unary = np.asarray(unary)
    bias = task.setting.bias
    if task.tuned:
        check_probabilities(unary, task.unary)  # a fitted CRF would take logits silently
        if bias is not None and len(bias) != unary.shape[0]:
            raise CrfJobError(f"{task.unary}: {unary.shape[0]} classes, but the tuned bias "
                              f"has {len(bias)} values")
    # a tuned setting runs on the host (auto), whatever backend says
    scores = task.setting.scores(unary, image, backend="auto" if task.tuned else task.backend)
    labels = scores.argmax(0).astype(_label_dtype(unary.shape[0]))
    before = unary.argmax(0)
    if task.store is not None:
        e = np.exp(scores - scores.max(0, keepdims=True))
        ConfidenceStore(task.store).write(task.stem, e / e.sum(0, keepdims=True))
    write_mask(task.label_png, labels, palette_for(unary.shape[0]) if labels.dtype == np.uint8
               else None)
    return {"stem": task.stem, "skipped": False, "pixels": int(labels.size),
            "changed": int((labels != before).sum()), "seconds": time.perf_counter() - t0}


def crf_job(unaries: str | Path, images: str | Path, out: str | Path, *,
            preset: str | None = None, unary_kind: str | None = None,
            store_out: str | Path | None = None, workers: int | None = None,
            engine: str = "local", backend: str = "auto", resume: bool = True,
            progress: bool = True, tuned: str | Path | dict | None = None,
            **overrides: Any) -> dict[str, Any]:
    """Refine every image's unary with ConvCRF and write label PNGs.

    Parameters
    ----------
    unaries : folder
        A confidence store (``meta.json`` + ``<stem>.npy`` float16 probabilities, see
        :class:`segkit.io.store.ConfidenceStore`) or a folder of ``<stem>.npy`` (C, H, W)
        arrays.
    images : folder
        The images, found by stem; nested files map to flattened stems
        ('batch_01_vt/0002.jpg' -> 'batch_01_vt+0002').
    out : folder
        ``<stem>.png`` label maps (palette PNG; 16-bit for more than 256 classes) and
        ``crf_report.json``, and ``crf_settings.json``: the setting that made the labels
        (written before any image; a resumed run with another setting is refused).
    preset : {"convcrf", "seed"}, default "convcrf"
        The CRF setting (:data:`segkit.CRF_PRESETS`); further keyword arguments
        (``filter_size=7``, ``num_iter=10``, ...) override single values.
    unary_kind : {"logits", "probs"}, optional
        Default: "probs" for a confidence store (except the "seed" preset, which reproduces the
        original recipe's logits-on-probabilities), the preset's value for .npy files.
    store_out : folder, optional
        Also write the refined probabilities (softmax of the CRF scores) as a confidence store.
    workers, engine : see :func:`segkit.jobs.engine.map_items` ("local" or "ray").
    backend : the ConvCRF backend in each worker ("auto": the fastest CPU backend).
    resume : bool
        Skip images whose outputs exist and check out (default), if `out` holds labels of the
        same setting (CRF setting, bias, unary kind, tuned setting; ``crf_settings.json``);
        another setting is refused with an ``InputError`` naming what
        differs. False recomputes every image (the labels of another setting are removed
        first, so an interrupted run resumes safely).
    tuned : path or dict, optional
        A ``tuned.json`` of :func:`segkit.tune` (or its folder, or the loaded dict, checked as
        a file is by :func:`segkit.jobs.settings.check_tuned`): its CRF
        setting (a preset or a fitted CRF) and its per-class bias (added to the CRF scores)
        are applied, exactly as ``segkit ensemble --tuned`` does after the soft vote (one
        :class:`segkit.jobs.settings.EnsembleSetting`). The unaries must be the averaged
        probabilities under the tuned weights (``segkit ensemble --tuned ... --save-probs``
        writes them); `preset`, `unary_kind` and the overrides must then be left out. The
        tuned setting runs on the host (C++), whatever `backend` says.

    Returns
    -------
    dict
        The report also written to ``out/crf_report.json``: counts, pixels changed, timings.
    """
    _check_ray(engine)
    files, classes, is_store = unary_files(unaries)
    if not files:
        raise CrfJobError(f"{unaries}: no .npy unaries found")
    applied = bias = identity = None
    if tuned is not None:
        setting, applied, identity = _tuned_crf(tuned, classes, preset, unary_kind, overrides)
        bias = setting.bias
    by_stem = _images_by_stem(images, files)
    if tuned is None:  # validated once, before any worker starts
        setting = _preset_setting(preset or "convcrf", unary_kind, is_store, overrides)
        applied = setting.crf.as_dict()
    out = _prepare_out(out, applied, bias, identity, resume, files)
    store_root = _prepare_store(store_out, classes, files, applied)
    tasks = [CrfTask(stem=s, unary=str(p), image=str(by_stem[s]),
                     label_png=str(out / f"{s}.png"), store=store_root, setting=setting,
                     backend=backend, resume=resume, tuned=tuned is not None)
             for s, p in files.items()]
    t0 = time.perf_counter()
    done, skipped, pixels, changed, compute = _run_tasks(tasks, workers, engine, progress)
    report = {"images": len(tasks), "refined": done, "skipped": skipped,
              "pixels": pixels, "changed": changed,
              "changed_fraction": changed / pixels if pixels else 0.0,
              "seconds": time.perf_counter() - t0, "seconds_per_image": compute / done if done
              else 0.0, "setting": applied,
              "tuned": None if tuned is None else
              ("(dict)" if isinstance(tuned, dict) else str(tuned)),
              "bias": None if bias is None else list(bias), "unaries": str(unaries),
              "images_dir": str(images), "store_out": store_root}
    atomic.write_json(out / REPORT, report)
    return report


def _preset_setting(preset: str, unary_kind: str | None, is_store: bool,
                    overrides: dict) -> EnsembleSetting:
    """The setting of a preset run: a confidence store holds probabilities, so the preset
    takes them as :meth:`EnsembleSetting.preset` does (``segkit.jobs.settings.
    PRESET_UNARY_KIND``); .npy files are taken as the preset's own ``unary_kind`` (logits);
    a `unary_kind` given replaces either."""
    if is_store:
        return EnsembleSetting.preset(preset, unary_kind=unary_kind, **overrides)
    return EnsembleSetting(crf=convcrf_params(preset, unary_kind=unary_kind, **overrides))


def _check_ray(engine: str) -> None:
    """engine='ray' needs Ray importable here, checked before any file is read."""
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise CrfJobError("engine='ray' needs Ray: pip install 'ray[data]' (or use "
                              f"engine='local'); importing it failed: {exc}") from exc


def _images_by_stem(images: str | Path, files: dict[str, Path]) -> dict[str, Path]:
    """The images by stem; every unary must have one."""
    by_stem = index_images(images)
    missing = [s for s in files if s not in by_stem]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise CrfJobError(f"{images}: no image for {', '.join(missing[:3])}{more}")
    return by_stem


def _prepare_out(out: str | Path, applied: dict, bias, identity, resume: bool,
                 files: dict[str, Path]) -> Path:
    """Create `out`, remove a crashed run's temporaries and check (or write) the guard."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.remove_temporaries(out)
    _guard(out, {"setting": applied, "bias": None if bias is None else list(bias),
                 "unary_kind": applied.get("unary_kind"), "tuned": identity},
           resume, list(files))
    return out


def _prepare_store(store_out, classes: list[str] | None, files: dict[str, Path],
                   config: dict) -> str | None:
    """Create the confidence store of the refined probabilities, if asked: its root."""
    if store_out is None:
        return None
    from ..io.store import ConfidenceStore

    num_classes = len(classes) if classes else int(
        np.load(next(iter(files.values())), mmap_mode="r").shape[0])
    names = classes or [str(c) for c in range(num_classes)]
    ConfidenceStore.create(store_out, names, model="convcrf", config=config)
    atomic.remove_temporaries(store_out)
    return str(store_out)


def _run_tasks(tasks: list[CrfTask], workers, engine: str,
               progress: bool) -> tuple[int, int, int, int, float]:
    """Run every task on the engine: (refined, skipped, pixels, changed, compute seconds)."""
    done = skipped = pixels = changed = 0
    compute = 0.0
    for r in map_items(run_one, tasks, workers=workers, engine=engine, desc="convcrf",
                       unit="img", progress=progress):
        if r["skipped"]:
            skipped += 1
            continue
        done += 1
        pixels += r["pixels"]
        changed += r["changed"]
        compute += r["seconds"]
    return done, skipped, pixels, changed, compute


def _tuned_crf(tuned: Any, classes: list[str] | None, preset, unary_kind,
               overrides: dict) -> tuple[EnsembleSetting, dict, dict]:
    """(setting, its CRF as the guard records it, identity) of a tuned.json or dict, checked
    against the unaries' classes; the identity (the file and a digest of its setting) goes
    into the guard."""
    given = [k for k, v in (("preset", preset), ("unary_kind", unary_kind), *overrides.items())
             if v is not None]
    if given:
        raise InputError(f"give either tuned or {', '.join(given)}: the tuned setting holds "
                         "the whole CRF")
    doc, where = read_tuned(tuned)
    if doc.get("crf") is None:
        raise InputError(f"tuned {'(dict)' if isinstance(tuned, dict) else tuned} has no CRF "
                         f"(crf_name {doc.get('crf_name', 'off')!r}): nothing for segkit crf "
                         "to apply; segkit ensemble --tuned applies its weights and bias")
    if classes is not None and list(doc["classes"]) != list(classes):
        raise CrfJobError(f"tuned was made for classes {doc['classes']}, but the unaries hold "
                          f"{classes}")
    core = {k: doc.get(k) for k in ("weights", "bias", "crf", "classes")}
    digest = hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()
    return EnsembleSetting.from_tuned(doc), doc["crf"], {"path": where, "sha256": digest}


def _from_report(out: Path) -> dict | None:
    """The setting and bias in the report of a folder an earlier version wrote (it kept no
    guard file); None if unknown."""
    report = out / REPORT
    if report.is_file():
        try:
            old = json.loads(report.read_text())
        except ValueError:
            return None
        if isinstance(old, dict) and isinstance(old.get("setting"), dict):
            return {"setting": old["setting"], "bias": old.get("bias")}
    return None


def _differences(old: dict, new: dict) -> list[str]:
    """What differs between a recorded setting and this run's, for the message."""
    diffs = []
    for key in GUARD_KEYS:
        if key not in old:
            continue
        was, now = old[key], new[key]
        if key == "setting" and isinstance(was, dict) and isinstance(now, dict):
            common = [k for k in sorted(was) if k in now and k != "unary_kind"]
            found = [f"setting {k}: {was[k]!r}, now {now[k]!r}" for k in common
                     if was[k] != now[k]]
            if not found and set(was) != set(now):  # a tuned setting and a preset's
                found = [f"setting keys {sorted(set(was) ^ set(now))} (only in one of them)"]
            diffs += found
        elif key == "tuned":
            if (was or {}).get("sha256") != (now or {}).get("sha256"):
                def name(t):
                    return "none" if not t else f"{t.get('path')} (sha256 " \
                        f"{str(t.get('sha256'))[:12]})"
                diffs.append(f"tuned: {name(was)}, now {name(now)}")
        elif was != now:
            diffs.append(f"{key}: {was!r}, now {now!r}")
    return diffs


def _guard(out: Path, record: dict, resume: bool, stems: list[str]) -> None:
    """Refuse to resume into labels of another setting; with resume=False remove those labels
    (they would be recomputed anyway, and a resumed run must not trust them); then write
    the guard, before any image (:func:`segkit.jobs._owner.claim`)."""
    claim(out, GUARD, record, resume=resume, keys=GUARD_KEYS,
          outputs=lambda: [out / f"{stem}.png" for stem in stems],
          differences=_differences, fallback=lambda: _from_report(out),
          what="labels made with another CRF setting",
          hint="to keep them use another out folder (--out), or pass resume=False "
               "(--no-resume) to recompute every image with this setting")
