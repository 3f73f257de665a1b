"""What each stage consumed and made: ``DIR/state/<stage>.json``.

A stage's **key** is the hash of the settings it reads (their values), the identities of its
inputs outside the recipe (paths, sizes, modification times of every file below them) and the
keys of the stages it comes after. A stage is *done* when its record's key equals the key
computed now and what it made is still there; otherwise it is *stale*, and :func:`why_stale`
says which setting, input or earlier stage changed.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..io.atomic import is_temporary, write_json

STATE_DIR = "state"


def digest(obj: Any) -> str:
    """A short hash of JSON-able `obj`."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity(path: str | Path | None) -> str:
    """The identity of a file or folder: a hash of (relative path, size, mtime) of every file
    below it (hidden files and atomic-write temporaries skipped); "absent" when missing."""
    if not path:
        return "none"
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return digest([path.name, st.st_size, st.st_mtime_ns])
    if not path.is_dir():
        return "absent"
    rows = []
    for dirpath, dirnames, files in os.walk(path, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or is_temporary(name):
                continue
            p = Path(dirpath) / name
            st = p.stat()
            rows.append((p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns))
    return digest(rows)


def content_hash(path: str | Path) -> str:
    """Hash of a small file's bytes (configs, class tables): touching it changes nothing."""
    path = Path(path)
    if not path.is_file():
        return "absent"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class Ledger:
    """The records of one recipe folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.dir = self.folder / STATE_DIR

    def path(self, stage: str) -> Path:
        return self.dir / f"{stage}.json"

    def read(self, stage: str) -> dict | None:
        p = self.path(stage)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except ValueError:
            return None  # a damaged record: the stage runs again

    def write(self, stage: str, record: dict) -> None:
        write_json(self.path(stage), record, indent=1, default=str)

    def forget(self, stage: str) -> None:
        self.path(stage).unlink(missing_ok=True)


def made_identities(folder: Path, made: list[str]) -> dict[str, str]:
    """Identity of each output (relative to the recipe folder)."""
    return {m: identity(folder / m) for m in made}


def why_stale(record: dict | None, now: dict, folder: Path) -> list[str]:
    """Why `record` (a stage's last record) does not match `now` (its settings, inputs and
    upstream keys computed now); empty when it matches and its outputs are intact."""
    if record is None:
        return ["never ran"]
    if record.get("state") == "running":
        return [f"did not finish (started {record.get('started', '?')}): it continues from "
                "what it made"]
    reasons = []
    old_settings = record.get("settings", {})
    for key, value in now["settings"].items():
        if key not in old_settings:
            reasons.append(f"setting {key} is new")
        elif old_settings[key] != value:
            reasons.append(f"setting {key} changed ({_short(old_settings[key])} -> "
                           f"{_short(value)})")
    for key in sorted(set(old_settings) - set(now["settings"])):
        reasons.append(f"setting {key} was removed")
    for name, ident in now["inputs"].items():
        if record.get("inputs", {}).get(name) != ident:
            reasons.append(f"input {name} changed")
    for stage, key in now["upstream"].items():
        if record.get("upstream", {}).get(stage) != key:
            reasons.append(f"stage {stage} before it changed")
    if not reasons:
        for name, ident in (record.get("made") or {}).items():
            if identity(folder / name) != ident:
                reasons.append(f"its output {name} changed or is missing")
    return reasons


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
