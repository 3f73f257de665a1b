"""Regenerate the README's pictures of single ops from generated data, and copy the demo's
pictures (docs/demo_*.png) from a `make demo` run. Run from the repository root:

    .venv/bin/python scripts/docs_pictures.py                 # the op pictures
    .venv/bin/python scripts/docs_pictures.py convcrf         # one
    .venv/bin/python scripts/docs_pictures.py demo [demo_out] # the demo's, from its run
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

import segkit
from segkit.io.submission import resize_labels
from segkit.synthetic import blob_masks, crf_scene, model_probs
from segkit.viz import colorize, panel

#: docs/demo_<name>.png <- <demo_out>/<file>
DEMO_PICTURES = {"overlays": "overlays.png", "resample": "resample_before_after.png",
                 "curves": "curves.png", "iou": "iou.png", "crf": "crf_before_after.png",
                 "audit": "audit_worst.png"}


def mode_filter() -> None:
    """docs/mode_filter_before_after.png: a noisy mask and segkit.mode_filter's result."""
    mask = blob_masks(1, 192, 192, 11, noise=0.05, seed=0)[0]
    panel([colorize(mask), colorize(segkit.mode_filter(mask))],
          ["before (5% label noise)", "after segkit.mode_filter (3x3)"],
          "docs/mode_filter_before_after.png", scale=2)


def soft_vote() -> None:
    """docs/soft_vote_ensemble.png: three models' argmax maps, their soft vote, and the vote's
    2x downsampling for the submission (nearest vs mode)."""
    probs = model_probs(3, 6, 192, 192, agreement=0.8, sharpness=2.0, scale=64,
                        seed=11).astype(np.float16)
    weights = [0.5, 0.3, 0.2]
    votes = segkit.soft_vote(list(probs), weights)
    tiles = [colorize(p.argmax(0)) for p in probs] + [colorize(votes)]
    small = [resize_labels(votes, 96, m) for m in ("nearest", "mode")]
    tiles += [colorize(np.kron(s, np.ones((2, 2), s.dtype))) for s in small]
    titles = [f"model {k} (w={w})" for k, w in enumerate(weights)] + [
        "soft vote", "96x96 nearest", "96x96 mode"]
    panel(tiles, titles, "docs/soft_vote_ensemble.png", scale=1)


def convcrf() -> None:
    """docs/convcrf_before_after.png: a scene a "network" saw at 1/8 resolution with noise, its
    argmax, segkit.convcrf's labels (default setting) and the truth."""
    images, truth, logits = crf_scene(1, 256, 256, 11, seed=1)
    before = logits[0].argmax(0)
    after = segkit.convcrf_labels(logits[0], images[0])
    acc = [f"{100 * (m == truth[0]).mean():.1f}%" for m in (before, after)]
    panel([images[0], colorize(before), colorize(after), colorize(truth[0])],
          ["image", f"network argmax ({acc[0]})", f"segkit.convcrf ({acc[1]})", "truth"],
          "docs/convcrf_before_after.png")


def demo(out: str = "demo_out") -> None:
    """docs/demo_*.png: copied from a finished `segkit demo --out OUT` run."""
    root = Path(out)
    if not (root / "index.md").is_file():
        raise SystemExit(f"{root}/index.md not found: run `make demo` (or segkit demo --out "
                         f"{root}) first")
    for name, file in DEMO_PICTURES.items():
        shutil.copyfile(root / file, f"docs/demo_{name}.png")


PICTURES = {"mode_filter": mode_filter, "soft_vote": soft_vote, "convcrf": convcrf}

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["demo"]:
        demo(*args[1:2])
        print("copied the demo's pictures into docs/")
    else:
        for name in args or list(PICTURES):
            PICTURES[name]()
            print(f"wrote the {name} picture")
