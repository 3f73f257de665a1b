"""The audit on known noise: a generated dataset whose annotations carry edge noise (each image
its own level) beside the kept clean truth, and generated out-of-fold probabilities from the
truth (tests/_synthetic.audit_dataset). Prints the rank correlation of the audit's per-image
quality with the true per-image noise, and the precision and recall of the flagged pixels.

    python scripts/audit_known_noise.py [N_IMAGES] [WORKDIR]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    import segkit
    from segkit.io.masks import read_mask
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' generators
    from tests._synthetic import audit_dataset

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    root = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp())
    gt, clean, images, store = audit_dataset(root / "data", n)
    report = segkit.audit([store], gt, root / "audit", images=images, top=10, progress=False)
    print(report)
    noise, quality, issue_frac = [], [], []
    tp = fp = fn = 0
    for r in report.rows:
        rel = r["stem"].replace("+", "/") + ".png"
        g, c = read_mask(gt / rel), read_mask(clean / rel)
        f = read_mask(root / "audit" / "issues" / f"{r['stem']}.png") > 0
        wrong = g != c
        noise.append(wrong.mean())
        quality.append(r["quality"])
        issue_frac.append(r["issue_fraction"])
        tp += int((f & wrong).sum())
        fp += int((f & ~wrong).sum())
        fn += int((~f & wrong).sum())

    def spearman(a, b):
        ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
        return float(np.corrcoef(ra, rb)[0, 1])

    print(f"images {n}; truly wrong pixels {tp + fn} of {report.pixels} "
          f"({(tp + fn) / report.pixels:.2%})")
    print(f"Spearman(true noise, quality) = {spearman(noise, quality):+.3f}  "
          f"(negative: noisier masks score lower)")
    print(f"Spearman(true noise, issue fraction) = {spearman(noise, issue_frac):+.3f}")
    print(f"flagged {tp + fp}: precision {tp / max(tp + fp, 1):.3f}, recall "
          f"{tp / max(tp + fn, 1):.3f}")
    worst = [r["stem"] for r in report.rows[:5]]
    noisiest = [report.rows[i]["stem"] for i in np.argsort(noise)[::-1][:5]]
    print(f"5 worst by quality: {worst}\n5 noisiest in truth: {noisiest}")


if __name__ == "__main__":
    main()
