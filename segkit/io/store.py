"""Confidence store (GUIDE section 4): one directory per model holding one
``<image-stem>.npy`` float16 (C, H, W) array of class probabilities per image and a
``meta.json`` (classes, model, config, test-time augmentation, created).

Files are written atomically, read lazily (memory-mapped), and can be written by many
processes at once (one file per image). A stem is present only once its file is complete, so
an interrupted writer is resumed by skipping the stems already there.
"""
from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import DataError, InputError, InputTypeError
from . import atomic

META = "meta.json"
FORMAT = "segkit-confidence-store"
#: Probabilities must sum to 1 within this (float16 storage rounds each value to ~1e-3).
SUM_TOLERANCE = 2e-2


class StoreError(DataError):
    """A store, or a file in it, that does not hold what the store promises."""


class ConfidenceStore:
    """A folder of per-image class-probability maps.

    >>> store = ConfidenceStore.create("stores/model_a", classes=["bg", "paper"],
    ...                                model="upernet_swin-b", tta={"flip": True})  # doctest: +SKIP
    >>> store.write("batch_01_vt+0002", probs)       # (C, H, W) floats, summing to 1  # doctest: +SKIP
    >>> store.read("batch_01_vt+0002").shape         # memory-mapped float16           # doctest: +SKIP
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / META
        if not meta_path.is_file():
            raise StoreError(f"{self.root}: not a confidence store (no {META})")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"{meta_path}: unreadable ({exc})") from exc
        if not isinstance(self.meta, dict):
            raise StoreError(f"{meta_path}: expected a JSON object; got {type(self.meta).__name__}")
        classes = self.meta.get("classes")
        if not isinstance(classes, list) or len(classes) < 2:
            raise StoreError(f"{meta_path}: 'classes' must list at least 2 class names")
        if not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
            raise StoreError(f"{meta_path}: 'classes' must be distinct strings; got {classes!r}")
        for key, expected in (("format", FORMAT), ("dtype", "float16"), ("layout", "CHW")):
            if key in self.meta and self.meta[key] != expected:
                raise StoreError(f"{meta_path}: {key} is {self.meta[key]!r}; this reader "
                                 f"handles {expected!r}")

    # ---- creation ----------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, classes: Sequence[str], *, model: str = "",
               config: Any = None, tta: Any = None, exist_ok: bool = True,
               **extra: Any) -> "ConfidenceStore":
        """Create (or reopen, if `exist_ok` and the classes match) a store at `root`."""
        root = Path(root)
        classes = [str(c) for c in classes]
        if len(classes) < 2:
            raise InputError(f"classes must name at least 2 classes; got {classes!r}")
        if (root / META).exists():
            if not exist_ok:
                raise StoreError(f"{root}: a store already exists")
            store = cls(root)
            if store.classes != classes:
                raise StoreError(f"{root}: existing store has classes {store.classes}, "
                                 f"not {classes}")
            return store
        meta = {"format": "segkit-confidence-store", "version": 1, "classes": classes,
                "dtype": "float16", "layout": "CHW", "model": model, "config": config,
                "tta": tta, "created": datetime.datetime.now(datetime.timezone.utc)
                .isoformat(timespec="seconds"), **extra}
        atomic.write_json(root / META, meta)
        return cls(root)

    # ---- properties --------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    def path(self, stem: str) -> Path:
        if not stem or "/" in stem or stem.startswith("."):
            raise InputError(f"stem must be a plain file stem; got {stem!r}")
        return self.root / f"{stem}.npy"

    def stems(self) -> list[str]:
        """Stems of the complete files, sorted."""
        return sorted(p.stem for p in self.root.glob("*.npy") if not atomic.is_temporary(p))

    def __contains__(self, stem: str) -> bool:
        return self.path(stem).is_file()

    def __len__(self) -> int:
        return len(self.stems())

    def missing(self, stems: Iterable[str]) -> list[str]:
        """The given stems that this store lacks."""
        return [s for s in stems if s not in self]

    def shape(self, stem: str) -> tuple[int, int, int]:
        """(C, H, W) of one stored image, from the .npy header alone (no data is read);
        StoreError for a file that is not a float16 (C, H, W) array of this store's classes."""
        path = self.path(stem)
        if not path.is_file():
            raise KeyError(f"{self.root}: no probabilities for {stem!r}")
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                header_end = f.tell()
        except Exception as exc:  # noqa: BLE001 - truncated or foreign files
            raise StoreError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
        if dtype != np.float16 or len(shape) != 3 or shape[0] != self.num_classes or fortran:
            layout = " (Fortran order)" if fortran else ""
            raise StoreError(f"{path}: expected float16 ({self.num_classes}, H, W); got "
                             f"{dtype} {shape}{layout}")
        expected = header_end + 2 * int(np.prod(shape))
        size = path.stat().st_size
        if size != expected:
            raise StoreError(f"{path}: truncated or padded: {size} bytes, expected {expected} "
                             f"for {dtype} {shape}")
        return tuple(int(v) for v in shape)  # type: ignore[return-value]

    def validate(self, stems: Iterable[str] | None = None, *, sums: bool = True,
                 progress: bool = False) -> "StoreReport":
        """Check every file (or the given stems): readable, float16 (C, H, W) with this store's
        class count, complete; with `sums`, also finite, non-negative and summing to 1 per
        pixel within SUM_TOLERANCE (this reads every byte). Returns a
        :class:`~segkit.io.store.StoreReport` listing each problem; ``report.raise_if_bad()``
        turns it into a StoreError.
        Stems given but absent are reported as missing."""
        from tqdm import tqdm

        wanted = self.stems() if stems is None else list(stems)
        report = StoreReport(root=self.root)
        for stem in tqdm(wanted, desc=f"validate {self.root.name}", unit="image",
                         disable=not progress):
            if stem not in self:
                report.missing.append(stem)
                continue
            report.checked += 1
            try:
                self.shape(stem)
                if sums:
                    self.read(stem, check=True)
            except StoreError as exc:
                report.problems[stem] = str(exc)
        return report

    # ---- reading and writing -----------------------------------------------------------
    def write(self, stem: str, probs: Any, *, check: bool = True) -> Path:
        """Store (C, H, W) probabilities for one image as float16, atomically."""
        probs = np.asarray(probs)
        if check:
            self._check(probs, f"probs for {stem!r}")
        path = self.path(stem)
        atomic.save_npy(path, np.ascontiguousarray(probs, dtype=np.float16))
        return path

    def read(self, stem: str, *, mmap: bool = True, check: bool = False) -> np.ndarray:
        """(C, H, W) float16 probabilities of one image (memory-mapped by default)."""
        path = self.path(stem)
        if not path.is_file():
            raise KeyError(f"{self.root}: no probabilities for {stem!r}")
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - truncated or foreign files
            raise StoreError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
        if arr.dtype != np.float16 or arr.ndim != 3 or arr.shape[0] != self.num_classes:
            raise StoreError(f"{path}: expected float16 ({self.num_classes}, H, W); got "
                             f"{arr.dtype} {arr.shape}")
        if check:
            self._check(np.asarray(arr, np.float32), str(path))
        return arr

    def _check(self, probs: np.ndarray, what: str) -> None:
        if probs.ndim != 3 or probs.shape[0] != self.num_classes:
            raise StoreError(f"{what}: expected shape ({self.num_classes}, H, W); got "
                             f"{probs.shape}")
        if not np.issubdtype(probs.dtype, np.floating):
            raise StoreError(f"{what}: expected floating-point probabilities; got {probs.dtype}")
        p = probs.astype(np.float32, copy=False)
        if not np.isfinite(p).all():
            raise StoreError(f"{what}: contains NaN or inf")
        err = float(np.abs(p.sum(0) - 1).max()) if p.size else 0.0
        if err > SUM_TOLERANCE or p.min(initial=0) < 0:
            raise StoreError(f"{what}: not probabilities (per-pixel sums off by up to {err:.3g}, "
                             f"min {p.min(initial=0):.3g}); apply one softmax over classes")

    def __repr__(self) -> str:
        return f"ConfidenceStore({str(self.root)!r}, classes={self.num_classes}, images={len(self)})"


