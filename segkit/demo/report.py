"""The demo's index (demo_out/index.md) and its training-curve picture."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io.atomic import write_text
from ..palette import TRASH_CLASSES
from .presets import VARIANT_MASKS

COLOURS = {"original": (214, 39, 40), "resampled": (31, 119, 180), "audited": (44, 160, 44)}

#: The index's section headings, in order (tests/test_demo.py checks that each is there).
SECTIONS = ("## Data and masks", "## Mode resampling", "## What was trained on what",
            "## The recipe's ablation: original vs resampled masks", "## Step table",
            "## Tuning on out-of-fold predictions", "## Label audit", "## Time", "## Files",
            "## The CRF layer, trained end to end")


def curve_picture(curves: dict[str, list[list[tuple[int, float]]]], path: Path,
                  width: int = 640, height: int = 360) -> None:
    """mIoU (clean truth, validation folds) against epoch: per variant the mean over its runs
    (line) and their range (band)."""
    from PIL import Image, ImageDraw

    left, right, top, bottom = 50, 20, 30, 50
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas, "RGBA")
    epochs = sorted({e for runs in curves.values() for run in runs for e, _ in run}) or [1]
    xmax = max(epochs)
    x = lambda e: left + (width - left - right) * e / xmax  # noqa: E731
    y = lambda v: top + (height - top - bottom) * (1 - v)  # noqa: E731
    for t in np.linspace(0, 1, 6):
        draw.line([(left, y(t)), (width - right, y(t))], fill=(225, 225, 225))
        draw.text((8, y(t) - 6), f"{t:.1f}", fill=(0, 0, 0))
    for e in epochs:
        draw.text((x(e) - 6, height - bottom + 6), str(e), fill=(0, 0, 0))
    draw.text((left, 8), "validation mIoU against the clean truth, along training",
              fill=(0, 0, 0))
    draw.text((width // 2 - 20, height - 20), "epoch", fill=(0, 0, 0))
    for k, (variant, runs) in enumerate(curves.items()):
        col = COLOURS.get(variant, (100, 100, 100))
        table: dict[int, list[float]] = {}
        for run in runs:
            for e, v in run:
                table.setdefault(e, []).append(v)
        es = sorted(table)
        lo = [(x(e), y(min(table[e]))) for e in es]
        hi = [(x(e), y(max(table[e]))) for e in es]
        if len(es) > 1:
            draw.polygon(lo + hi[::-1], fill=col + (50,))
            draw.line([(x(e), y(float(np.mean(table[e])))) for e in es], fill=col, width=2)
        for e in es:
            cx, cy = x(e), y(float(np.mean(table[e])))
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=col)
        ly = height - bottom + 22
        draw.rectangle([left + 170 * k, ly, left + 170 * k + 10, ly + 10], fill=col)
        draw.text((left + 170 * k + 14, ly - 1), f"trained on {variant} masks", fill=(0, 0, 0))
    canvas.save(path)


def _f(v, digits=3, sign=False) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def write_index(demo) -> Path:
    L: list[str] = []
    L += _data_sections(demo)
    L += _ablation_sections(demo)
    L += _step_section(demo)
    L += _tune_section(demo)
    L += _audit_section(demo)
    L += crf_layer_section(demo)
    L += _time_section(demo)
    L += _files_section(demo)
    path = demo.path("index.md")
    write_text(path, "\n".join(L))
    return path


def _data_sections(demo) -> list[str]:
    """The title, the data, mode resampling and what was trained on what."""
    st, p = demo.results["stages"], demo.p
    rs = st["resample"]
    seeds = [str(s) for s in range(p.seeds)]
    L: list[str] = []
    L += ["# segkit demo", "",
          f"Generated data (seed {demo.seed}), preset `{demo.preset_name}`; every number below "
          "was measured in this run (`demo_report.json` has them all).", ""]
    share = st["masks"]["class_share"]
    L += [SECTIONS[0], "",
          f"{st['data']['train']} training images of {p.size}x{p.size} px, {st['data']['test']} "
          "held-out test images with their truth. Each class has its own colour and texture; "
          "the annotations trace the objects with a wobbly hand (points every 2 px moved by "
          "about 1 px), and small objects are sometimes not annotated at all; the clean truth "
          "is kept aside for evaluation. Clean-truth pixel shares: background "
          f"{100 * share[0]:.0f}%, classes {100 * min(share[1:]):.1f}-{100 * max(share[1:]):.1f}%.",
          "", "![overlays](overlays.png)", ""]
    L += [SECTIONS[1], "",
          "Every backend agrees with the NumPy reference ("
          + ", ".join(f"{k} {v:,.0f} Mpix/s" for k, v in rs["rates_mpix_s"].items())
          + " on 512x512 masks). Annotation pixels that disagree with the clean truth: "
          f"{rs['wrong_before']} ({100 * rs['wrong_before'] / rs['pixels']:.1f}%) before, "
          f"{rs['wrong_after']} ({100 * rs['wrong_after'] / rs['pixels']:.1f}%) after "
          "resampling.", "", "![before/after resampling](resample_before_after.png)", ""]
    L += [SECTIONS[2], "",
          f"Every model is the tiny Swin-UperNet of `configs/{p.config}`, from random weights, "
          f"{p.epochs} epochs per fold model, trained on {p.folds - 1} of {p.folds} folds and "
          "validated on the remaining fold against the clean truth (the curves; the last "
          "weights are used, no checkpoint is picked on the truth). For each mask variant and "
          f"seed ({', '.join(seeds)}) one model per fold; a seed's test prediction is the mean "
          "of its fold models.", "",
          "| variant | training masks | used for |", "|---|---|---|"]
    uses = {"original": "the ablation's baseline",
            "resampled": "the ablation; OOF stores for tune and audit; the ensemble members",
            "audited": "the ablation's audit row (the audit's `--fix` masks)"}
    L += [f"| {v} | `data/{VARIANT_MASKS[v]}` | {uses[v]} |" for v in p.variants]
    return L


def _ablation_sections(demo) -> list[str]:
    """The recipe's ablation: test mIoU per mask variant and seed, per class."""
    p, ev = demo.p, demo.results["stages"]["evaluate"]
    seeds = [str(s) for s in range(p.seeds)]
    L: list[str] = []
    abl = ev["ablation"]
    L += ["", SECTIONS[3], "",
          "The recipe's claim: training on mode-resampled masks beats training on the original "
          "annotations. Same folds, seeds and schedule; test mIoU against the clean truth.", "",
          "![training curves](curves.png)", "",
          "| trained on | " + " | ".join(f"seed {s}" for s in seeds)
          + " | mean | spread (max - min) | difference to original |",
          "|---|" + "---:|" * (len(seeds) + 3)]
    base = np.mean([abl["original"][s]["miou"] for s in seeds])
    for v in p.variants:
        vals = [abl[v][s]["miou"] for s in seeds]
        L.append(f"| {v} masks | " + " | ".join(_f(x) for x in vals)
                 + f" | {_f(np.mean(vals))} | {_f(max(vals) - min(vals))} | "
                 + ("" if v == "original" else _f(np.mean(vals) - base, sign=True)) + " |")
    L += ["", "Per-class test IoU (mean over seeds) and the difference resampled - original:", "",
          "| class | " + " | ".join(p.variants) + " | resampled - original |",
          "|---|" + "---:|" * (len(p.variants) + 1)]

    def cls_mean(v, k):
        xs = [abl[v][s]["iou"][k] for s in seeds if abl[v][s]["iou"][k] is not None]
        return float(np.mean(xs)) if xs else None

    for k, name in enumerate(TRASH_CLASSES):
        row = [cls_mean(v, k) for v in p.variants]
        a, b = cls_mean("original", k), cls_mean("resampled", k)
        L.append(f"| {name} | " + " | ".join(_f(x) for x in row) + " | "
                 + (_f(b - a, sign=True) if a is not None and b is not None else "n/a") + " |")
    L += ["", "![per-class IoU](iou.png)", ""]
    return L


