"""Checkpoints load with ``torch.load(..., weights_only=True)`` and an allowlist of exactly the
globals that mmengine's checkpoints hold besides tensors (GUIDE section 5).

mmengine saves, next to the weights, its message hub: ``HistoryBuffer`` objects holding NumPy
arrays and scalars, and in each buffer its statistics methods, pickled as
``getattr(HistoryBuffer, 'mean')``. torch >= 2.6 refuses those under its default
``weights_only=True``; the usual answer, ``weights_only=False``, runs whatever the file's pickle
says. segkit keeps ``weights_only=True`` and allows exactly these globals (found with
``torch.serialization.get_unsafe_globals_in_checkpoint`` on mmengine 0.10.7 checkpoints), only
while mmengine's loader reads a local file (a ``safe_globals`` context, no process-wide change):

- ``mmengine.logging.history_buffer.HistoryBuffer``;
- NumPy's array and scalar reconstruction: ``numpy._core.multiarray._reconstruct`` and
  ``.scalar`` (also under their NumPy 1 names ``numpy.core.multiarray.*``), ``numpy.ndarray``,
  ``numpy.dtype`` and the dtype classes (``numpy.dtypes.Float64DType`` ...), whose instances
  the pickle rebuilds;
- ``builtins.getattr``, bound to a restricted stand-in that only returns HistoryBuffer's own
  statistics methods (``min``, ``max``, ``mean``, ``current``) and refuses everything else.

Importing `segkit.mmseg` registers :func:`load_local` as mmengine's loader for local paths, so
``Runner`` resume/load_from, the Swin backbone's ``init_cfg`` pretrained weights and
``mmseg.apis.init_model`` all go through it (also under ``tools/train.py`` with
``custom_imports``). A file that needs anything else fails with an error naming the global.

A checkpoint of a ``CRFEncoderDecoder`` holds its ConvCRF under ``crf.``; loading one logs
which tensors those are and that a plain model (no CRF layer) ignores them, so that mmengine's
"unexpected key" lines for them are explained (the loader does not know the model it fills).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import torch


#: the HistoryBuffer attributes a checkpoint may fetch through getattr
HISTORY_BUFFER_METHODS = ("min", "max", "mean", "current")


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as mmengine's checkpoints use it, and nothing more."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if obj is HistoryBuffer and name in HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise CheckpointError(f"checkpoint asks for getattr({obj!r}, {name!r}); segkit's weights-only "
                          f"loader allows only HistoryBuffer.{{{', '.join(HISTORY_BUFFER_METHODS)}}}")


def safe_globals() -> list[Any]:
    """The allowlist: exactly the non-tensor globals in mmengine checkpoints (see above)."""
    from mmengine.logging.history_buffer import HistoryBuffer

    core = getattr(np, "_core", None)
    multiarray = core.multiarray if core is not None else np.core.multiarray
    allowed: list[Any] = [HistoryBuffer, multiarray._reconstruct, multiarray.scalar, np.ndarray,
                          np.dtype, (_history_buffer_getattr, "builtins.getattr")]
    # arrays' dtypes are rebuilt as instances of the dtype classes (Float64DType, Int64DType, ...)
    dtypes = getattr(np, "dtypes", None)  # NumPy >= 1.25
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in sorted(dir(dtypes))
                    if n.endswith("DType") and isinstance(getattr(dtypes, n), type)]
    if core is not None:  # NumPy 2 reading a file that NumPy 1 wrote
        allowed += [(multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
                    (multiarray.scalar, "numpy.core.multiarray.scalar")]
    return allowed


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded under weights_only=True with segkit's allowlist."""


def load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with :func:`safe_globals` allowed."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError and others
        if "weights_only" not in str(exc) and "Unsupported global" not in str(exc):
            raise
        try:
            needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - legacy (non-zip) formats
            needed = []
        raise CheckpointError(
            f"checkpoint {path!r} holds objects outside segkit's weights-only allowlist"
            f"{' (' + ', '.join(needed) + ')' if needed else ''}. segkit loads checkpoints with "
            "torch.load(weights_only=True). If you trust the file, allow those types first with "
            "torch.serialization.add_safe_globals([...]), or save a plain state_dict."
            f"\n(torch said: {exc})") from exc


#: where a CRFEncoderDecoder keeps its ConvCRF in the state dict
CRF_PREFIX = "crf."


def crf_keys(state: Any) -> list[str]:
    """The ConvCRF tensors (``crf.*``, also as ``module.crf.*``) of a checkpoint or state dict."""
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        return []
    return sorted(k for k in state if isinstance(k, str) and
                  (k.startswith(CRF_PREFIX) or k.startswith("module." + CRF_PREFIX)))


def crf_note(path: str, keys: list[str]) -> str:
    """The message logged when a checkpoint with a ConvCRF layer is loaded."""
    return (f"checkpoint {path!r} has a ConvCRF layer ({len(keys)} tensors: "
            f"{', '.join(keys)}). A CRFEncoderDecoder loads them; a model without a CRF layer "
            "(a plain EncoderDecoder config) ignores them and predicts with the unary alone "
            "(mmengine lists them as unexpected keys)")


def load_local(filename: str, map_location: Any = None) -> Any:
    """mmengine's local-file loader, weights-only (registered on import of `segkit.mmseg`)."""
    path = os.path.expanduser(filename)
    state = load(path, map_location=map_location)
    keys = crf_keys(state)
    if keys:
        from mmengine.logging import print_log

        print_log(crf_note(path, keys), logger="current")
    return state


def register() -> None:
    """Make mmengine's CheckpointLoader read local files (the '' scheme) with :func:`load_local`."""
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes="", loader=load_local, force=True)


def is_registered() -> bool:
    from mmengine.runner.checkpoint import CheckpointLoader

    return CheckpointLoader._get_checkpoint_loader("some/file.pth") is load_local
