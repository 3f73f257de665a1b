"""What the optional stacks look like here (for `segkit info`)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys

STACKS = {
    "cuda": ["cupy-cuda12x", "cupy-cuda13x", "cupy"],
    "mmseg": ["torch", "mmengine", "mmcv", "mmcv-lite", "mmsegmentation", "onedl-mmengine",
              "onedl-mmcv", "onedl-mmsegmentation", "albumentations",
              "ftfy", "regex"],
    "ray": ["ray"],
}
#: the import that proves a stack works (run in a fresh interpreter)
PROBE = {"cuda": "cupy", "mmseg": "segkit.mmseg", "ray": "ray"}
#: a module whose presence says the stack is installed at all
PRESENT = {"cuda": "cupy", "mmseg": "mmseg", "ray": "ray"}


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def import_check(module: str, timeout: float = 120) -> str | None:
    """None if `module` imports in a fresh interpreter, else the error's last line."""
    try:
        proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"importing {module} took over {timeout:.0f} s"
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def stack_report(check_imports: bool = True) -> list[str]:
    lines = []
    for stack, dists in STACKS.items():
        found = {d: version(d) for d in dists}
        present = ", ".join(f"{d} {v}" for d, v in found.items() if v)
        if importlib.util.find_spec(PRESENT[stack]) is None:
            lines.append(f"  {stack:6s} no  not installed (pip install 'segkit[{stack}]')")
            continue
        error = import_check(PROBE[stack]) if check_imports else None
        state = "yes" if error is None else "no "
        lines.append(f"  {stack:6s} {state} {present}" +
                     ("" if error is None else f"\n         import {PROBE[stack]} fails: {error}"))
    return lines


def _package_dir(module: str):
    """The directory of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    from pathlib import Path

    return Path(list(spec.submodule_search_locations)[0])


def torch_build() -> str | None:
    """'2.13.0+cpu, CPU build' / '2.13.0, CUDA 13.0 build' (read from torch/version.py, so
    torch is not imported), or None without torch."""
    import re

    root = _package_dir("torch")
    if root is None:
        return None
    text = (root / "version.py").read_text() if (root / "version.py").is_file() else ""
    got = {k: v for k, v in re.findall(r"^(\w+)\s*(?::[^=]*)?=\s*'([^']*)'", text, re.M)}
    cuda = re.search(r"^cuda\s*(?::[^=]*)?=\s*'([^']+)'", text, re.M)
    hip = re.search(r"^hip\s*(?::[^=]*)?=\s*'([^']+)'", text, re.M)
    release = got.get("__version__") or version("torch") or "?"
    kind = (f"CUDA {cuda.group(1)} build" if cuda else f"ROCm {hip.group(1)} build" if hip
            else "CPU build")
    return f"{release}, {kind}"


#: distribution names of each OpenMMLab line (the import names are the same: mmseg, mmcv, ...)
MM_LINES = {
    "upstream": ("mmsegmentation", "mmengine", ("mmcv", "mmcv-lite")),
    "onedl": ("onedl-mmsegmentation", "onedl-mmengine", ("onedl-mmcv",)),
}


def mmseg_line() -> str | None:
    """Which OpenMMLab line provides `mmseg` here, with versions and whether mmcv has its
    compiled ops; None when neither is installed."""
    lines = []
    for line, (seg, engine, cvs) in MM_LINES.items():
        if version(seg) is None:
            continue
        cv = next(((d, version(d)) for d in cvs if version(d)), (cvs[0], None))
        lines.append(f"{line}: {seg} {version(seg)}, {engine} {version(engine) or 'missing'}, "
                     f"{cv[0]} {cv[1] or 'missing'}")
    if not lines:
        return None
    mmcv = _package_dir("mmcv")
    ops = bool(mmcv and any(mmcv.glob("_ext*.so")) or mmcv and any(mmcv.glob("_ext*.pyd")))
    text = " + ".join(lines) + (" (mmcv with compiled ops)" if ops else
                                " (mmcv without compiled ops: segkit.mmseg's mmcv._ext stand-in)")
    if len(lines) > 1:
        text += "; both lines are installed and share the import names: uninstall one"
    return text


def build_report() -> list[str]:
    """The extension and the CUDA sources this install has (for `segkit info`)."""
    from segkit import _cuda

    spec = importlib.util.find_spec("segkit._C")
    root = _cuda.source_root()
    return [
        f"  extension     {spec.origin if spec else 'missing (segkit._C was not built)'}",
        f"  CUDA sources  {root} ({len(_cuda.cuda_sources())} kernels)" if root else
        "  CUDA sources  missing (csrc/cuda, csrc/common not installed)",
    ]
