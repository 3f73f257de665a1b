"""`segkit tune`'s result: :class:`TuneResult` (what was chosen and measured, its text
report) and ``tuning.png``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import atomic
from .settings import TUNED


@dataclass
class TuneResult:
    """What :func:`segkit.tune` chose and measured (also in ``out/tuned.json``).

    ``weights``, ``bias`` and ``crf`` are the setting written, the one whose held-out mIoU
    is ``metrics["holdout"]["tuned"]``; ``crf_name`` names its CRF candidate ("off",
    "convcrf", "seed" or "fitted"); ``metrics["crf_candidates"]`` holds every candidate's
    held-out scores.
    """
    out: Path
    weights: list[float]
    bias: list[float] | None
    crf: dict | None
    metrics: dict
    history: list
    crf_name: str = "off"
    crf_fit: dict | None = None
    refit: dict | None = None
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def __str__(self) -> str:
        m = self.metrics
        lines = [f"tune: {self.info.get('images', '?')} OOF images "
                 f"({self.info.get('holdout_images', '?')} held out) in {self.seconds:.1f} s "
                 f"-> {self.out / TUNED}",
                 "  weights: " + ", ".join(f"{w:.3f}" for w in self.weights),
                 "  bias:    " + ("none" if self.bias is None else
                                  ", ".join(f"{b:+.2f}" for b in self.bias)),
                 f"  crf:     {self.crf_name}" + ("" if self.crf is None else f" {self.crf}")]
        cands = m.get("crf_candidates") or {}
        if cands:
            lines.append("  held-out mIoU of the CRF candidates (tuned weights and bias): "
                         + ", ".join(f"{k} {fmt_miou(v)}" for k, v in cands.items())
                         + f" -> {self.crf_name}")
        lines.append("  held-out mIoU: " + ", ".join(f"{k} {fmt_miou(v)}"
                                                     for k, v in m["holdout"].items()))
        shown = {k: v for k, v in m["holdout"].items() if v is not None}
        if shown:
            lines.append("  held-out IoU per class: " + "".join(f"{k:>9s}" for k in shown))
            for name in next(iter(shown.values()))["iou"]:
                cells = [v["iou"][name] for v in shown.values()]
                lines.append(f"    {name[:22]:22s}" + "".join(
                    "      n/a" if x is None else f"{x:9.4f}" for x in cells))
        if self.refit is not None:
            lines.append(f"  refit on all OOF images (not written as the setting): mIoU "
                         f"{self.refit['oof_miou']:.4f} without CRF (equal "
                         f"{self.refit['oof_equal_miou']:.4f}); see tuned.json 'refit'")
        return "\n".join(lines)


def fmt_miou(v: dict | None) -> str:
    """'0.1234' or 'n/a'."""
    return "n/a" if v is None else f"{v['miou']:.4f}"


def _curve(title: str, points: list[tuple[float, tuple]], width: int, height: int):
    """A scatter of (value, colour) in order, min and max marked."""
    from PIL import Image, ImageDraw

    left, top, bottom = 50, 28, 30
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 8), title, fill=(0, 0, 0))
    values = [v for v, _ in points if v == v]
    if values:
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1e-6
        n = max(1, len(points) - 1)
        for i, (v, colour) in enumerate(points):
            if v != v:
                continue
            x = left + int((width - left - 10) * i / n)
            y = top + int((height - top - bottom) * (1 - (v - lo) / (hi - lo)))
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((4, top - 6), f"{hi:.4f}", fill=(0, 0, 0))
        draw.text((4, height - bottom - 6), f"{lo:.4f}", fill=(0, 0, 0))
        draw.text((left, height - bottom + 8), f"points: {len(points)}", fill=(0, 0, 0))
    return canvas


def plot(path: Path, history: list, metrics: dict, classes: list[str],
         losses: list[float] | None) -> None:
    """tuning.png: the search objective per candidate, the CRF fit's loss per step, the
    held-out mIoU of every CRF candidate, the per-class held-out IoU."""
    from PIL import Image

    from ..viz import bar_chart

    width = 640
    colours = {"search": (31, 119, 180), "refit": (255, 127, 14)}
    panels = [_curve("search-set mIoU per weight/bias candidate (blue: search, orange: refit "
                     "on all OOF)", [(h["miou"], colours.get(h["stage"], (0, 0, 0)))
                                     for h in history], width, 200)]
    if losses:
        panels.append(_curve("CRF fit: training loss per step (cross-entropy on crops)",
                             [(v, (44, 160, 44)) for v in losses], width, 160))
    cands = {k: v for k, v in (metrics.get("crf_candidates") or {}).items()}
    if cands:
        panels.append(bar_chart({"held-out mIoU": [np.nan if v is None else v["miou"]
                                                   for v in cands.values()]}, list(cands),
                                "held-out mIoU of the CRF candidates (tuned weights, bias)",
                                width=width))
    series = {k: [np.nan if v["iou"][n] is None else v["iou"][n] for n in classes]
              for k, v in metrics["holdout"].items() if v is not None}
    panels.append(bar_chart(series, classes, "held-out per-class IoU", width=width))
    out = Image.new("RGB", (width, sum(p.height for p in panels)), (255, 255, 255))
    y = 0
    for p in panels:
        out.paste(p, (0, y))
        y += p.height
    with atomic.atomic_path(path) as tmp:
        out.save(tmp, format="PNG")
