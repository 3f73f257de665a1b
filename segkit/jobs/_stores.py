"""Reading the confidence stores of a job, image by image: the one helper the jobs share
(tune, ensemble, audit, evaluate).

A :class:`StoreReader` is small and picklable (store specs and a token); the stores it names
are opened once per process and job run, not once per work item: the engine pickles a job's
function again for every chunk of items it sends to a worker, and opening a store set lists
every fold folder. The opened stores live in a small per-process table keyed by the reader's
token, which a new reader (a new job run) never shares, so a rerun sees files written since.
"""
from __future__ import annotations

import dataclasses
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError
from ..io.stems import MASKS, find_stem, list_stems
from ..io.store import ConfidenceStore, StoreError, StoreSet, open_store, store_spec

#: Opened objects per (token, key), most recent last; a worker process serves one job at a
#: time, so a few entries are enough (older runs' stores are dropped).
_OPENED: "OrderedDict[tuple[str, str], Any]" = OrderedDict()
_KEEP = 16


def per_process(token: str, key: str, factory: Callable[[], Any]) -> Any:
    """`factory()` the first time this process asks for (token, key), the same object after."""
    k = (token, key)
    if k in _OPENED:
        _OPENED.move_to_end(k)
        return _OPENED[k]
    value = factory()
    _OPENED[k] = value
    while len(_OPENED) > _KEEP:
        _OPENED.popitem(last=False)
    return value


class StoreReader:
    """The stores of one job run (store folders or store sets), read one stem at a time.

    Parameters
    ----------
    stores : sequence of ConfidenceStore, StoreSet or their specs
        Opened objects are kept for this process (no second open in the parent); a worker
        process opens each spec once.
    """

    def __init__(self, stores: Sequence[ConfidenceStore | StoreSet | str]):
        self.specs = [s if isinstance(s, str) else store_spec(s) for s in stores]
        self.token = uuid.uuid4().hex
        for spec, store in zip(self.specs, stores):
            if not isinstance(store, str):
                per_process(self.token, spec, lambda store=store: store)

    def __len__(self) -> int:
        return len(self.specs)

    def stores(self) -> list[ConfidenceStore | StoreSet]:
        return [per_process(self.token, spec, lambda spec=spec: open_store(spec))
                for spec in self.specs]

    def shape(self, stem: str) -> tuple[int, int, int]:
        """(C, H, W) of `stem`, the same in every store (from the file headers alone);
        StoreError naming both stores otherwise."""
        stores = self.stores()
        shapes = [s.shape(stem) for s in stores]
        for store, shape in zip(stores[1:], shapes[1:]):
            if shape != shapes[0]:
                raise StoreError(f"{stem}: {store.root} holds {shape}, but {stores[0].root} "
                                 f"holds {shapes[0]}")
        return shapes[0]

    def read(self, stem: str) -> list[np.ndarray]:
        """Every store's (C, H, W) float16 probabilities of `stem` (memory-mapped), after
        checking that their shapes agree."""
        self.shape(stem)
        return [s.read(stem) for s in self.stores()]


#: The annotations of the jobs that read a gt folder by stem (evaluate, tune, audit): the mask
#: rules of :mod:`segkit.io.stems`, worded for an annotation.
ANNOTATIONS = dataclasses.replace(
    MASKS, error=InputError,
    duplicate=("two masks for image {stem!r}: {root}/{first} and {root}/{second} (a nested "
               "'dir/name.png' and a flattened 'dir+name.png' name the same image); keep one"),
    missing="no annotation for {stem!r} under {root} (looked for {looked})")


def mask_index(folder: str | Path) -> dict[str, Path]:
    """Label PNGs below `folder` by stem (:func:`segkit.io.stems.list_stems`: relative path
    without suffix, folders joined by '+', so nested 'dir/name' and flattened 'dir+name' files
    match; any case; hidden files and folders skipped); InputError naming both files when two
    map to one stem, PathNotFoundError when `folder` is not a folder."""
    return list_stems(folder, ANNOTATIONS, allow_empty=True)


def mask_of(stem: str, path: str, shape: tuple[int, ...]) -> np.ndarray:
    """The label mask at `path` of image `stem`, checked against the probabilities' (H, W)
    (the last two numbers of `shape`): InputError naming both sizes otherwise."""
    from ..io.masks import read_mask

    mask = read_mask(path)
    h, w = shape[-2:]
    if mask.shape != (h, w):
        raise InputError(f"{stem}: mask {path} is {mask.shape[1]}x{mask.shape[0]}, the "
                         f"probabilities {w}x{h}")
    return mask


def image_of(stem: str, folder: str, shape: tuple[int, ...]) -> np.ndarray:
    """The RGB image (H, W, 3) uint8 of `stem` in `folder` (any of the image suffixes),
    checked against the probabilities' (H, W): InputError naming both sizes otherwise."""
    from ..io.images import find_image, read_image

    image = read_image(find_image(Path(folder), stem))
    h, w = shape[-2:]
    if image.shape[:2] != (h, w):
        raise InputError(f"{stem}: image is {image.shape[1]}x{image.shape[0]}, the "
                         f"probabilities {w}x{h}")
    return image


def find_mask(folder: str | Path, stem: str) -> Path:
    """The annotation of image `stem` in `folder`: ``dir/name.png`` for stem ``dir+name``, else
    ``<stem>.png``, any case (:func:`segkit.io.stems.find_stem`: one lookup, no listing of the
    folder, as :func:`mask_index` pairs them); PathNotFoundError naming both when neither is
    there, InputError when both are."""
    return find_stem(folder, stem, ANNOTATIONS)