def _step_section(demo) -> list[str]:
    """The step table on the held-out test split."""
    st = demo.results["stages"]
    ev = st["evaluate"]
    seeds = [str(s) for s in range(demo.p.seeds)]
    L: list[str] = []
    steps = ev["steps"]
    L += [SECTIONS[4] + " (held-out test split)", "",
          f"{st['data']['test']} test images, mIoU against their truth. Members: the "
          "resampled-mask models of each seed. Spread: for the single models the range over "
          "seeds; for every row the standard deviation of the mIoU over test sets redrawn "
          "from the test images (bootstrap).", "",
          "| step | test mIoU | difference to the row before | spread over seeds | "
          "bootstrap sd |", "|---|---:|---:|---:|---:|"]
    singles = [steps[f"model seed {s}"]["miou"] for s in seeds]
    prev = None
    for name, r in steps.items():
        spread = _f(max(singles) - min(singles)) if name.startswith("model seed") else \
            "(one ensemble)"
        L.append(f"| {name} | {_f(r['miou'])} | "
                 + ("" if prev is None else _f(r["miou"] - prev, sign=True))
                 + f" | {spread} | {_f(r['boot_sd'])} |")
        prev = r["miou"]
    L += ["", "![vote and CRF](crf_before_after.png)"]
    return L


