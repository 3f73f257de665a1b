"""The sections of the recipe's report page (report.py renders them): each builder reads one
part of report.json's dict, checks what it uses (a per-class list must have one value per
class), draws its pictures (_report_pictures) and returns a :class:`Section` of blocks, or a
one-line "Not run yet." section, or None where the part is optional and absent. report.py
puts them in order with the sections that draw no class data."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import InputError, InputTypeError
from . import _report_pictures as pics

#: Out-of-fold IoU below which a class counts as not learned.
UNLEARNED_IOU = 0.05

#: The most steps the test IoU picture shows (those of highest mIoU; the table has them all).
MAX_SERIES = 6

#: The section headings, in page order (a section without data is left out or says so).
SECTIONS = ("Dataset", "Stages", "Mask resampling", "Folds", "Models trained",
            "Out-of-fold IoU", "Tuning", "Label audit", "Test set", "Ablation: mask variants",
            "Submission", "Time", "Stage pictures", "Settings")

Block = tuple


@dataclass
class Section:
    """One section of the page: its heading and blocks (``("p", text)``, ``("note", text)``,
    ``("h3", text)``, ``("table", headers, rows)``, ``("img", src, alt)``,
    ``("link", href, text)``)."""
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


def unlearned_classes(iou: Sequence[float | None], classes: Sequence[str],
                      threshold: float = UNLEARNED_IOU) -> list[str]:
    """Classes the models did not learn.

    Parameters
    ----------
    iou : sequence of float or None
        Out-of-fold IoU per class, in class order; None (or NaN) when the class was neither
        annotated nor predicted on the validation folds.
    classes : sequence of str
        Class names, as many as `iou`.
    threshold : float
        A class whose IoU is below this (0.05 by default) is not learned.

    Returns
    -------
    list of str
        The names of the classes whose IoU is below `threshold` or missing, in class order.

    Examples
    --------
    >>> unlearned_classes([0.9, 0.01, None, 0.05], ["bg", "cat", "dog", "cow"])
    ['cat', 'dog']
    """
    if isinstance(iou, (str, bytes)) or not hasattr(iou, "__len__"):
        raise InputTypeError(f"unlearned_classes: iou must be a list of floats, got {iou!r}")
    if len(iou) != len(classes):
        raise InputError(f"unlearned_classes: iou has {len(iou)} values for {len(classes)} "
                         f"classes {list(classes)!r}")
    if not finite(threshold) or not 0 <= threshold <= 1:
        raise InputError(f"unlearned_classes: threshold must be within [0, 1], got {threshold!r}")
    return [str(c) for c, v in zip(classes, iou) if not finite(v) or float(v) < threshold]


# ---- formatting ---------------------------------------------------------------------------
def finite(v: Any) -> bool:
    """Whether v is a finite int or float (not a bool, None or NaN)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt(v: Any, digits: int = 3, sign: bool = False) -> str:
    if not finite(v):
        return "n/a"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if finite(v) else "n/a"


def fmt_int(v: Any) -> str:
    return f"{int(v):,}" if finite(v) else "n/a"


def duration(s: float) -> str:
    """Seconds as "12.3 s", "4 min 05 s" or "1 h 02 min"."""
    if s < 120:
        return f"{s:.1f} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min" if s >= 3600 else \
        f"{int(s // 60)} min {int(s % 60):02d} s"


def mean_sd(vals: list[float]) -> tuple[float | None, float | None]:
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return m, sd


# ---- reading the dict ---------------------------------------------------------------------
def part(report: dict, key: str) -> dict | None:
    """report[key] if it is a non-empty object, None if absent or empty; else InputError."""
    value = report.get(key)
    if value is not None and not isinstance(value, dict):
        raise InputError(f"report.json: '{key}' must be an object, got {type(value).__name__} "
                         f"{value!r:.60}")
    return value or None


