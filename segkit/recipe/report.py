"""The recipe's report: ``DIR/report/index.html`` and ``index.md`` rendered from the dict of
``DIR/report.json`` (docs/formats.md, "report.json").

Every section is built once as a list of blocks (paragraphs, notes, tables, pictures;
_report_sections) and rendered twice, to HTML (plain, a small inline style, no script, every
string from the data escaped) and to Markdown (the same tables), so the two files cannot drift
apart. Every part of report.json is optional: a run stopped after ``folds`` renders, its later
sections saying "Not run yet.". The page's pictures are PNG files in ``report/pictures/``; the
stages' own pictures and the audit page are linked relative to the recipe folder (the report
folder's parent), and a missing one is named in the text instead of a broken link.
"""
from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import quote

from ..errors import InputTypeError
from ..io import atomic
from . import _report_pictures as pics
from ._report_sections import (SECTIONS, UNLEARNED_IOU, Classes, Section, audit_section,
                               dataset_section, duration, entries, finite, fmt, fmt_int, models_section,
                               not_run, oof_section, part, pct, test_sections, tune_section,
                               unlearned_classes)

__all__ = ["write_report", "unlearned_classes", "SECTIONS", "UNLEARNED_IOU"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1em; margin-top: 1.2em; }
nav a { margin-right: 0.8em; font-size: 0.9em; white-space: nowrap; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.55em; text-align: left; }
th { background: #eee; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { background: #fff4d6; border-left: 4px solid #e0a800; padding: 0.5em 0.8em; }
.sub { color: #555; }
"""


def _numeric(text: str) -> bool:
    t = text.replace(",", "").replace("%", "").replace("+", "").strip()
    try:
        float(t)
        return True
    except ValueError:
        return t == "n/a"


def _numeric_columns(headers: list, rows: list) -> list[bool]:
    """Per column: whether every cell is a number (or n/a); those are right-aligned."""
    return [bool(rows) and all(_numeric(str(row[i])) for row in rows)
            for i in range(len(headers))]


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _html_block(b: tuple) -> str:
    kind = b[0]
    if kind == "p":
        return f"<p>{_e(b[1])}</p>"
    if kind == "note":
        return f"<p class='note'>{_e(b[1])}</p>"
    if kind == "h3":
        return f"<h3>{_e(b[1])}</h3>"
    if kind == "img":
        return f"<p><img src='{_e(b[1])}' alt='{_e(b[2])}'></p>"
    if kind == "link":
        return f"<p><a href='{_e(b[1])}'>{_e(b[2])}</a></p>"
    if kind == "table":
        head = "".join(f"<th>{_e(h)}</th>" for h in b[1])
        numeric = _numeric_columns(b[1], b[2])
        body = "".join("<tr>" + "".join(
            f"<td class='n'>{_e(c)}</td>" if n else f"<td>{_e(c)}</td>"
            for c, n in zip(row, numeric)) + "</tr>\n" for row in b[2])
        return (f"<div class='scroll'><table><thead><tr>{head}</tr></thead>"
                f"<tbody>\n{body}</tbody></table></div>")
    raise ValueError(f"unknown block kind {kind!r}")  # a bug in _report_sections, not input


def _render_html(title: str, subtitle: str, sections: Iterable[Section]) -> str:
    """The page: plain HTML, an inline style, no script; every string escaped."""
    sections = list(sections)
    nav = " ".join(f"<a href='#{s.anchor}'>{_e(s.title)}</a>" for s in sections)
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{_e(title)}</h1>", f"<p class='sub'>{_e(subtitle)}</p>", f"<nav>{nav}</nav>"]
    for s in sections:
        parts.append(f"<section id='{s.anchor}'><h2>{_e(s.title)}</h2>")
        parts += [_html_block(b) for b in s.blocks]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*[]|#"})
#: An underscore that could start or end emphasis (not one inside a word, as in run names).
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def _m(v: Any) -> str:
    """Markdown text: HTML's special characters as entities, Markdown's escaped, one line."""
    text = html.escape(" ".join(str(v).split()), quote=False).translate(_MD_SPECIAL)
    return _MD_UNDERSCORE.sub(r"\\_", text)


def _md_block(b: tuple) -> str:
    kind = b[0]
    if kind == "p":
        return _m(b[1])
    if kind == "note":
        return "> **" + _m(b[1]) + "**"
    if kind == "h3":
        return "### " + _m(b[1])
    if kind == "img":
        return f"![{_m(b[2])}]({b[1]})"
    if kind == "link":
        return f"[{_m(b[2])}]({b[1]})"
    if kind == "table":
        numeric = _numeric_columns(b[1], b[2])
        lines = ["| " + " | ".join(_m(h) for h in b[1]) + " |",
                 "|" + "".join(" ---: |" if n else " --- |" for n in numeric)]
        lines += ["| " + " | ".join(_m(c) for c in row) + " |" for row in b[2]]
        return "\n".join(lines)
    raise ValueError(f"unknown block kind {kind!r}")


def _render_markdown(title: str, subtitle: str, sections: Iterable[Section]) -> str:
    """index.md: the same sections and tables as the page, picture links included."""
    parts = [f"# {_m(title)}", _m(subtitle)]
    for s in sections:
        parts.append(f"## {_m(s.title)}")
        parts += [_md_block(b) for b in s.blocks]
    return "\n\n".join(parts) + "\n"


def _href(folder: Path) -> Callable[[str], str | None]:
    """path relative to the recipe folder (folder's parent) -> URL from folder, or None if the
    file does not exist."""
    def rel(path: str) -> str | None:
        target = folder.parent / path
        if not target.is_file():
            return None
        return quote(Path(os.path.relpath(target, folder)).as_posix(), safe="/")
    return rel


def _stages(r: dict) -> Section | None:
    stages = part(r, "stages")
    if stages is None:
        return None
    rows = [[name, str(s.get("state", "")), fmt(s.get("seconds"), 1),
             fmt(s.get("peak_rss_mb"), 0), str(s.get("note") or "")]
            for name, s in entries(stages, "stages").items()]
    return Section("Stages", [("p", "The stages in run order: ran this time, reused (their "
                                    "inputs and settings had not changed) or skipped."),
                              ("table", ["stage", "state", "seconds", "peak memory (MB)",
                                         "note"], rows)])


def _resample(r: dict) -> Section | None:
    rs = part(r, "resample")
    if rs is None:
        return None
    ii = rs.get("ignore_index")
    return Section("Mask resampling", [("p", (
        f"The mode filter changed {fmt_int(rs.get('changed_pixels'))} pixels "
        f"({pct(rs.get('changed_share'))} of the pixels); "
        + (f"pixels of the ignore value {ii} neither voted nor changed." if ii is not None
           else "no ignore value: every pixel voted.")))])


def _folds(r: dict) -> Section:
    fo = part(r, "folds")
    if fo is None:
        return not_run(r, "Folds", "folds")
    sizes = fo.get("val_sizes") or []
    return Section("Folds", [("p", f"{fo.get('k', len(sizes))} folds; the validation images of "
                                   "each fold (its model trains on the others):"),
                             ("table", ["fold", "validation images"],
                              [[f"fold{i}", fmt_int(n)] for i, n in enumerate(sizes)])])


def _submission(r: dict) -> Section:
    sub = part(r, "submission")
    if sub is None:
        return not_run(r, "Submission", "submission")
    return Section("Submission", [("p", f"{sub.get('path', 'n/a')}: "
                                        f"{fmt_int(sub.get('rows'))} rows, "
                                        f"{fmt_int(sub.get('size'))} bytes.")])


def _time(r: dict, out: Path, made: dict) -> Section | None:
    stages = part(r, "stages")
    if not stages:
        return None
    secs = [s.get("seconds") for s in stages.values()]
    ran = sum(float(v) for v, s in zip(secs, stages.values())
              if finite(v) and s.get("state") == "ran")
    total = sum(float(v) for v in secs if finite(v))
    made["stage_times"] = pics.stage_times(list(stages), secs,
                                           [str(s.get("state", "")) for s in stages.values()],
                                           out / "stage_times.png")
    return Section("Time", [("p", f"The stages that ran took {duration(ran)} in all; the "
                                  f"seconds recorded for every stage add up to "
                                  f"{duration(total)}."),
                            ("img", "pictures/stage_times.png", "bar chart: seconds per stage")])


def _pictures(report: dict, rel: Callable[[str], str | None]) -> Section | None:
    extra = part(report, "pictures")
    if extra is None:
        return None
    sec = Section("Stage pictures")
    for name, path in extra.items():
        href = rel(str(path))
        sec.blocks += ([("h3", name), ("img", href, f"{name} ({path})")] if href else
                       [("p", f"{name}: the picture {path} is missing.")])
    return sec


def _settings(report: dict) -> Section | None:
    rec = part(report, "recipe") or {}
    settings = rec.get("settings")
    if not isinstance(settings, dict) or not settings:
        return None
    flat: list[list[str]] = []

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict) and obj:
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat.append([prefix, json.dumps(obj, ensure_ascii=False, default=str)])

    walk("", settings)
    where = os.path.join(str(rec.get("dir", "")), str(rec.get("file", "recipe.toml")))
    return Section("Settings", [("p", f"The recipe's settings ({where}):"),
                                ("table", ["setting", "value"], flat)])


def _title(report: dict) -> tuple[str, str]:
    rec = part(report, "recipe") or {}
    settings = rec.get("settings") if isinstance(rec.get("settings"), dict) else {}
    name = settings.get("name") or Path(str(rec.get("dir") or "")).name or "dataset"
    preset = rec.get("preset") or "unknown"
    sub = f"segkit recipe, {preset} preset"
    if rec.get("dir"):
        sub += "; recipe file " + os.path.join(str(rec["dir"]), str(rec.get("file", "recipe.toml")))
    return f"{name}: segkit recipe report ({preset} preset)", sub + "."


def write_report(folder: str | os.PathLike, report: dict, *,
                 log: Callable[[str], Any] | None = None) -> dict[str, Path]:
    """Render report.json's dict into ``folder/index.html`` and ``folder/index.md``.

    Parameters
    ----------
    folder : path
        The report folder, normally ``DIR/report`` of a recipe folder ``DIR``: the paths in
        `report` (``pictures``, ``audit.page``) are relative to its parent. Created if needed.
    report : dict
        The contents of ``DIR/report.json`` (docs/formats.md, "report.json"). Every part is
        optional; a per-class list whose length differs from ``dataset.classes`` is refused.
    log : callable, optional
        Called with one line naming the page once it is written.

    Returns
    -------
    dict of str to Path
        ``"html"`` and ``"md"``: the two pages; and one entry per picture drawn into
        ``folder/pictures`` (``"class_shares"``, ``"curves"``, ``"oof_iou"``, ``"test_iou"``,
        ``"stage_times"``, where their data exist).

    Raises
    ------
    InputTypeError
        `report` is not a dict.
    InputError
        A part of `report` has the wrong type, or a per-class list the wrong length (the
        message names the key).

    Notes
    -----
    Every file is written atomically (a temporary name, then a rename); the page is plain
    HTML with an inline style and no script, and opens from the disk with no server.
    """
    if not isinstance(report, dict):
        raise InputTypeError(f"write_report: report must be a dict (report.json's contents), "
                             f"got {type(report).__name__}")
    folder = Path(folder)
    rel = _href(folder)
    pictures, cls, made = folder / "pictures", Classes(report), {}
    pictures.mkdir(parents=True, exist_ok=True)
    sections = [dataset_section(report, cls, pictures, made), _stages(report),
                _resample(report), _folds(report), models_section(report, pictures, made),
                oof_section(report, cls, pictures, made), tune_section(report, cls),
                audit_section(report, cls, rel), *test_sections(report, cls, pictures, made),
                _submission(report), _time(report, pictures, made), _pictures(report, rel),
                _settings(report)]
    sections = [s for s in sections if s is not None]
    title, subtitle = _title(report)
    paths = {"html": folder / "index.html", "md": folder / "index.md"}
    # bytes, so the files are UTF-8 whatever the locale's encoding
    atomic.write_bytes(paths["md"], _render_markdown(title, subtitle, sections).encode("utf-8"))
    atomic.write_bytes(paths["html"], _render_html(title, subtitle, sections).encode("utf-8"))
    if log is not None:
        log(f"report: {paths['html']}")
    return {**paths, **made}
