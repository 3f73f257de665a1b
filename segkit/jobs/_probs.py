"""What the jobs check of the probabilities a tuned CRF setting is applied to.

A tuned setting (``tuned.json``) is applied to the soft vote's averaged probabilities:
`segkit ensemble --tuned` computes them, `segkit crf --tuned` reads them (``ensemble --tuned
--save-probs`` writes them). A fitted CRF takes their log (floored, see
``segkit.jobs.settings.PROB_FLOOR``), so logits would run and give wrong labels without a word:
:func:`check_probabilities` refuses them where the job takes its input, before any CRF runs.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError

#: Slack of the checks, beyond float16 rounding: a float16 store's probabilities round to
#: within 2**-11 of their value, so a pixel's sum may miss 1 by C * 2**-11.
SUM_SLACK = 1e-2


def check_probabilities(probs: np.ndarray, where: str) -> None:
    """Refuse `probs` unless every pixel holds probabilities: values in [0, 1] that sum to 1
    (within float16 rounding plus :data:`SUM_SLACK`).

    Parameters
    ----------
    probs : array (C, H, W)
        One image's averaged probabilities (float16 or float32).
    where : str
        The file or image named in the message.

    Raises
    ------
    InputError
        Naming `where`, the range of values or of pixel sums found, and what to pass instead.
    """
    p = np.asarray(probs)
    if p.size == 0:
        return
    c = p.shape[0]
    tol = SUM_SLACK + c * 2.0 ** -11
    low, high = float(np.min(p)), float(np.max(p))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(f"{where}: the probabilities hold NaN or inf")
    problem = None
    if low < 0 or high > 1 + tol:
        problem = f"values from {low:.4g} to {high:.4g}"
    else:
        sums = p.sum(axis=0, dtype=np.float32)
        lo, hi = float(sums.min()), float(sums.max())
        if lo < 1 - tol or hi > 1 + tol:
            problem = f"pixel sums over the {c} classes from {lo:.4g} to {hi:.4g}"
    if problem:
        raise InputError(f"{where}: a tuned CRF setting takes probabilities (values in [0, 1] "
                         f"summing to 1 over the classes); got {problem}. Pass the averaged "
                         "probabilities under the tuned weights (segkit ensemble --tuned ... "
                         "--save-probs writes them), not logits")
