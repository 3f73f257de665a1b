"""The recipe's dataset size in one run: does every job grow linearly in images, with flat
peak memory? (`make bench-scale`; not part of `make test`.)

For each fraction f of the recipe (3,272 training + 819 test images of 512x512, COCO, 11
classes) this writes
  * a COCO dataset at full side: JPG photos of textured polygons, ``annotations.json`` (the
    training images, polygon segmentations) and ``test.json`` -- a fast generator of its own
    (segkit.synthetic's is about 0.25 s an image here, too slow for thousands);
  * out-of-fold confidence stores for 3 models over 5 folds (``m<M>_fold<K>``, image i in fold
    i % 5) plus a test store per model (``m<M>_test``), float16 at side STORE_SIDE (128 by
    default) with their ground truth masks at that side: 3 x 3,272 x 11 x 512 x 512 float16
    would be 56 GB, at 128 it is 3.5 GB for the whole recipe. Per-image cost scales with the
    pixels, so the growth in images is what this measures either way.
and times, in a fresh process each (the command's own start-up included), the jobs masks,
resample, kfold (on the full-side data), ensemble (the test stores), tune and audit (the OOF
store sets): wall time and the peak resident memory of the process tree (the job and its
workers, sampled every 50 ms from /proc). The growth exponent a of time ~ n^a (and of peak
memory) is fitted over the fractions by least squares on logs.

  python benchmarks/bench_scale.py --fractions 1/32,1/16,1/8 --workers 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
TRAIN, TEST, SIDE, CLASSES, MODELS, FOLDS = 3272, 819, 512, 11, 3, 5
JOBS = ("masks", "resample", "kfold", "ensemble", "tune", "audit")


# ---- data ------------------------------------------------------------------------------------

def _polygons(rng, side):
    """3-6 star-shaped polygons (class, flat [x0, y0, x1, y1, ...]) in decreasing area."""
    out = []
    for _ in range(int(rng.integers(3, 7))):
        cls = int(rng.integers(1, CLASSES))
        cx, cy = rng.uniform(0.15, 0.85, 2) * side
        r = rng.uniform(0.05, 0.25) * side
        k = int(rng.integers(5, 10))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = r * rng.uniform(0.6, 1.0, k)
        pts = np.stack([np.clip(cx + rad * np.cos(ang), 0, side - 1),
                        np.clip(cy + rad * np.sin(ang), 0, side - 1)], 1)
        out.append((cls, r, np.round(pts, 1)))
    out.sort(key=lambda t: -t[1])
    return [(c, p) for c, _, p in out]


def _paint(polys, side, scale=1.0):
    mask = Image.new("L", (side, side), 0)
    d = ImageDraw.Draw(mask)
    for cls, pts in polys:
        d.polygon([tuple(xy) for xy in (pts * scale)], fill=cls)
    return np.asarray(mask)


def make_data(root: Path, n_train: int, n_test: int, store_side: int, seed: int = 0) -> dict:
    """Writes the COCO dataset, the stores and the store-side ground truth; returns paths."""
    from segkit.io.masks import write_mask
    from segkit.io.store import ConfidenceStore
    from segkit.palette import TRASH_CLASSES, palette_for

    rng = np.random.default_rng(seed)
    colours = palette_for(256)[:CLASSES].astype(np.float32) * 0.7 + 40
    texture = rng.normal(0, 12, (2 * SIDE, 2 * SIDE, 3)).astype(np.float32)
    classes = list(TRASH_CLASSES)
    cats = [dict(id=i, name=n) for i, n in enumerate(classes) if i]
    gt = root / "gt_small"
    stores = {f"m{m}_fold{k}": ConfidenceStore.create(root / "stores" / f"m{m}_fold{k}",
                                                      classes, model=f"m{m}")
              for m in range(MODELS) for k in range(FOLDS)}
    stores.update({f"m{m}_test": ConfidenceStore.create(root / "stores" / f"m{m}_test",
                                                        classes, model=f"m{m}")
                   for m in range(MODELS)})
    noise = rng.normal(0, 1, (64, CLASSES, store_side, store_side)).astype(np.float32)
    files = {}
    for split, count, offset in (("train", n_train, 0), ("test", n_test, n_train)):
        images, anns = [], []
        for j in range(count):
            i = offset + j
            name = f"batch_{i % 3 + 1:02d}_vt/{i:04d}.jpg"
            stem = name[:-4].replace("/", "+")
            polys = _polygons(rng, SIDE)
            full = _paint(polys, SIDE)
            oy, ox = rng.integers(0, SIDE, 2)
            photo = colours[full] + texture[oy:oy + SIDE, ox:ox + SIDE]
            path = root / "images" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(path, quality=85)
            images.append(dict(id=i, file_name=name, height=SIDE, width=SIDE))
            for cls, pts in polys:
                xs, ys = pts[:, 0], pts[:, 1]
                area = 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
                anns.append(dict(id=len(anns) + 1 + offset * 10, image_id=i, category_id=cls,
                                 segmentation=[pts.ravel().tolist()], area=float(area),
                                 bbox=[float(xs.min()), float(ys.min()),
                                       float(xs.max() - xs.min()), float(ys.max() - ys.min())],
                                 iscrowd=0))
            # the store-side truth, and every model's probabilities around it
            small = _paint(polys, store_side, store_side / SIDE)
            onehot = (small[None] == np.arange(CLASSES)[:, None, None]).astype(np.float32)
            if split == "train":
                write_mask(gt / f"{stem}.png", small.astype(np.uint8))
            for m in range(MODELS):
                # confident inside objects, unsure at a few pixels (as trained networks are)
                logits = 9.0 * onehot + (1.0 + 0.5 * m) * noise[(i * 7 + m) % 64]
                e = np.exp(logits - logits.max(0))
                store = stores[f"m{m}_fold{i % FOLDS}" if split == "train" else f"m{m}_test"]
                store.write(stem, e / e.sum(0), check=False)
        ann = dict(images=images, annotations=anns, categories=cats)
        files[split] = root / ("annotations.json" if split == "train" else "test.json")
        files[split].write_text(json.dumps(ann))
    sets = [",".join(str(root / "stores" / f"m{m}_fold{k}") for k in range(FOLDS))
            for m in range(MODELS)]
    tests = [str(root / "stores" / f"m{m}_test") for m in range(MODELS)]
    return dict(root=root, ann=files["train"], gt=gt, sets=sets, tests=tests)


# ---- measuring -------------------------------------------------------------------------------

PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root_pid: int) -> int:
    """Resident bytes of `root_pid` and all its descendants (from /proc)."""
    parent, rss = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{d}/statm") as f:
                rss[int(d)] = int(f.read().split()[1]) * PAGE
            parent[int(d)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root_pid]
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def run_job(code: str, env: dict, log: Path) -> tuple[float, int]:
    """(seconds, peak tree RSS in bytes) of `python -c code`."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out, stderr=out)
        peak = 0
        done = threading.Event()

        def sample():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss(proc.pid))
                done.wait(0.05)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        code_ = proc.wait()
        done.set()
        t.join()
    seconds = time.perf_counter() - start
    if code_ != 0:
        raise SystemExit(f"job failed (exit {code_}); see {log}:\n{log.read_text()[-3000:]}")
    return seconds, peak