@dataclass
class StoreReport:
    """What :meth:`ConfidenceStore.validate` found: files checked, problems by stem, and the
    stems asked for that the store lacks."""
    root: Path
    checked: int = 0
    problems: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.missing

    def __str__(self) -> str:
        lines = [f"{self.root}: {self.checked} checked, {len(self.problems)} bad, "
                 f"{len(self.missing)} missing"]
        lines += [f"  {msg}" for msg in list(self.problems.values())[:10]]
        if len(self.problems) > 10:
            lines.append(f"  ... and {len(self.problems) - 10} more")
        if self.missing:
            lines.append(f"  missing: {', '.join(self.missing[:10])}"
                         + (" ..." if len(self.missing) > 10 else ""))
        return "\n".join(lines)

    def raise_if_bad(self) -> None:
        if not self.ok:
            raise StoreError(str(self))


#: Separates the fold stores of one store set in a single argument ("a_fold0,a_fold1").
SET_SEPARATOR = ","


class StoreSet:
    """Several confidence stores with disjoint stems read as one store: one model's
    out-of-fold (OOF) predictions, each fold's model having written a store of its own
    validation images. Every reading method of :class:`ConfidenceStore` works on it (a job
    can take one in place of a store); writing is refused. All parts must list the same
    classes in the same order, and no stem may be in two parts (StoreError otherwise).

    >>> oof = open_store("stores/a_fold0,stores/a_fold1")   # doctest: +SKIP
    >>> oof.read("batch_01_vt+0002").shape                   # from whichever fold holds it  # doctest: +SKIP
    """

    def __init__(self, parts: Sequence["ConfidenceStore | str | Path"]):
        opened = [p if isinstance(p, ConfidenceStore) else ConfidenceStore(p) for p in parts]
        if len(opened) < 2:
            raise InputError(f"a store set needs at least 2 stores; got {len(opened)}")
        roots = [str(p.root) for p in opened]
        if len(set(roots)) != len(roots):
            raise StoreError(f"store set {SET_SEPARATOR.join(roots)}: a store is named twice")
        first = opened[0]
        for other in opened[1:]:
            if other.classes != first.classes:
                raise StoreError(f"store set: {other.root} has classes {other.classes}, but "
                                 f"{first.root} has {first.classes}; the fold stores of one "
                                 "model must list the same classes in the same order")
        self.parts = opened
        self.meta: dict[str, Any] = dict(first.meta)
        self.meta["parts"] = roots
        self._owner: dict[str, ConfidenceStore] = {}
        for part in opened:
            for stem in part.stems():
                if stem in self._owner:
                    raise StoreError(f"store set: {stem!r} is in both {self._owner[stem].root} "
                                     f"and {part.root}; the stores of a set must hold disjoint "
                                     "images (one fold's validation images each)")
                self._owner[stem] = part

    # ---- what a ConfidenceStore offers ------------------------------------------------
    @property
    def root(self) -> Path:
        """A Path whose text is the set's spec ("a,b"): for messages and for reopening with
        :func:`open_store`; not a folder."""
        return Path(self.spec)

    @property
    def spec(self) -> str:
        return SET_SEPARATOR.join(str(p.root) for p in self.parts)

    def identity(self) -> str:
        """The parts' absolute paths, joined: what a job records to recognise this input."""
        return SET_SEPARATOR.join(str(p.root.resolve()) for p in self.parts)

    @property
    def classes(self) -> list[str]:
        return self.parts[0].classes

    @property
    def num_classes(self) -> int:
        return self.parts[0].num_classes

    def part_of(self, stem: str) -> ConfidenceStore:
        try:
            return self._owner[stem]
        except KeyError:
            raise KeyError(f"{self.spec}: no probabilities for {stem!r}") from None

    def path(self, stem: str) -> Path:
        return self.part_of(stem).path(stem)

    def stems(self) -> list[str]:
        return sorted(self._owner)

    def __contains__(self, stem: str) -> bool:
        return stem in self._owner

    def __len__(self) -> int:
        return len(self._owner)

    def missing(self, stems: Iterable[str]) -> list[str]:
        return [s for s in stems if s not in self]

    def shape(self, stem: str) -> tuple[int, int, int]:
        return self.part_of(stem).shape(stem)

    def read(self, stem: str, *, mmap: bool = True, check: bool = False) -> np.ndarray:
        return self.part_of(stem).read(stem, mmap=mmap, check=check)

    def validate(self, stems: Iterable[str] | None = None, *, sums: bool = True,
                 progress: bool = False) -> "StoreReport":
        wanted = self.stems() if stems is None else list(stems)
        report = StoreReport(root=self.root)
        for part in self.parts:
            sub = part.validate([s for s in wanted if self._owner.get(s) is part], sums=sums,
                                progress=progress)
            report.checked += sub.checked
            report.problems.update(sub.problems)
        report.missing = [s for s in wanted if s not in self._owner]
        return report

    def write(self, stem: str, probs: Any, *, check: bool = True) -> Path:
        raise StoreError(f"{self.spec}: a store set is read-only; write to one of its stores")

    def __repr__(self) -> str:
        return f"StoreSet({self.spec!r}, classes={self.num_classes}, images={len(self)})"


