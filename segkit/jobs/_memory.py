"""Peak memory of one work item in a worker process, for the job reports.

On Linux the kernel's high-water mark of the resident set (``VmHWM``) is reset before the item
(``/proc/self/clear_refs``, value 5) and read after it, so the peak belongs to that item alone:
``peak_above_start`` is what the item added on top of the worker's resident set when it began
(the mask, decoded annotations, the PNG encoder's buffers). Elsewhere the process-wide
``ru_maxrss`` is reported and the per-item figure is None.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_kb(*keys: str) -> dict[str, int] | None:
    try:
        with open(_STATUS) as f:
            found = {}
            for line in f:
                key, _, value = line.partition(":")
                if key in keys:
                    found[key] = int(value.split()[0])
            return found if len(found) == len(keys) else None
    except (OSError, ValueError):
        return None


def _reset_peak() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


@contextlib.contextmanager
def item_peak() -> Iterator[dict]:
    """Measure one item: yields a dict filled on exit with ``peak_rss`` (bytes, the worker's
    resident-set peak during the item) and ``peak_above_start`` (bytes above the resident set
    at its start; None where the peak cannot be reset)."""
    out: dict = {"peak_rss": 0, "peak_above_start": None}
    start = _status_kb("VmRSS") if _reset_peak() else None
    try:
        yield out
    finally:
        end = _status_kb("VmHWM") if start is not None else None
        if start is not None and end is not None:
            out["peak_rss"] = end["VmHWM"] * 1024
            out["peak_above_start"] = max(0, (end["VmHWM"] - start["VmRSS"]) * 1024)
        else:
            out["peak_rss"] = _maxrss_bytes()


class PeakTally:
    """The largest figures over items (the parent keeps four numbers, not one per file)."""

    def __init__(self):
        self.peak_rss = 0
        self.peak_above_start: int | None = None
        self.largest_mask_bytes = 0
        self.above_start_of_largest: int | None = None

    def add(self, memory: dict | None, mask_bytes: int) -> None:
        if not memory:
            return
        self.peak_rss = max(self.peak_rss, int(memory.get("peak_rss") or 0))
        above = memory.get("peak_above_start")
        if above is not None:
            self.peak_above_start = max(self.peak_above_start or 0, int(above))
        if mask_bytes >= self.largest_mask_bytes:
            self.largest_mask_bytes = int(mask_bytes)
            self.above_start_of_largest = None if above is None else int(above)

    def to_json(self) -> dict:
        """The report's ``memory`` section (bytes)."""
        big = self.largest_mask_bytes
        ratio = (self.above_start_of_largest / big
                 if big and self.above_start_of_largest is not None else None)
        return {"peak_rss_bytes": self.peak_rss,
                "peak_above_start_bytes": self.peak_above_start,
                "largest_mask_bytes": big,
                "largest_mask_peak_above_start_bytes": self.above_start_of_largest,
                "largest_mask_peak_per_mask": ratio}

    def describe(self) -> str:
        return describe_memory(self.to_json())


def describe_memory(j: dict) -> str:
    """One printed line for a report's ``memory`` section."""
    mib = 1024 * 1024
    text = f"memory per worker: peak RSS {j['peak_rss_bytes'] / mib:.0f} MiB"
    if j["largest_mask_peak_per_mask"] is not None and j["largest_mask_bytes"] >= mib:
        # (below 1 MiB the allocator's noise dominates the ratio)
        text += (f"; the largest mask ({j['largest_mask_bytes'] / mib:.1f} MiB) took "
                 f"{j['largest_mask_peak_above_start_bytes'] / mib:.1f} MiB above the "
                 f"worker's start ({j['largest_mask_peak_per_mask']:.1f}x the mask)")
    return text
