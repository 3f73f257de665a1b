"""`make install TORCH=keep`: constraints.txt less the pins of what the interpreter already has.

The venv is made with --system-site-packages on top of the interpreter that holds the user's
torch (a CUDA build, say). Pinning torch, or numpy under it, would make pip replace them; so the
pin of every distribution already installed there is dropped (and named), and the rest of
constraints.txt applies to what pip still has to install.

    python scripts/keep_constraints.py constraints.txt .venv/constraints-keep.txt
    python scripts/keep_constraints.py --verify .venv/constraints-keep.txt   # after the install
"""
from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

HEADER = "# kept: "


def installed() -> dict[str, str]:
    """normalised name -> version of every distribution this interpreter sees."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalise(name), dist.version)
    return found


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def write(src: Path, dst: Path) -> int:
    have = installed()
    if "torch" not in have:
        print(f"TORCH=keep: {sys.executable} sees no torch; install your torch build into the "
              "interpreter first (e.g. pip install torch --index-url "
              "https://download.pytorch.org/whl/cu128), or use TORCH=pin", file=sys.stderr)
        return 1
    kept, lines = [], []
    for line in src.read_text().splitlines():
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==", line)
        if m and normalise(m.group(1)) in have:
            name = normalise(m.group(1))
            kept.append(f"{name}=={have[name]}")
            continue
        lines.append(line)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(HEADER + " ".join(kept) + "\n" + "\n".join(lines) + "\n")
    print(f"TORCH=keep: keeping torch {have['torch']} and {len(kept) - 1} other installed "
          f"package(s) as they are; {dst} pins the rest")
    return 0


def verify(path: Path) -> int:
    """Fail when the install changed a kept package's version (pip replaced torch, say)."""
    first = path.read_text().splitlines()[0]
    have = installed()
    changed = []
    for item in first[len(HEADER):].split():
        name, version = item.split("==", 1)
        if have.get(name) != version:
            changed.append(f"{name} {version} -> {have.get(name)}")
    if changed:
        print("TORCH=keep: the install changed kept packages: " + ", ".join(changed),
              file=sys.stderr)
        return 1
    print(f"TORCH=keep: torch {have['torch']} kept")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--verify"] and len(argv) == 2:
        return verify(Path(argv[1]))
    if len(argv) == 2:
        return write(Path(argv[0]), Path(argv[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
