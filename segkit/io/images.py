"""Image files in one place: which suffixes are images, the stem of an image below a folder,
and the stem -> image lookup that ``infer``, ``crf``, ``ensemble`` and the mmseg datasets share,
all by the rules of :mod:`segkit.io.stems` (any case, hidden files skipped, stems flattened
with ``+``, two images of one stem an error naming both, listings sorted by path).

>>> is_image("photos/IMG 0001.JPG")
True
>>> image_stem("batch_01_vt/0002.JPG")
'batch_01_vt+0002'
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from . import stems as _stems
from .stems import (IMAGES, StemLookupError, find_stem, is_listed, list_stems,
                    normalize_suffixes, stem_of_path)

#: The suffixes an image file may have, matched in any case (those of :mod:`segkit.io.stems`).
IMAGE_SUFFIXES = _stems.IMAGE_SUFFIXES

__all__ = ["IMAGE_SUFFIXES", "ImageLookupError", "is_image", "image_stem", "list_images",
           "find_image", "read_image"]


class ImageLookupError(StemLookupError):
    """An images folder that cannot be indexed (ambiguous or unflattenable names, no image)."""


def _kind(suffixes: Iterable[str] | None):
    suffixes = IMAGE_SUFFIXES if suffixes is None else normalize_suffixes(suffixes)
    return dataclasses.replace(IMAGES, suffixes=suffixes, error=ImageLookupError)


def is_image(path: str | os.PathLike, suffixes: Iterable[str] | None = None) -> bool:
    """Whether the file name has an image suffix (any case) and is not hidden or a temporary.

    >>> is_image("a.JPEG"), is_image(".a.png.tmp-1-ab"), is_image("a.json")
    (True, False, False)
    """
    return is_listed(path, IMAGE_SUFFIXES if suffixes is None else normalize_suffixes(suffixes))


def image_stem(rel: str) -> str:
    """The stem of an image from its path relative to the images folder (POSIX separators):
    flattened (``dir+name``), suffix dropped.

    >>> image_stem("a b/c d.png"), image_stem("x+y.jpg")
    ('a b+c d', 'x+y')
    """
    return stem_of_path(rel, ImageLookupError, "image")


def list_images(root: str | os.PathLike, suffixes: Iterable[str] | None = None, *,
                allow_empty: bool = False) -> dict[str, Path]:
    """{stem: path} for every image below `root` (:func:`segkit.io.stems.list_stems`:
    recursive, sorted by path; hidden files and folders skipped).

    Raises FileNotFoundError when `root` is not a folder and :class:`ImageLookupError` when two
    images share a stem (naming both) or (unless `allow_empty`) there is none.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "sub").mkdir()
    >>> _ = (d / "sub" / "A 1.JPG").write_bytes(b""); _ = (d / "b.webp").write_bytes(b"")
    >>> sorted(list_images(d))
    ['b', 'sub+A 1']
    """
    return list_stems(root, _kind(suffixes), allow_empty=allow_empty)


def find_image(root: str | os.PathLike, stem: str, suffixes: Iterable[str] | None = None,
               ) -> Path:
    """The image file of `stem` below `root` (:func:`segkit.io.stems.find_stem`): ``dir+name``
    (flattened) or ``dir/name`` resolves to ``root/dir/name.<suffix>`` or
    ``root/dir+name.<suffix>`` (both there: :class:`ImageLookupError` naming both); suffixes
    are tried in the order of `suffixes` (default :data:`IMAGE_SUFFIXES`) in any case.

    Raises FileNotFoundError naming what was looked for.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "b1").mkdir(); _ = (d / "b1" / "x.JPG").write_bytes(b"")
    >>> find_image(d, "b1+x").name
    'x.JPG'
    """
    return find_stem(root, stem, _kind(suffixes))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (grey, palette and RGBA images converted)."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))
