"""Image names and file stems. The original recipe flattened `batch_01_vt/0002.jpg` to
`batch_01_vt+0002` for output files; these map between the two forms."""
from __future__ import annotations

from pathlib import PurePosixPath
from ..errors import InputError

SEP = "+"


def flatten_name(file_name: str) -> str:
    """'batch_01_vt/0002.jpg' -> 'batch_01_vt+0002' (folders joined by '+', suffix dropped)."""
    p = PurePosixPath(file_name.replace("\\", "/"))
    parts = [*p.parent.parts, p.stem] if str(p.parent) != "." else [p.stem]
    for part in parts:
        if SEP in part:
            raise InputError(f"file_name {file_name!r} already contains {SEP!r}; cannot flatten "
                             "it reversibly")
    return SEP.join(parts)


def unflatten_name(stem: str, suffix: str = ".jpg") -> str:
    """'batch_01_vt+0002' -> 'batch_01_vt/0002.jpg'."""
    return "/".join(stem.split(SEP)) + suffix


def stem_of(file_name: str, *, flatten: bool = True) -> str:
    """The output stem for an image file name: flattened ('dir+name') or the path without its
    suffix ('dir/name', for outputs that keep the folder layout)."""
    if flatten:
        return flatten_name(file_name)
    return str(PurePosixPath(file_name.replace("\\", "/")).with_suffix(""))
