"""A stand-in for `mmcv._ext`, the compiled-ops module that mmcv-lite does not ship.

mmsegmentation 1.2 imports `mmcv.ops` unguarded (mask classification, SAN head, focal loss),
and `mmcv.ops` loads `mmcv._ext` at import time, checking only that each op name exists. None of
those ops is used by UperNet + Swin, so the stack works with a module that answers every name
and raises a clear error if an op is ever called (GUIDE section 5).

The stand-in is installed only when no real `mmcv._ext` can be found: a full mmcv build with
compiled ops is always used as is. Its ``__spec__`` is a real ModuleSpec whose loader is None, so
mmengine's ``mmcv_full_available()`` (which asks ``pkgutil.find_loader``) still answers False;
onedl-mmengine's asks ``importlib.util.find_spec`` and answers True, then only imports mmcv.ops'
Python classes for isinstance checks (SyncBatchNorm, DCN), which the stand-in serves.

This module must not import mmcv's ops, mmseg or mmengine: `segkit.mmseg` calls
:func:`install` before importing them.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

NAME = "mmcv._ext"
#: marks the stand-in so tests and `segkit info` can tell it from a real build
STUB_FLAG = "__segkit_stub__"


class MissingOpError(RuntimeError):
    """An mmcv compiled op was called, but only the mmcv-lite stand-in is installed."""


def _missing_op(name: str):
    def op(*args, **kwargs):
        raise MissingOpError(
            f"mmcv._ext.{name} is a compiled mmcv op, and this environment has mmcv-lite "
            "(no compiled ops; segkit installed a stand-in so that mmsegmentation imports). "
            "The model or transform you use needs the full mmcv: pip uninstall mmcv-lite, then "
            "install mmcv==2.1.0 with its ops (built from source; see the README, 'Training "
            "with mmsegmentation').")

    op.__name__ = op.__qualname__ = name
    op.__module__ = NAME
    return op


def make_stub() -> types.ModuleType:
    """A fresh stand-in module (not registered anywhere)."""
    module = types.ModuleType(NAME, "Stand-in for mmcv's compiled ops (installed by segkit; "
                                    "calling any op raises MissingOpError).")
    module.__spec__ = importlib.machinery.ModuleSpec(NAME, loader=None)
    module.__loader__ = None
    module.__package__ = "mmcv"

    def __getattr__(name: str):
        # Dunder names stay missing: the import system probes __path__, __file__ and friends.
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(f"module {NAME!r} has no attribute {name!r}")
        op = _missing_op(name)
        setattr(module, name, op)  # one object per name, so repeated look-ups agree
        return op

    module.__getattr__ = __getattr__
    setattr(module, STUB_FLAG, True)
    return module


def real_ext_available() -> bool:
    """True when a real (compiled) `mmcv._ext` can be imported from the installed mmcv."""
    current = sys.modules.get(NAME)
    if current is not None:
        return not getattr(current, STUB_FLAG, False)
    try:
        return importlib.util.find_spec(NAME) is not None
    except ModuleNotFoundError as exc:  # mmcv itself is missing
        raise ImportError("segkit.mmseg needs mmcv (mmcv-lite or mmcv >=2.0,<2.2), mmengine and "
                          "mmsegmentation 1.2: pip install 'segkit[mmseg]'") from exc


def install() -> bool:
    """Register the stand-in as `mmcv._ext` unless a real one exists; returns True when the
    stand-in is (now or already) in place."""
    if real_ext_available():
        return False
    if NAME not in sys.modules:
        stub = make_stub()
        sys.modules[NAME] = stub
        parent = sys.modules.get("mmcv")
        if parent is not None:
            setattr(parent, "_ext", stub)
    return True


def is_stub(module: types.ModuleType | None = None) -> bool:
    """Whether `module` (default: the current `mmcv._ext`) is segkit's stand-in."""
    module = sys.modules.get(NAME) if module is None else module
    return bool(module is not None and getattr(module, STUB_FLAG, False))