def entries(objects: dict, where: str) -> dict[str, dict]:
    """`objects` (name -> object, e.g. the runs of ``models``), each checked to be an object."""
    for name, value in objects.items():
        if not isinstance(value, dict):
            raise InputError(f"report.json: {where}.{name} must be an object, got "
                             f"{value!r:.60}")
    return objects


class Classes:
    """Class names and the per-class list checks (lengths must match the class list)."""

    def __init__(self, report: dict):
        ds = part(report, "dataset") or {}
        self.names = [str(c) for c in ds.get("classes") or []]

    def check(self, values: Any, where: str) -> list:
        if not isinstance(values, list):
            raise InputError(f"report.json: {where} must be a list, got {values!r:.60}")
        if not self.names:
            return values
        if len(values) != len(self.names):
            raise InputError(f"report.json: {where} has {len(values)} values for "
                             f"{len(self.names)} classes")
        return values

    def of(self, n: int) -> list[str]:
        return self.names if self.names else [f"class {i}" for i in range(n)]


def not_run(report: dict, title: str, stage: str, note: str = "Not run yet.") -> Section:
    st = (part(report, "stages") or {}).get(stage)
    if isinstance(st, dict) and st.get("state") == "skipped":
        note = "Skipped" + (f": {st['note']}" if st.get("note") else ".")
    return Section(title, [("p", note)])


# ---- the sections -------------------------------------------------------------------------
def dataset_section(r: dict, cls: Classes, out: Path, made: dict) -> Section | None:
    ds = part(r, "dataset")
    if ds is None:
        return None
    source = {"masks": "a folder of PNG masks", "coco": "a COCO file"}.get(ds.get("source"),
                                                                        ds.get("source"))
    size = ds.get("image_size")
    facts = [f"{fmt_int(ds.get('images'))} training images" + (f" ({source})" if source else ""),
             f"{fmt_int(ds.get('test_images'))} test images "
             + ("with masks" if ds.get("test_masks") else "without masks"),
             f"{len(cls.names)} classes",
             "ignore value " + (str(ds["ignore_index"]) if ds.get("ignore_index") is not None
                                else "none")]
    if isinstance(size, list) and len(size) == 2:
        facts.append(f"typical image size {size[0]} x {size[1]} (height x width)")
    if ds.get("ignored_pixels") is not None:
        facts.append(f"{fmt_int(ds['ignored_pixels'])} ignored pixels")
    sec = Section("Dataset", [("p", "; ".join(facts) + ".")])
    counts = ds.get("class_pixels")
    if counts is not None:
        counts = cls.check(counts, "dataset.class_pixels")
        total = sum(int(c) for c in counts if finite(c))
        shares = [int(c) / total if total and finite(c) else None for c in counts]
        names = cls.of(len(counts))
        rows = [[str(i), n, fmt_int(c), pct(s)] for i, (n, c, s) in enumerate(zip(names, counts,
                                                                                 shares))]
        sec.blocks.append(("table", ["value", "class", "pixels", "share of labelled"], rows))
        made["class_shares"] = pics.class_shares(names, shares, out / "class_shares.png")
        sec.blocks.append(("img", "pictures/class_shares.png",
                           "bar chart: share of labelled pixels per class"))
    return sec