def job_code(job: str, d: dict, out: Path, workers: int, budget: int) -> str:
    common = f"workers={workers}, progress=False"
    calls = {
        "masks": f"segkit.coco_to_masks({str(d['ann'])!r}, {str(out / 'masks')!r}, "
                 f"flatten=True, {common}, log=None)",
        "resample": f"segkit.resample({str(out / 'masks')!r}, {str(out / 'masks_rs')!r}, "
                    f"{common}, log=None)",
        "kfold": f"segkit.kfold({str(d['ann'])!r}, 5, out={str(out / 'splits')!r}, "
                 "flatten=True, log=None)",
        "ensemble": f"segkit.ensemble({d['tests']!r}, None, {str(out / 'ensemble')!r}, "
                    f"{common})",
        "tune": f"segkit.tune({d['sets']!r}, {str(d['gt'])!r}, {str(out / 'tune')!r}, "
                f"search=('weights', 'bias'), budget={budget}, {common})",
        "audit": f"segkit.audit({d['sets']!r}, {str(d['gt'])!r}, {str(out / 'audit')!r}, "
                 f"top=5, {common})",
    }
    return "import segkit\n" + calls[job]


def check_outputs(job: str, out: Path, n: int, log: Path) -> str:
    """Raises unless the job wrote what it should for n images; returns a note for the table."""
    count = {"masks": lambda: len(list((out / "masks").rglob("*.png"))),
             "resample": lambda: len(list((out / "masks_rs").rglob("*.png"))),
             "ensemble": lambda: len(list((out / "ensemble").rglob("*.png"))),
             "audit": lambda: len((out / "audit" / "audit.csv").read_text().splitlines()) - 1}
    if job in count and count[job]() < n:
        raise SystemExit(f"{job} wrote {count[job]()} outputs for {n} images (see {log})")
    if job == "kfold" and not any((out / "splits").iterdir()):
        raise SystemExit(f"kfold wrote no splits (see {log})")
    if job == "tune":
        json.loads((out / "tune" / "tuned.json").read_text())
        kept = [ln for ln in log.read_text().splitlines() if "can change label" in ln]
        return kept[0].split(":", 1)[1].strip() if kept else ""
    return ""


