"""Finding files by their stem: the one set of rules that every folder listing and lookup of
segkit follows (images for ``infer``, ``crf``, ``ensemble``, the mmseg datasets and the recipe;
masks for ``resample``, ``kfold_masks``, ``evaluate``, ``tune`` and ``audit``).

- The stem of a file is its path below the folder, folders joined with ``+``, without its
  suffix (``batch_01_vt/0002.JPG`` -> ``batch_01_vt+0002``). A top-level name that contains
  ``+`` keeps it (``batch_01_vt+0002.png`` has the same stem: the nested and the flattened
  spellings name one file); a nested one cannot be flattened reversibly and is an error.
- Suffixes match whatever their case (``.JPG``, ``.Png``); :class:`FileKind` lists them in
  lower case. Files of other suffixes are skipped, except those a kind refuses (a JPEG in a
  folder of PNG masks is an error, not silently left out).
- Hidden files and folders (``.cache/``, the temporaries of atomic writes) are never listed.
- Listings recurse into every folder and are sorted by path (folder by folder, names in code
  point order: what ``sorted(root.rglob("*"))`` gives).
- Two files with one stem (``a.jpg`` and ``a.png``; ``d/x.png`` and ``d+x.png``) are an error
  naming both, never one silently chosen.

What differs between callers is a parameter of :class:`FileKind` (the suffixes, the suffixes
refused, the error class and the messages' wording), never a rule of its own.

>>> stem_of_path("batch_01_vt/0002.JPG")
'batch_01_vt+0002'
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from ..errors import DataError, InputError, PathNotFoundError, SegkitError
from .atomic import is_temporary
from .names import SEP, flatten_name, unflatten_name

#: Image suffixes (lower case; matched case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Image files that are not PNG masks: refused in a folder of masks.
NOT_MASKS = tuple(s for s in IMAGE_SUFFIXES if s != ".png") + (".gif", ".ppm", ".pgm")


class StemLookupError(DataError):
    """A folder whose files cannot be keyed by stem: two files for one stem, a nested name that
    cannot be flattened, a file of a refused kind, or (where one is needed) no file at all."""


def normalize_suffixes(suffixes: Iterable[str] | str) -> tuple[str, ...]:
    """Suffixes in lower case with their dot: ``("JPG", ".Png")`` -> ``(".jpg", ".png")``."""
    if isinstance(suffixes, str):
        suffixes = (suffixes,)
    out = tuple(s.lower() if s.startswith(".") else "." + s.lower() for s in suffixes)
    if not out:
        raise InputError("suffixes must name at least one suffix; got an empty list")
    return out


@dataclass(frozen=True)
class FileKind:
    """What a folder holds, and how a caller words its errors.

    Parameters
    ----------
    noun : str
        The file's name in messages ("image", "mask").
    suffixes : tuple of str
        Accepted suffixes, lower case with the dot, in the order :func:`find_stem` tries them.
    refuse : tuple of str
        Suffixes that are an error in such a folder (listed files only).
    error : type
        The exception raised for duplicates, unflattenable names and refused files.
    duplicate : str
        Message for two files of one stem; fields ``{root}``, ``{stem}``, ``{first}``,
        ``{second}`` (the two files relative to the root) and ``{noun}``.
    missing : str
        Message of :func:`find_stem` when no file is there; fields ``{stem}``, ``{root}``,
        ``{looked}`` (what was looked for) and ``{noun}``.
    refused : str
        Message for refused files; fields ``{path}`` (the first), ``{more}`` and ``{noun}``.
    """
    noun: str
    suffixes: tuple[str, ...]
    refuse: tuple[str, ...] = ()
    error: type[SegkitError] = StemLookupError
    duplicate: str = ("{root}: two {noun}s map to {stem!r}: {first} and {second}; keep one "
                      "{noun} per name")
    missing: str = "no {noun} for {stem!r} under {root} (looked for {looked})"
    refused: str = "{path}: not a {noun}{more}"

    def __post_init__(self):
        object.__setattr__(self, "suffixes", normalize_suffixes(self.suffixes))
        if self.refuse:
            object.__setattr__(self, "refuse", normalize_suffixes(self.refuse))


#: Images (any of :data:`IMAGE_SUFFIXES`).
IMAGES = FileKind("image", IMAGE_SUFFIXES)
#: Single-channel PNG label masks.
MASKS = FileKind("mask", (".png",))


def is_listed(path: str | os.PathLike, suffixes: Iterable[str]) -> bool:
    """Whether a file name has one of `suffixes` (any case) and is neither hidden nor a
    temporary."""
    name = Path(path).name
    if name.startswith(".") or is_temporary(name):
        return False
    return name.lower().endswith(tuple(suffixes))


def stem_of_path(rel: str, error: type[SegkitError] = StemLookupError, noun: str = "file"
                 ) -> str:
    """The stem of a file from its path relative to the folder (POSIX or Windows separators):
    flattened (``dir+name``), suffix dropped.

    >>> stem_of_path("a b/c d.png"), stem_of_path("x+y.jpg")
    ('a b+c d', 'x+y')
    """
    rel = rel.replace("\\", "/")
    p = PurePosixPath(rel)
    if str(p.parent) == ".":
        return p.stem
    try:
        return flatten_name(rel)
    except ValueError as exc:
        raise error(f"{noun} {rel!r}: {exc}") from None


def list_stems(root: str | os.PathLike, kind: FileKind = IMAGES, *,
               allow_empty: bool = False) -> dict[str, Path]:
    """{stem: path} of the files of `kind` below `root` (recursive, sorted by path).

    Raises PathNotFoundError when `root` is not a folder, and ``kind.error`` when two files map
    to one stem (naming both), a nested name contains ``+``, a file has a suffix the kind
    refuses, or (unless `allow_empty`) there is no file.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "sub").mkdir()
    >>> _ = (d / "sub" / "A 1.JPG").write_bytes(b""); _ = (d / "b.webp").write_bytes(b"")
    >>> list(list_stems(d))
    ['b', 'sub+A 1']
    """
    root_s = os.fspath(root)
    if not os.path.isdir(root_s):
        raise PathNotFoundError(f"{kind.noun}s folder {root_s!r} does not exist")
    hits: list[tuple[tuple[str, ...], Path]] = []
    refused: list[tuple[tuple[str, ...], Path]] = []
    for dirpath, dirnames, files in os.walk(root_s):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(root_s).parts
        for name in files:
            if is_listed(name, kind.suffixes):
                hits.append(((*rel_dir, name), Path(dirpath) / name))
            elif kind.refuse and is_listed(name, kind.refuse):
                refused.append(((*rel_dir, name), Path(dirpath) / name))
    if refused:
        refused.sort()
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise kind.error(kind.refused.format(path=refused[0][1], more=more, noun=kind.noun))
    found: dict[str, Path] = {}
    for parts, path in sorted(hits):
        stem = stem_of_path("/".join(parts), kind.error, kind.noun)
        if stem in found:
            raise kind.error(kind.duplicate.format(
                root=root_s, stem=stem, first=found[stem].relative_to(root_s),
                second=path.relative_to(root_s), noun=kind.noun))
        found[stem] = path
    if not found and not allow_empty:
        raise kind.error(f"no {kind.noun} ({', '.join(kind.suffixes)}, any case) under "
                         f"{root_s!r}")
    return found


def _in_any_case(folder: Path, name: str, suffixes: tuple[str, ...]) -> Path | None:
    """The file `name` + one of `suffixes` in `folder`, in the suffixes' order, any case."""
    for s in suffixes:
        for cand in (folder / f"{name}{s}", folder / f"{name}{s.upper()}"):
            if cand.is_file():
                return cand
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return None
    by_name = {e.lower(): e for e in reversed(entries)}
    for s in suffixes:
        hit = by_name.get((name + s).lower())
        if hit is not None and not hit.startswith(".") and (folder / hit).is_file():
            return folder / hit
    return None