def _tune_section(demo) -> list[str]:
    """Tuning on out-of-fold predictions: held-out table, CRF candidates, setting."""
    st = demo.results["stages"]
    tune, steps = st["tune"], st["evaluate"]["steps"]
    L: list[str] = []
    hold = tune["holdout"]
    L += ["", SECTIONS[5], "",
          "`segkit tune` searched weights and a per-class bias on the OOF stores against the "
          "annotation masks, fitted a ConvCRF by gradient on crops of the same (search) images "
          f"with the models' probabilities frozen, and let {tune.get('holdout_images')} held-out "
          "OOF images, never seen by either fit, choose the CRF among off, the two presets and "
          "the fitted one. The setting written (and applied to the test stores with `segkit "
          "ensemble --tuned`) is the one whose held-out mIoU is the `tuned` row.", "",
          "| setting | held-out OOF mIoU | test mIoU |", "|---|---:|---:|"]
    for key, label, test in (("equal", "equal weights", "equal soft vote"),
                             ("recipe", "recipe (equal + seed CRF)", "recipe"),
                             ("tuned", "tuned", "tuned")):
        h = hold.get(key)
        L.append(f"| {label} | {'n/a' if h is None else _f(h['miou'])} | "
                 f"{_f(steps[test]['miou'])} |")
    cands = tune.get("crf_candidates") or {}
    if cands:
        names = {"off": "off (no CRF)", "convcrf": "convcrf preset",
                 "seed": "recipe's seed preset (logits)", "fitted": "fitted CRF"}
        L += ["", "The CRF candidates on the tuned weights and bias (held-out OOF mIoU; the "
              "best is written):", "",
              "| CRF | held-out OOF mIoU | difference to off |", "|---|---:|---:|"]
        for key, value in cands.items():
            mark = " (written)" if key == tune.get("crf_name") else ""
            L.append(f"| {names.get(key, key)}{mark} | {_f(value, 4)} | "
                     f"{_f(value - cands['off'], 4, sign=True) if 'off' in cands else 'n/a'} |")
        fit = tune.get("crf_fit") or {}
        learned = fit.get("learned") or {}
        if learned:
            L += ["", f"Fitted CRF ({fit.get('steps')} Adam steps, {_f(fit.get('seconds'), 1)} "
                  f"s; training loss {_f(fit.get('loss_first'), 4)} -> "
                  f"{_f(fit.get('loss_last'), 4)}): "
                  + ", ".join(f"{k} {learned[k]:.3g}" for k in
                              ("pos_compat", "col_compat", "pos_sdims", "col_schan"))
                  + "; class weights " + ", ".join(f"{w:.2f}" for w in learned["weight"])
                  + " (the convcrf preset: 3, 10, 3, 13 and 0.2 for every class)."]
    L += ["", "Tuned weights: " + ", ".join(f"{w:.3f}" for w in tune["weights"])
          + "; bias: " + ("none" if tune["bias"] is None else
                          ", ".join(f"{b:+.2f}" for b in tune["bias"]))
          + f"; CRF: {tune.get('crf_name') or tune['crf'] or 'off'}.", "",
          "![tuning](tuned/tuning.png)", ""]
    return L


def _audit_section(demo) -> list[str]:
    """The label audit against the clean truth."""
    p, au = demo.p, demo.results["stages"]["audit"]
    L: list[str] = []
    L += [SECTIONS[6], "",
          "`segkit audit` on the same OOF stores, checked against the clean truth the generator "
          "kept:", "",
          "| masks audited | pixels flagged | precision | recall | wrong pixels: annotations "
          "| wrong pixels: fixed masks |", "|---:|---:|---:|---:|---:|---:|",
          f"| {au['images']} | {au['flagged']} | {_f(au['precision'])} | {_f(au['recall'])} | "
          f"{au['wrong_annotated']} | {au['wrong_fixed']} |", "",
          "Training on the fixed masks is the `audited` row of the ablation above."
          if "audited" in p.variants else "(This preset trains no model on the fixed masks.)",
          "", "The worst masks (photo, annotation, flagged pixels, truth); all of them with "
          "overlays in [audit/index.html](audit/index.html):", "",
          "![audit: worst masks](audit_worst.png)", ""]
    return L