def slope(ns, ys) -> float:
    x, y = np.log(np.asarray(ns, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(x, y, 1)[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fractions", default="1/32,1/16,1/8",
                    help="comma-separated fractions of the recipe's size [1/32,1/16,1/8]")
    ap.add_argument("--store-side", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--budget", type=int, default=20, help="tune's candidates per search")
    ap.add_argument("--out", default="/tmp/segkit_scale", help="scratch folder (removed)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    fractions = [Fraction(f) for f in args.fractions.split(",")]
    scratch = Path(args.out)
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    # the fixed cost of a job's process: interpreter, imports, a worker pool started and joined
    startup = min(run_job("import segkit\nfrom segkit.jobs import engine\n"
                          f"list(engine.map_items(abs, [1, 2], workers={args.workers}, "
                          "progress=False))", env, scratch.with_suffix(".startup.log"))[0]
                  for _ in range(2))
    print(f"start-up (import segkit, a pool of {args.workers}): {startup:.1f} s", flush=True)
    rows = []
    for f in fractions:
        n_train, n_test = max(FOLDS, round(TRAIN * f)), max(1, round(TEST * f))
        shutil.rmtree(scratch, ignore_errors=True)
        t0 = time.perf_counter()
        data = make_data(scratch / "data", n_train, n_test, args.store_side)
        gen = time.perf_counter() - t0
        print(f"fraction {f}: {n_train} + {n_test} images generated in {gen:.0f} s", flush=True)
        for job in JOBS:
            out = scratch / "out"
            seconds, peak = run_job(job_code(job, data, out, args.workers, args.budget), env,
                                    scratch / f"{job}.log")
            n = n_test if job == "ensemble" else n_train
            note = check_outputs(job, out, n, scratch / f"{job}.log")
            rows.append(dict(fraction=str(f), job=job, images=n, seconds=seconds,
                             peak_mib=peak / 2**20, note=note))
            print(f"  {job:9s} {n:5d} images  {seconds:7.1f} s  {peak / 2**20:7.0f} MiB  {note}",
                  flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nstart-up {startup:.1f} s; a: time ~ n^a, a': (time - start-up) ~ n^a', "
          "b: peak memory ~ n^b")
    print("\n| job | " + " | ".join(f"{f} (s, MiB)" for f in fractions) + " | a | a' | b |")
    print("|---|" + "---|" * (len(fractions) + 3))
    for job in JOBS:
        r = [x for x in rows if x["job"] == job]
        cells = " | ".join(f"{x['images']} img: {x['seconds']:.1f} s, {x['peak_mib']:.0f}"
                           for x in r)
        ns = [x["images"] for x in r]
        a = slope(ns, [x["seconds"] for x in r])
        net = [x["seconds"] - startup for x in r]
        a_net = slope(ns, net) if min(net) > 0 else float("nan")
        b = slope(ns, [x["peak_mib"] for x in r])
        print(f"| {job} | {cells} | {a:.2f} | {a_net:.2f} | {b:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(startup=startup, rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
