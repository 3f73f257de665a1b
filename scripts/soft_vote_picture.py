"""Regenerate docs/soft_vote_ensemble.png: three fake models' argmax maps, their soft vote, and
the vote's 2x downsampling for the submission (nearest vs mode). Run from the repository root:
    .venv/bin/python scripts/soft_vote_picture.py"""
from __future__ import annotations

import numpy as np

import segkit
from segkit.io.submission import resize_labels
from segkit.synthetic import model_probs
from segkit.viz import colorize, panel

probs = model_probs(3, 6, 192, 192, agreement=0.8, sharpness=2.0, scale=64, seed=11).astype(np.float16)
weights = [0.5, 0.3, 0.2]
votes = segkit.soft_vote(list(probs), weights)
tiles = [colorize(p.argmax(0)) for p in probs] + [colorize(votes)]
small = [resize_labels(votes, 96, m) for m in ("nearest", "mode")]
tiles += [colorize(np.kron(s, np.ones((2, 2), s.dtype))) for s in small]
titles = [f"model {k} (w={w})" for k, w in enumerate(weights)] + ["soft vote", "96x96 nearest",
                                                                    "96x96 mode"]
panel(tiles, titles, "docs/soft_vote_ensemble.png", scale=1)
print("wrote docs/soft_vote_ensemble.png")