def open_store(store: "ConfidenceStore | StoreSet | str | Path") -> "ConfidenceStore | StoreSet":
    """A store, or a :class:`StoreSet` for a spec that joins several store folders with
    commas ("stores/a_fold0,stores/a_fold1"; a folder whose own name holds a comma is read as
    one store). Objects are returned unchanged."""
    if isinstance(store, (ConfidenceStore, StoreSet)):
        return store
    text = str(store)
    if SET_SEPARATOR in text and not (Path(text) / META).is_file():
        parts = [p.strip() for p in text.split(SET_SEPARATOR)]
        if not all(parts):
            raise InputError(f"store set {text!r}: empty store name between commas")
        return StoreSet(parts)
    return ConfidenceStore(store)


def store_spec(store: "ConfidenceStore | StoreSet") -> str:
    """The text that reopens a store or store set with :func:`open_store` (in a worker)."""
    return store.spec if isinstance(store, StoreSet) else str(store.root)


def store_identity(store: "ConfidenceStore | StoreSet") -> str:
    """Absolute path(s) of a store or store set, as jobs record their inputs."""
    if isinstance(store, StoreSet):
        return store.identity()
    return str(store.root.resolve())


def open_stores(stores: Sequence["ConfidenceStore | StoreSet | str | Path"], *,
                name: str = "stores") -> list["ConfidenceStore | StoreSet"]:
    """Stores (or store sets, see :func:`open_store`) for paths, specs or objects, one per
    model; all must list the same classes in the same order, else StoreError naming the first
    store that differs. `name`: the caller's argument, for the messages (``segkit.tune``
    calls it ``models``)."""
    if isinstance(stores, (str, Path, ConfidenceStore, StoreSet)):
        raise InputTypeError(f"{name} must be a sequence of stores (one per model); got one: "
                             f"{stores!r}")
    opened = [open_store(s) for s in stores]
    if not opened:
        raise InputError(f"{name} must name at least one confidence store")
    first = opened[0]
    for other in opened[1:]:
        if other.classes != first.classes:
            raise StoreError(f"{other.root} has classes {other.classes}, but {first.root} has "
                             f"{first.classes}: stores to combine must list the same classes "
                             "in the same order")
    return opened


def common_stems(stores: Sequence["ConfidenceStore | StoreSet"]) -> tuple[list[str], dict[str, list[str]]]:
    """(stems present in every store, sorted; {store root: stems the others have and it lacks})."""
    sets = [set(s.stems()) for s in stores]
    union = set().union(*sets) if sets else set()
    common = set.intersection(*sets) if sets else set()
    missing = {str(s.root): sorted(union - have) for s, have in zip(stores, sets)
               if union - have}
    return sorted(common), missing
