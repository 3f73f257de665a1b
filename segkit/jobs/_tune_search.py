"""`segkit tune`'s weight and bias search: a seeded coordinate search on mIoU.

From equal weights and zero bias, each round visits the coordinates (one weight per model,
one bias per class) in a random order; for each it steps up, and if that does not raise the
mIoU, down, and keeps stepping while the mIoU rises. A weight step adds ``step`` to one
weight and renormalises to sum 1 (weights stay >= 0); a bias step adds ``step`` within
``[-bias_bound, bias_bound]``. A round without gain halves the steps (weights from
:data:`WEIGHT_STEP`, bias from :data:`BIAS_STEP`); the search ends when the steps fall below
1/:data:`MIN_STEP_DIVISOR` of their start or after `budget` candidates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

#: First step of a weight (added to one weight before renormalising) and of a bias.
WEIGHT_STEP, BIAS_STEP = 0.25, 0.5
#: The search stops when the steps fall below their start divided by this.
MIN_STEP_DIVISOR = 64


@dataclass
class CoordinateSearch:
    """The search state; `objective(weights, bias)` is the mIoU of a candidate."""
    objective: Callable[[np.ndarray, np.ndarray | None], float]
    rng: np.random.Generator
    tune_weights: bool
    tune_bias: bool
    bias_bound: float
    budget: int
    history: list = field(default_factory=list)
    stage: str = "search"
    used: int = 0

    def score(self, w: np.ndarray, b: np.ndarray | None, move: str) -> float:
        """The objective of one candidate, recorded in the history."""
        value = self.objective(w, b)
        self.used += 1
        self.history.append({"stage": self.stage, "candidate": len(self.history),
                             "weights": [float(v) for v in w],
                             "bias": None if b is None else [float(v) for v in b],
                             "move": move, "miou": value})
        return value

    def run(self, w0: np.ndarray, b0: np.ndarray | None) -> tuple[np.ndarray, Any, float]:
        """(weights, bias, best objective) from the start (w0, b0)."""
        w, b = w0.astype(np.float64).copy(), None if b0 is None else b0.astype(np.float64).copy()
        best = self.score(w, b, "start")
        coords = ([("w", i) for i in range(len(w))] if self.tune_weights and len(w) > 1 else []) \
            + ([("b", i) for i in range(len(b))] if self.tune_bias and b is not None else [])
        sw, sb = WEIGHT_STEP, BIAS_STEP
        while coords and self.used < self.budget:
            improved = False
            for j in self.rng.permutation(len(coords)):
                kind, i = coords[j]
                for sign in (1.0, -1.0):
                    moved = False
                    while self.used < self.budget:
                        cand = self.step(w, b, kind, i, sign * (sw if kind == "w" else sb))
                        if cand is None:
                            break
                        value = self.score(*cand, f"{kind}{i}{'+' if sign > 0 else '-'}")
                        if value > best + 1e-12:
                            (w, b), best, moved = cand, value, True
                        else:
                            break
                    if moved:
                        improved = True
                        break
                if self.used >= self.budget:
                    break
            if not improved:
                sw, sb = sw / 2, sb / 2
                if sw < WEIGHT_STEP / MIN_STEP_DIVISOR and sb < BIAS_STEP / MIN_STEP_DIVISOR:
                    break
        return w, b, best

    def step(self, w, b, kind, i, delta):
        """The candidate one step from (w, b) along coordinate (kind, i), or None."""
        if kind == "w":
            new = w.copy()
            new[i] = max(0.0, new[i] + delta)
            if new[i] == w[i] or new.sum() <= 0:
                return None
            return new / new.sum(), b
        new = b.copy()
        new[i] = min(self.bias_bound, max(-self.bias_bound, new[i] + delta))
        if new[i] == b[i]:
            return None
        return w, new
