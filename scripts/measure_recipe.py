"""Measure `segkit recipe` with the cpu preset on generated photo-size scenes.

No real photo dataset can be downloaded on the development machine, so this script writes
generated scenes at photo size with the demo's scene generator
(:func:`segkit.synthetic.make_coco_dataset` with :func:`segkit.demo.base.scene_options` of
the shorter side: 3-6 textured objects of 10 classes per JPEG photo, radius 30-55% of the
shorter side, annotations traced by a wobbly hand, small objects left unannotated half the
time), turns them into the mmseg layout (a
folder of images and a folder of single-channel PNG masks of the same stems) with a void
value other than 255 (a 4-px frame of every mask, as hand-labelled borders are), plus test
images and test masks; then runs ``segkit recipe init`` and ``segkit recipe run`` on them and
prints each stage's time and peak memory and the test mIoU of every model and ensemble (read
back from the recipe's ``report.json``).

Usage::

    python scripts/measure_recipe.py OUT [--images 100] [--tests 20] [--size 360x480]
        [--void 11] [--data-only] [--torch-threads N]

``OUT/data`` holds the dataset (kept between runs: written once per seed and size),
``OUT/recipe`` the recipe folder; a second call resumes the recipe where it stopped.
``--torch-threads`` sets ``OMP_NUM_THREADS`` for the run (default: leave it as it is).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_dataset(out: Path, images: int, tests: int, size: tuple[int, int], void: int,
                 seed: int = 0) -> dict[str, Path]:
    """Generated scenes in the mmseg layout with void value `void`: images/, masks/,
    test_images/, test_masks/ under `out` (returns the four folders)."""
    import segkit
    from segkit.demo.base import scene_options
    from segkit.io.masks import read_mask, write_mask
    from segkit.synthetic import make_coco_dataset

    done = out / "done.json"
    key = {"generator": "demo scenes", "images": images, "tests": tests, "size": list(size),
           "void": void, "seed": seed}
    folders = {name: out / name for name in ("images", "masks", "test_images", "test_masks")}
    if done.is_file() and json.loads(done.read_text()) == key:
        return folders
    opts = dict(scene_options(min(size)), size=size, folders=None)
    parts = {"": make_coco_dataset(out / "coco_train", n_images=images, seed=seed,
                                   empty_images=1, **opts),
             "test_": make_coco_dataset(out / "coco_test", n_images=tests, seed=seed + 1000,
                                        empty_images=0, **opts)}
    for prefix, ds in parts.items():
        masks = folders[f"{prefix}masks"]
        segkit.coco_to_masks(ds.ann_file, masks, workers=1, progress=False, log=None)
        for extra in ("labels.json", "masks_report.json"):
            (masks / extra).unlink(missing_ok=True)
        for p in masks.glob("*.png"):
            m = read_mask(p).astype(np.uint8)
            m[:4], m[-4:], m[:, :4], m[:, -4:] = void, void, void, void
            write_mask(p, m)
        link = folders[f"{prefix}images"]
        if not link.exists():
            link.symlink_to(Path(ds.ann_file).parent.resolve(), target_is_directory=True)
    done.write_text(json.dumps(key))
    return folders


def run(cmd: list[str], env: dict) -> float:
    """Run `cmd`, echoing its output; its wall time in seconds."""
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - t0


def summary(recipe: Path) -> dict:
    """Stage times, peak memory and test mIoU from the recipe's report.json."""
    report = json.loads((recipe / "report.json").read_text())
    stages = {k: (v.get("state"), v.get("seconds"), v.get("peak_rss_mb"))
              for k, v in report.get("stages", {}).items()}
    steps = (report.get("test") or {}).get("steps") or {}
    test = {k: {m: v.get(m) for m in ("miou", "boot_sd")} for k, v in steps.items()}
    models = {k: {m: v.get(m) for m in ("val_mIoU", "seconds")}
              for k, v in (report.get("models") or {}).items() if isinstance(v, dict)}
    return {"stages": stages, "test_miou": test, "models": models,
            "oof_miou": (report.get("oof") or {}).get("miou")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--tests", type=int, default=20)
    ap.add_argument("--size", default="360x480", help="HxW of the generated photos")
    ap.add_argument("--void", type=int, default=11)
    ap.add_argument("--data-only", action="store_true")
    ap.add_argument("--torch-threads", type=int, default=None)
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    t0 = time.perf_counter()
    data = make_dataset(args.out / "data", args.images, args.tests, (h, w), args.void)
    print(f"data: {args.images} + {args.tests} test scenes of {w}x{h} in "
          f"{time.perf_counter() - t0:.0f} s: {args.out / 'data'}", flush=True)
    if args.data_only:
        return 0
    env = dict(os.environ)
    if args.torch_threads:
        env["OMP_NUM_THREADS"] = str(args.torch_threads)
    recipe = args.out / "recipe"
    segkit = [sys.executable, "-m", "segkit.cli"]
    if not (recipe / "recipe.toml").exists():
        run(segkit + ["recipe", "init", str(recipe), "--images", str(data["images"]),
                      "--masks", str(data["masks"]), "--ignore-index", str(args.void),
                      "--test-images", str(data["test_images"]),
                      "--test-masks", str(data["test_masks"]), "--preset", "cpu"], env)
    start = {"utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
             "load": os.getloadavg()}
    took = run(segkit + ["recipe", "run", str(recipe), "--no-progress"], env)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    end = {"utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "load": os.getloadavg()}
    print(f"recipe run: {took:.0f} s wall, peak RSS of a child process {peak:.0f} MB; "
          f"start {start}, end {end}")
    result = {"wall_s": round(took, 1), "peak_rss_mb": round(peak), "start": start,
              "end": end, "omp_num_threads": env.get("OMP_NUM_THREADS"),
              "cpus": os.cpu_count(), **summary(recipe)}
    (args.out / "measure.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
