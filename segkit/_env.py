"""What the optional stacks look like here (for `segkit info`), without importing them."""
from __future__ import annotations

import importlib.metadata
import importlib.util

STACKS = {
    "cuda": ["cupy-cuda12x", "cupy-cuda13x", "cupy"],
    "mmseg": ["torch", "mmengine", "mmcv", "mmcv-lite", "mmsegmentation", "albumentations",
              "ftfy", "regex"],
    "ray": ["ray"],
}
#: module that must be importable for each stack
PROBE = {"cuda": "cupy", "mmseg": "mmseg", "ray": "ray"}


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def stack_report() -> list[str]:
    lines = []
    for stack, dists in STACKS.items():
        found = {d: version(d) for d in dists}
        present = ", ".join(f"{d} {v}" for d, v in found.items() if v)
        ok = importlib.util.find_spec(PROBE[stack]) is not None
        lines.append(f"  {stack:6s} {'yes' if ok else 'no ':3s} {present or 'not installed'}"
                     + ("" if ok else f"  (pip install 'segkit[{stack}]')"))
    return lines
