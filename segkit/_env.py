"""What the optional stacks look like here (for `segkit info`)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys

STACKS = {
    "cuda": ["cupy-cuda12x", "cupy-cuda13x", "cupy"],
    "mmseg": ["torch", "mmengine", "mmcv", "mmcv-lite", "mmsegmentation", "albumentations",
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