def _time_section(demo) -> list[str]:
    """Each stage's time and the machine's load."""
    runs = demo.results["runs"]
    L: list[str] = []
    secs = demo.results["seconds"]
    try:
        load = "load average {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())
    except OSError:
        load = "load average unknown"
    L += [SECTIONS[7], "",
          f"{os.cpu_count()} CPUs, {load} at the end of the run.", "",
          "| stage | seconds |", "|---|---:|"]
    L += [f"| {k} | {v:.1f} |" for k, v in secs.items() if k != "total"]
    L += [f"| total (before this index) | {secs.get('total', 0):.0f} |", "",
          "Training runs: " + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in runs.items()),
          ""]
    return L


def _files_section(demo) -> list[str]:
    """What the demo folder holds."""
    L: list[str] = []
    L += [SECTIONS[8], "",
          "- [`recipe.toml`](recipe.toml): the recipe the demo wrote for its scenes; "
          f"`segkit recipe status {demo.out}` says what is done, `segkit recipe run "
          f"{demo.out}` reruns what a changed setting touches",
          "- `scenes/`: what the generator wrote: images, COCO files, the clean truth "
          "(`masks_clean`), the test images and their truth, the sample submission",
          "- `data/`: the recipe's masks (`masks`, `masks_resampled`, `masks_fixed` = the "
          "audited masks, `masks_val` = the clean truth the trainings validate against, "
          "`test_masks`) and `splits/` (folds)",
          "- `work/tiny_<variant>_s<seed>_fold<k>`: mmengine work folders (logs, checkpoints; "
          "the audited variant is `fixed` there); `work/crf_layer_s0_fold0`: the CRF-layer model",
          "- `stores/`: confidence stores (float16 probabilities per image): "
          "`tiny_resampled_s<seed>_fold<k>` out of fold, `<run>_test` (test; without the fold, "
          "the mean of a seed's fold models)",
          "- `tuned/tuned.json`, `tuned/tuning.png`: the tuned setting and its search",
          "- `audit/`: `audit.csv`, `issues/<stem>.png`, `index.html` (the label audit)",
          "- `ensembles/<vote|vote_crf|recipe|tuned>/labels`: label PNGs of each ensemble",
          "- [`submission.csv`](submission.csv): the competition's format",
          "- [`report/index.html`](report/index.html), `report.json`: the recipe's own report",
          ""]
    return L


def crf_layer_section(demo) -> list[str]:
    """The train stage's CRF-layer table: one fold model with and without the trainable
    ConvCRF layer (segkit.mmseg.CRFEncoderDecoder), same fold, seed, masks and schedule."""
    c = demo.results["crf_layer"]
    plain, crf = c["plain"], c["crf"]
    learned = c.get("learned", {})
    weights = learned.get("weight") or []
    scalars = ", ".join(f"{k[4:]} {float(np.exp(v)):.2f}" for k, v in learned.items()
                        if k.startswith("log_"))
    return [SECTIONS[9], "",
            f"The same tiny model (fold {c['fold']}, seed {c['seed']}, trained on the "
            f"{c['variant']} masks, {demo.p.epochs} epochs) without and with a ConvCRF layer "
            "after the decode head, learned end to end (`CRFEncoderDecoder`: loss on the CRF's "
            "output plus half the loss on the unary; the CRF also runs at validation). "
            "Validation mIoU against the clean truth on the held-out fold. One fold and one "
            "seed: compare the difference with the seed-to-seed spread of the ablation above.",
            "", "| model | validation mIoU | seconds |", "|---|---:|---:|",
            f"| without the CRF layer (`configs/{demo.p.config}`) | {_f(plain['val_mIoU'])} | "
            f"{plain['seconds']:.0f} |",
            f"| with the CRF layer (`configs/{c['config']}`) | {_f(crf['val_mIoU'])} | "
            f"{crf['seconds']:.0f} |",
            f"| difference | {_f(crf['val_mIoU'] - plain['val_mIoU'], sign=True)} | "
            f"{crf['seconds'] - plain['seconds']:+.0f} |",
            f"| with the CRF layer, its decode head alone (`crf_test=False`) | "
            f"{_f(crf.get('unary_val_mIoU'))} | |", "",
            f"Its logs and checkpoint: `work/{crf['run']}`. Learned CRF parameters: class "
            "weights "
            + (f"{min(weights):.3f}-{max(weights):.3f}" if weights else "n/a")
            + (f"; {scalars}" if scalars else "") + ".", ""]