def find_stem(root: str | os.PathLike, stem: str, kind: FileKind = IMAGES) -> Path:
    """The file of `stem` below `root`, without listing the folder: ``dir+name`` (flattened)
    or ``dir/name`` resolves to ``root/dir/name.<suffix>`` or ``root/dir+name.<suffix>``;
    suffixes in the kind's order, any case.

    Raises PathNotFoundError naming what was looked for, and ``kind.error`` naming both files
    when both spellings are there (as :func:`list_stems` would).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "b1").mkdir(); _ = (d / "b1" / "x.JPG").write_bytes(b"")
    >>> find_stem(d, "b1+x").name
    'x.JPG'
    """
    root = Path(root)
    sfx = kind.suffixes
    bases = [unflatten_name(stem, suffix="")] if SEP in stem else []
    bases.append(stem)
    found = []
    for base in bases:
        p = root / base
        hit = _in_any_case(p.parent, p.name, sfx)
        if hit is not None:
            found.append(hit)
    if len(found) == 2 and found[0] != found[1]:
        raise kind.error(kind.duplicate.format(
            root=root, stem=stem, first=found[0].relative_to(root), second=found[1].relative_to(root),
            noun=kind.noun))
    if found:
        return found[0]
    looked = " and ".join(f"{b}{sfx[0]}" for b in bases)
    if len(sfx) > 1:
        looked += f"; suffixes {', '.join(sfx)}"
    raise PathNotFoundError(kind.missing.format(stem=stem, root=root, noun=kind.noun,
                                                looked=looked + ", in any case"))