def models_section(r: dict, out: Path, made: dict) -> Section:
    models = part(r, "models")
    if models is None:
        return not_run(r, "Models trained", "train")
    rows, groups, runs = [], {}, {}
    for name, m in entries(models, "models").items():
        group = f"{m.get('model', '?')} / {m.get('variant', '?')}"
        rows.append([name, str(m.get("model", "")), str(m.get("variant", "")),
                     str(m.get("fold", "")), str(m.get("seed", "")), fmt(m.get("val_mIoU")),
                     fmt(m.get("seconds"), 1)])
        if finite(m.get("val_mIoU")):
            groups.setdefault(group, []).append(float(m["val_mIoU"]))
        curve = m.get("curve") or []
        if not isinstance(curve, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2
                                                  for p in curve):
            raise InputError(f"report.json: models.{name}.curve must be a list of [epoch, "
                             f"mIoU] pairs, got {curve!r:.60}")
        if curve:
            runs[name] = (group, curve)
    sec = Section("Models trained", [("table", ["run", "model", "variant", "fold", "seed",
                                                "validation mIoU", "seconds"], rows)])
    if groups:
        summary = []
        for g, vals in groups.items():
            mean, sd = mean_sd(vals)
            summary.append([g, str(len(vals)), fmt(mean), fmt(sd), fmt(min(vals)), fmt(max(vals))])
        sec.blocks += [("p", "Per model and mask variant, over folds and seeds:"),
                       ("table", ["model / variant", "runs", "mean validation mIoU", "sd",
                                  "min", "max"], summary)]
    if runs:
        made["curves"] = pics.curves(runs, out / "curves.png")
        sec.blocks.append(("img", "pictures/curves.png", "line chart: validation mIoU against "
                           "epoch for each training run, coloured by model and mask variant"))
    return sec


def oof_section(r: dict, cls: Classes, out: Path, made: dict) -> Section:
    oof = part(r, "oof")
    if oof is None:
        return not_run(r, "Out-of-fold IoU", "oof")
    iou = cls.check(oof.get("iou") or [], "oof.iou")
    names = cls.of(len(iou))
    sec = Section("Out-of-fold IoU", [("p", f"Out-of-fold mIoU {fmt(oof.get('miou'))}: each "
                                            "image predicted by the models that did not train "
                                            "on it (the ensemble members).")])
    if iou:
        rows = [[n, fmt(v), "yes" if finite(v) and v >= UNLEARNED_IOU else "no"]
                for n, v in zip(names, iou)]
        sec.blocks.append(("table", ["class", "IoU", "learned (IoU >= 0.05)"], rows))
        made["oof_iou"] = pics.iou_bars({"out-of-fold": iou}, names, "out-of-fold IoU per class",
                                        out / "oof_iou.png")
        sec.blocks.append(("img", "pictures/oof_iou.png", "bar chart: out-of-fold IoU per class"))
    return sec


def tune_section(r: dict, cls: Classes) -> Section:
    tu = part(r, "tune")
    if tu is None:
        return not_run(r, "Tuning", "tune")
    table = list(entries(dict(enumerate(tu.get("table") or [])), "tune.table").values())
    rows = [[str(t.get("setting", "")), fmt(t.get("holdout_miou")), fmt(t.get("test_miou"))]
            for t in table]
    sec = Section("Tuning", [("p", "Ensemble settings scored on held-out out-of-fold images "
                                   "(the test column only where test masks exist):"),
                             ("table", ["setting", "held-out mIoU", "test mIoU"], rows)])
    weights, members = tu.get("weights") or [], tu.get("models")
    chosen = [f"CRF {tu.get('crf_name', 'n/a')}", "soft-vote weights " + (
        ", ".join(f"{m} {fmt(w)}" for m, w in zip(members, weights)) if members else
        ", ".join(fmt(w) for w in weights) + " (one per ensemble member)")]
    if finite(tu.get("seconds")):
        chosen.append(f"searched in {duration(tu['seconds'])}")
    sec.blocks.append(("p", "Chosen setting: " + "; ".join(chosen) + "."))
    bias = tu.get("bias")
    if bias:
        bias = cls.check(bias, "tune.bias")
        sec.blocks.append(("table", ["class", "bias (added to log-probability)"],
                           [[n, fmt(b, 3, sign=True)] for n, b in zip(cls.of(len(bias)), bias)]))
    return sec


