"""Image files in one place: which suffixes are images, the stem of an image below a folder,
and the stem -> image lookup that ``infer``, ``crf``, ``ensemble`` and the mmseg datasets share.

- Suffixes match whatever their case (``.JPG``, ``.Png``): :data:`IMAGE_SUFFIXES` lists them
  in lower case.
- The stem of an image is its path below the folder, flattened with ``+`` and without its
  suffix (``batch_01_vt/0002.JPG`` -> ``batch_01_vt+0002``), the names ``segkit masks
  --flatten`` gives masks and confidence stores give their files. A top-level name that
  contains ``+`` keeps it; a nested one cannot be flattened reversibly and is an error.
- Hidden files and folders (``.cache/``, temporaries of atomic writes) are never images.
- Names with spaces and any depth of nesting work; two images with one stem (``a.jpg`` and
  ``a.png``) are refused rather than one silently chosen.

>>> is_image("photos/IMG 0001.JPG")
True
>>> image_stem("batch_01_vt/0002.JPG")
'batch_01_vt+0002'
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np

from ..errors import DataError, InputError, PathNotFoundError
from .atomic import is_temporary
from .names import SEP, flatten_name, unflatten_name

#: Image suffixes (lower case; matched case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageLookupError(DataError):
    """An images folder that cannot be indexed (ambiguous or unflattenable names, no image)."""


def _suffixes(suffixes: Iterable[str] | None) -> tuple[str, ...]:
    if suffixes is None:
        return IMAGE_SUFFIXES
    if isinstance(suffixes, str):
        suffixes = (suffixes,)
    out = tuple(s.lower() if s.startswith(".") else "." + s.lower() for s in suffixes)
    if not out:
        raise InputError("suffixes must name at least one suffix; got an empty list")
    return out


def is_image(path: str | os.PathLike, suffixes: Iterable[str] | None = None) -> bool:
    """Whether the file name has an image suffix (any case) and is not hidden or a temporary.

    >>> is_image("a.JPEG"), is_image(".a.png.tmp-1-ab"), is_image("a.json")
    (True, False, False)
    """
    name = Path(path).name
    if name.startswith(".") or is_temporary(name):
        return False
    return name.lower().endswith(_suffixes(suffixes))


def image_stem(rel: str) -> str:
    """The stem of an image from its path relative to the images folder (POSIX separators):
    flattened (``dir+name``), suffix dropped.

    >>> image_stem("a b/c d.png"), image_stem("x+y.jpg")
    ('a b+c d', 'x+y')
    """
    rel = rel.replace("\\", "/")
    p = PurePosixPath(rel)
    if str(p.parent) == ".":
        return p.stem
    try:
        return flatten_name(rel)
    except ValueError as exc:
        raise ImageLookupError(f"image {rel!r}: {exc}") from None


def list_images(root: str | os.PathLike, suffixes: Iterable[str] | None = None, *,
                allow_empty: bool = False) -> dict[str, Path]:
    """{stem: path} for every image below `root` (recursive, sorted by path; hidden files and
    folders skipped).

    Raises FileNotFoundError when `root` is not a folder and :class:`ImageLookupError` when two
    images share a stem or (unless `allow_empty`) there is none.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "sub").mkdir()
    >>> _ = (d / "sub" / "A 1.JPG").write_bytes(b""); _ = (d / "b.webp").write_bytes(b"")
    >>> sorted(list_images(d))
    ['b', 'sub+A 1']
    """
    root_s = os.fspath(root)
    if not os.path.isdir(root_s):
        raise PathNotFoundError(f"images folder {root_s!r} does not exist")
    sfx = _suffixes(suffixes)
    found: dict[str, Path] = {}
    for dirpath, dirnames, files in os.walk(root_s):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(files):
            if not is_image(name, sfx):
                continue
            path = Path(dirpath) / name
            stem = image_stem(path.relative_to(root_s).as_posix())
            if stem in found:
                raise ImageLookupError(f"{root_s}: two images map to {stem!r}: "
                                       f"{found[stem].relative_to(root_s)} and "
                                       f"{path.relative_to(root_s)}; keep one image per name")
            found[stem] = path
    if not found and not allow_empty:
        raise ImageLookupError(f"no image ({', '.join(sfx)}, any case) under {root_s!r}")
    return found


def _case_insensitive(folder: Path, name: str, sfx: tuple[str, ...]) -> Path | None:
    """The file in `folder` whose name is `name` + one of `sfx`, ignoring case."""
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return None
    wanted = {(name + s).lower() for s in sfx}
    for entry in entries:
        if entry.lower() in wanted and (folder / entry).is_file():
            return folder / entry
    return None


def find_image(root: str | os.PathLike, stem: str, suffixes: Iterable[str] | None = None,
               ) -> Path:
    """The image file of `stem` below `root`: ``dir+name`` (flattened) or ``dir/name``
    resolves to ``root/dir/name.<suffix>``, else ``root/dir+name.<suffix>``; suffixes are tried
    in the order of `suffixes` (default :data:`IMAGE_SUFFIXES`) in any case.

    Raises FileNotFoundError naming what was looked for.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "b1").mkdir(); _ = (d / "b1" / "x.JPG").write_bytes(b"")
    >>> find_image(d, "b1+x").name
    'x.JPG'
    """
    root = Path(root)
    sfx = _suffixes(suffixes)
    bases = [unflatten_name(stem, suffix="")] if SEP in stem else []
    bases.append(stem)
    for base in bases:
        for s in sfx:
            for cand in (root / f"{base}{s}", root / f"{base}{s.upper()}"):
                if cand.is_file():
                    return cand
    for base in bases:
        p = root / base
        hit = _case_insensitive(p.parent, p.name, sfx)
        if hit is not None:
            return hit
    raise PathNotFoundError(f"no image for {stem!r} under {root} (looked for {bases[0]}"
                            f"{sfx[0]}, {', '.join(sfx[1:])}, in any case"
                            + (f"; and {bases[1]}.*" if len(bases) > 1 else "") + ")")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (grey, palette and RGBA images converted)."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))
