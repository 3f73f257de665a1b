"""The report files of ``segkit.audit`` apart from the masks: ``audit.csv``, the picture of
each of the worst images (photo, annotation, prediction, issues side by side) and the
self-contained ``index.html`` that shows them with a sortable table of every image.
"""
from __future__ import annotations

import csv
import html
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..io import atomic
from ._stores import image_of

#: The columns of audit.csv and of the page's table, in order.
COLUMNS = ("stem", "quality", "issue_pixels", "issue_fraction", "mode_changes",
           "small_region_pixels", "outside_classes", "ignored", "pixels", "height", "width",
           "model_agreement")


def picture(path: Path, stem: str, mask, pred, flags, num_classes: int, images: str | None):
    """Photo (if any), annotation, prediction, issues over the photo (red): one panel PNG."""
    from ..palette import palette_for
    from ..viz import colorize, overlay, panel

    pal = palette_for(max(num_classes, 1)) if num_classes <= 256 else None
    ann = colorize(mask, pal)
    prd = colorize(pred, pal)
    photo = None
    if images is not None:
        try:  # a missing photo, or one of another size, leaves the masks alone in the panel
            photo = image_of(stem, images, mask.shape)
        except (FileNotFoundError, InputError):
            photo = None
    base = photo if photo is not None else ann
    red = np.zeros((256, 3), np.uint8)
    red[1] = (255, 0, 0)
    issues = overlay(base, flags.astype(np.uint8), alpha=0.7, palette=red)
    tiles = ([photo] if photo is not None else []) + [ann, prd, issues]
    titles = (["photo"] if photo is not None else []) + ["annotation", "prediction", "issues"]
    scale = max(1, 160 // max(mask.shape))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp:
        panel(tiles, titles, scale=scale).save(tmp, format="PNG")



def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_csv(path: Path, rows: list[dict]) -> None:
    """audit.csv: one row per image in the order of `rows`, the columns of COLUMNS."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([_fmt(r[k]) for k in COLUMNS])
    atomic.write_text(path, buf.getvalue())


_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var asc = th.dataset.order !== 'asc';
    table.querySelectorAll('th').forEach(function (h) { delete h.dataset.order; });
    th.dataset.order = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
.card { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
.card img { border: 1px solid #ccc; image-rendering: pixelated; }
.card p { margin: 0.2em 0; font-size: 0.85em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #eee; cursor: pointer; user-select: none; }
th[data-order=asc]::after { content: ' \\25B2'; } th[data-order=desc]::after { content: ' \\25BC'; }
td:first-child { text-align: left; }
"""


def write_html(path: Path, report: Any, classes: Sequence[str],
               worst: Sequence[str]) -> None:
    """A self-contained page: relative image links, inline style and script.

    `report` is the run's :class:`~segkit.jobs.audit.AuditReport` (its rows worst first);
    `worst` the stems whose pictures the page shows."""
    e = html.escape
    by_stem = {r["stem"]: r for r in report.rows}
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>segkit audit</title>",
             f"<style>{_STYLE}</style></head><body>",
             "<h1>segkit audit: label issues</h1>",
             f"<p>{report.images} images, {report.pixels} pixels; {report.issues} flagged "
             f"({report.issues / max(report.pixels, 1):.2%}); estimated issues "
             f"{report.estimated}. Thresholds: "
             + ", ".join(f"{e(str(n))} {t:.3f}" for n, t in zip(classes, report.thresholds))
             + "</p>", f"<h2>The {len(worst)} worst images</h2><div>"]
    for stem in worst:
        r = by_stem[stem]
        parts.append(f"<div class='card'><img src='pictures/{e(stem)}.png' alt='{e(stem)}'>"
                     f"<p><b>{e(stem)}</b> quality {r['quality']:.4f}, {r['issue_pixels']} "
                     f"issue pixels ({r['issue_fraction']:.2%}), {r['mode_changes']} mode "
                     f"changes</p><p><a href='issues/{e(stem)}.png'>issue mask</a></p></div>")
    parts.append("</div><h2>All images (click a column to sort)</h2>"
                 "<table class='sortable'><thead><tr>")
    parts += [f"<th>{e(c)}</th>" for c in COLUMNS]
    parts.append("</tr></thead><tbody>")
    for r in report.rows:
        cells = []
        for k in COLUMNS:
            v = r[k]
            cells.append(f"<td data-v='{e(_fmt(v))}'>{e(_fmt(v))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append(f"</tbody></table><script>{_SCRIPT}</script></body></html>")
    atomic.write_text(path, "\n".join(parts))
