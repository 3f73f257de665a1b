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
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import atomic

META = "meta.json"
#: Probabilities must sum to 1 within this (float16 storage rounds each value to ~1e-3).
SUM_TOLERANCE = 2e-2


class StoreError(ValueError):
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
        classes = self.meta.get("classes")
        if not isinstance(classes, list) or len(classes) < 2:
            raise StoreError(f"{meta_path}: 'classes' must list at least 2 class names")

    # ---- creation ----------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, classes: Sequence[str], *, model: str = "",
               config: Any = None, tta: Any = None, exist_ok: bool = True,
               **extra: Any) -> "ConfidenceStore":
        """Create (or reopen, if `exist_ok` and the classes match) a store at `root`."""
        root = Path(root)
        classes = [str(c) for c in classes]
        if len(classes) < 2:
            raise ValueError(f"classes must name at least 2 classes; got {classes!r}")
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
            raise ValueError(f"stem must be a plain file stem; got {stem!r}")
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