def audit_section(r: dict, cls: Classes, rel: Callable[[str], str | None]) -> Section:
    au = part(r, "audit")
    if au is None:
        return not_run(r, "Label audit", "audit")
    sec = Section("Label audit", [("p", f"{fmt_int(au.get('images'))} images audited; "
                                        f"{fmt_int(au.get('flagged'))} pixels flagged as possible "
                                        f"label issues ({pct(au.get('flagged_share'))} of the "
                                        "audited pixels).")])
    oof = (part(r, "oof") or {}).get("iou")
    # from the out-of-fold IoU where the report has it (the runner's list says the same), else
    # the runner's list; an empty list without IoU to back it says nothing
    unlearned = (unlearned_classes(cls.check(oof, "oof.iou"), cls.of(len(oof))) if oof else
                 au.get("unlearned_classes") or None)
    by_class = au.get("flagged_by_class")
    share_in = None
    if by_class is not None:
        by_class = cls.check(by_class, "audit.flagged_by_class")
        names = cls.of(len(by_class))
        total = sum(int(v) for v in by_class if finite(v))
        rows = [[n, fmt_int(v), pct(int(v) / total if total and finite(v) else None),
                 fmt(oof[i]) if oof and i < len(oof) else "n/a",
                 "no" if unlearned is not None and n in unlearned else
                 ("yes" if unlearned is not None else "n/a")]
                for i, (n, v) in enumerate(zip(names, by_class))]
        sec.blocks.append(("table", ["class", "flagged pixels", "share of flags",
                                     "out-of-fold IoU", "learned"], rows))
        if unlearned is not None and total:
            share_in = sum(int(v) for n, v in zip(names, by_class)
                           if n in unlearned and finite(v)) / total
    sec.blocks.append(("h3", "Classes the models did not learn"))
    if unlearned is None:
        sec.blocks.append(("p", "Unknown: no out-of-fold IoU to tell which classes the models "
                                "learned."))
    elif unlearned:
        share = f"{pct(share_in)} of the flags" if share_in is not None else "Their flags"
        sec.blocks.append(("note", (
            f"The models did not learn {len(unlearned)} "
            f"{'class' if len(unlearned) == 1 else 'classes'}: {', '.join(unlearned)} "
            f"(out-of-fold IoU below {UNLEARNED_IOU}, or none at all). {share} fall in "
            f"{'this class' if len(unlearned) == 1 else 'these classes'}: there the flags "
            "measure the models, not the annotations. Read them as classes to learn better "
            "(more data, more epochs, a larger model), not as label errors.")))
    else:
        sec.blocks.append(("p", f"None: every class reached out-of-fold IoU {UNLEARNED_IOU} or "
                                "more, so the flags point at pixels where the annotation and "
                                "the learned models disagree."))
    if au.get("worst"):
        sec.blocks.append(("p", "Worst images: " + ", ".join(str(s) for s in au["worst"])))
    page = au.get("page")
    if page:
        href = rel(page)
        sec.blocks.append(("link", href, "the audit's own page (every image, pictures)")
                          if href else ("p", f"The audit page {page} is missing."))
    return sec


