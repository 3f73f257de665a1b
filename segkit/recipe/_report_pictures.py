"""The pictures of the recipe's report page (PNG, drawn with PIL): class pixel shares,
training curves, per-class IoU bars (``segkit.viz.bar_chart``) and stage times. Each writer
saves atomically and returns the path; none reads report.json itself (report.py does)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from ..io.atomic import atomic_path
from ..palette import palette_for

#: Line colours for series that carry no class meaning (runs grouped by model and variant,
#: steps of the test table); the palette's generated colours follow when these run out.
SERIES_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14),
                  (148, 103, 189), (140, 86, 75), (227, 119, 194), (23, 190, 207)]


def series_colour(k: int) -> tuple[int, int, int]:
    """The k-th series colour (0-based): the fixed list, then the palette's generated ones."""
    if k < len(SERIES_COLOURS):
        return SERIES_COLOURS[k]
    return tuple(int(v) for v in palette_for(256)[16 + (k % 200)])


def _save(image, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def hbars(labels: Sequence[str], values: Sequence[float | None], texts: Sequence[str],
          title: str, path: Path, *, colours: Sequence[tuple[int, int, int]] | None = None,
          width: int = 640) -> Path:
    """Horizontal bars, one per label, lengths proportional to `values` (the longest spans the
    plot; values of None or NaN draw no bar), each followed by its text from `texts`."""
    from PIL import Image, ImageDraw

    left, top, bar_h, gap = 150, 28, 12, 6
    height = top + (bar_h + gap) * len(labels) + 12
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 8), title, fill=(0, 0, 0))
    finite = [float(v) for v in values if _finite(v)]
    top_value = max([v for v in finite if v > 0], default=1.0)
    span = width - left - 90
    for i, (label, v, text) in enumerate(zip(labels, values, texts)):
        y = top + i * (bar_h + gap)
        draw.text((8, y), str(label)[:22], fill=(0, 0, 0))
        length = int(span * max(0.0, float(v)) / top_value) if _finite(v) else 0
        colour = tuple(colours[i]) if colours is not None else series_colour(0)
        if length > 0:
            draw.rectangle([left, y, left + length, y + bar_h - 1], fill=colour,
                           outline=(90, 90, 90))
        draw.text((left + length + 5, y), text, fill=(0, 0, 0))
    return _save(canvas, path)


def class_shares(classes: Sequence[str], shares: Sequence[float], path: Path) -> Path:
    """The share of labelled pixels of each class, bars in the class colours (the palette the
    mask pictures use; black classes get a grey outline so they still show)."""
    pal = palette_for(max(len(classes), 1))
    colours = [tuple(int(c) for c in pal[i]) for i in range(len(classes))]
    texts = [f"{100 * s:.2f}%" if _finite(s) else "n/a" for s in shares]
    return hbars(classes, shares, texts, "share of labelled pixels per class", path,
                 colours=colours)


def stage_times(stages: Sequence[str], seconds: Sequence[float | None],
                states: Sequence[str], path: Path) -> Path:
    """Seconds per stage; stages that ran are blue, reused ones grey."""
    colours = [series_colour(0) if s == "ran" else (170, 170, 170) for s in states]
    texts = [(f"{v:.1f} s" if _finite(v) else "n/a") + ("" if st == "ran" else f" ({st})")
             for v, st in zip(seconds, states)]
    return hbars(stages, seconds, texts, "seconds per stage (grey: reused or skipped)", path,
                 colours=colours)


def iou_bars(series: dict[str, Sequence[float | None]], classes: Sequence[str], title: str,
             path: Path) -> Path:
    """Per-class IoU of one or several series (segkit.viz.bar_chart; None is drawn n/a)."""
    from ..viz import bar_chart

    values = {name: [float(v) if _finite(v) else float("nan") for v in vals]
              for name, vals in series.items()}
    colours = [series_colour(k) for k in range(len(values))]
    return _save(bar_chart(values, list(classes), title, colors=colours), path)


def curves(runs: dict[str, tuple[str, Sequence[Sequence[float]]]], path: Path, *,
           width: int = 720, height: int = 380) -> Path:
    """Validation mIoU against epoch, one line per run, one colour per group (runs given as
    name -> (group, [[epoch, miou], ...])); the y axis spans 0 to the best value seen."""
    from PIL import Image, ImageDraw

    groups = list(dict.fromkeys(g for g, _ in runs.values()))
    legend = 14 * ((len(groups) + 2) // 3)  # three legend entries a row
    left, right, top, bottom = 50, 20, 30, 40 + legend
    height += legend
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    points = [(float(e), float(v)) for _, c in runs.values() for e, v in c
              if _finite(e) and _finite(v)]
    xmax = max([e for e, _ in points], default=1.0) or 1.0
    xmin = min([0.0] + [e for e, _ in points])
    ymax = min(1.0, max(0.1, math.ceil(max([v for _, v in points], default=0.1) * 10) / 10))

    def x(e: float) -> float:
        return left + (width - left - right) * (e - xmin) / max(xmax - xmin, 1e-9)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - v / ymax)

    for k in range(6):
        t = ymax * k / 5
        draw.line([(left, y(t)), (width - right, y(t))], fill=(225, 225, 225))
        draw.text((8, y(t) - 6), f"{t:.2f}", fill=(0, 0, 0))
    ticks = sorted({e for e, _ in points})
    step = max(1, len(ticks) // 12)
    for e in ticks[::step]:
        draw.text((x(e) - 6, height - bottom + 6), f"{e:g}", fill=(0, 0, 0))
    draw.text((left, 8), "validation mIoU along training (one line per run)", fill=(0, 0, 0))
    draw.text((8, height - bottom + 6), "epoch", fill=(90, 90, 90))
    for _, (group, curve) in runs.items():
        colour = series_colour(groups.index(group))
        pts = [(x(float(e)), y(float(v))) for e, v in curve if _finite(e) and _finite(v)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for cx, cy in pts:
            draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=colour)
    for k, group in enumerate(groups):
        lx = left + 220 * (k % 3)
        ly = height - bottom + 22 + 14 * (k // 3)
        draw.rectangle([lx, ly, lx + 10, ly + 10], fill=series_colour(k))
        draw.text((lx + 14, ly - 1), str(group)[:32], fill=(0, 0, 0))
    return _save(canvas, path)