def test_sections(r: dict, cls: Classes, out: Path, made: dict) -> list[Section]:
    te = part(r, "test")
    if te is None:
        ds = part(r, "dataset") or {}
        if ds and not ds.get("test_masks"):
            return [Section("Test set", [("p", "No test masks: the test split is not scored.")])]
        return [not_run(r, "Test set", "evaluate")]
    sec = Section("Test set", [])
    steps = entries(te.get("steps") or {}, "test.steps")
    if steps:
        sec.blocks += [("p", "Test mIoU of each single model and each ensemble step; the "
                             "bootstrap sd resamples the test images."),
                       ("table", ["step", "mIoU", "bootstrap sd", "pixel accuracy"],
                        [[n, fmt(s.get("miou")), fmt(s.get("boot_sd")), fmt(s.get("pixel_acc"))]
                         for n, s in steps.items()])]
        ious = {n: cls.check(s.get("iou") or [], f"test.steps.{n}.iou") for n, s in steps.items()}
        n_cls = max(len(v) for v in ious.values())
        if n_cls:
            names = cls.of(n_cls)
            rows = [[c] + [fmt(v[i]) if i < len(v) else "n/a" for v in ious.values()]
                    for i, c in enumerate(names)]
            sec.blocks += [("h3", "Per-class IoU"), ("table", ["class"] + list(steps), rows)]
            best = sorted(steps, key=lambda n: -steps[n]["miou"] if finite(steps[n].get("miou"))
                          else 0.0)[:MAX_SERIES]  # a picture of 14 bars a class reads badly
            made["test_iou"] = pics.iou_bars({n: ious[n] for n in steps if n in best}, names,
                                             "test IoU per class and step", out / "test_iou.png")
            sec.blocks.append(("img", "pictures/test_iou.png", "bar chart: test IoU per class "
                               + ("for each step" if len(best) == len(steps) else
                                  f"for the {len(best)} steps of highest mIoU")))
    ablation = te.get("ablation") or {}
    sections = [sec]
    if ablation:
        rows, means = [], {}
        for variant, seeds in ablation.items():
            seeds = entries(seeds, f"test.ablation.{variant}")
            vals = [float(s["miou"]) for s in seeds.values() if finite(s.get("miou"))]
            mean, sd = mean_sd(vals)
            means[variant] = mean
            rows.append([variant, str(len(seeds)),
                         ", ".join(f"seed {k}: {fmt(s.get('miou'))}" for k, s in seeds.items()),
                         fmt(mean), fmt(sd),
                         f"{fmt(min(vals))} to {fmt(max(vals))}" if vals else "n/a"])
        sec.blocks += [("h3", "Spread over seeds"),
                       ("p", "Test mIoU of each mask variant's models per training seed; sd is "
                             "the sample standard deviation over the seeds."),
                       ("table", ["variant", "seeds", "test mIoU per seed", "mean", "sd",
                                  "range"], rows)]
        if len(ablation) > 1:
            sections.append(_ablation(ablation, means, rows, cls))
    if not sec.blocks:
        sec.blocks.append(("p", "Not run yet."))
    return sections


def _ablation(ablation: dict, means: dict, rows: list, cls: Classes) -> Section:
    base = means.get("original")
    diff = [fmt(m - base, 3, sign=True) if finite(m) and finite(base) else "n/a"
            for m in means.values()]
    sec = Section("Ablation: mask variants", [
        ("p", "The same models trained on each mask variant, scored on the test masks; the "
              "difference is the variant's mean minus the mean on the original masks."
              + ("" if base is not None else " No 'original' variant was trained: no "
                                                 "difference to show.")),
        ("table", ["variant", "seeds", "mean test mIoU", "sd", "range", "difference to original"],
         [[row[0], row[1], row[3], row[4], row[5], d] for row, d in zip(rows, diff)])])
    per_class = {}
    for variant, seeds in ablation.items():
        lists = [cls.check(s["iou"], f"test.ablation.{variant}.{k}.iou")
                 for k, s in seeds.items() if s.get("iou")]
        if lists:
            per_class[variant] = [mean_sd([float(x[i]) for x in lists if finite(x[i])])[0]
                                  for i in range(min(len(x) for x in lists))]
    if per_class:
        n = min(len(v) for v in per_class.values())
        orig = per_class.get("original")
        others = [v for v in per_class if v != "original"] if orig else []
        rows = [[c] + [fmt(v[i]) for v in per_class.values()]
                + [fmt(per_class[v][i] - orig[i], 3, sign=True)
                   if finite(per_class[v][i]) and finite(orig[i]) else "n/a" for v in others]
                for i, c in enumerate(cls.of(n)[:n])]
        sec.blocks.append(("table", ["class"] + [f"{v} (mean IoU)" for v in per_class]
                           + [f"{v} - original" for v in others], rows))
    return sec
