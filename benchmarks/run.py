"""Run the benchmark suites and paste their tables into benchmarks/RESULTS.md.

    python benchmarks/run.py                 # every suite (what `make bench` does)
    python benchmarks/run.py convcrf resample
    python benchmarks/run.py --pytest-args "--benchmark-min-rounds=3"

Each suite is `benchmarks/bench_<name>.py`; its JSON goes to `benchmarks/results/<name>.json`
and its tables, with ratios against the listed peers, between the `<!-- bench:<name> -->`
markers of RESULTS.md (see report.py).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: suite -> implementation-name fragments to report ratios against
SUITES = {
    "mode_filter": ["PIL", "box sum", "original recipe"],
    "confusion": ["bincount", "memory floor"],
    "resample": ["1 worker", "original recipe"],
    "soft_vote": ["np.average", "floor 2 threads", "NumPy loop"],
    "convcrf": ["unfold reference (1 thread)", "unfold reference (2 threads)", "pydensecrf2"],
    "label_issues": ["cleanlab 2.9"],
    "tune": ["soft_vote + confusion_matrix (cpp)", "every pixel"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suites", nargs="*", metavar="SUITE", default=[],
                    help=f"suites to run: {', '.join(SUITES)} (default: all)")
    ap.add_argument("--pytest-args", default="--benchmark-min-rounds=5 --benchmark-max-time=1")
    args = ap.parse_args()
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        ap.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    sys.path.insert(0, str(HERE))
    from report import paste, tables

    (HERE / "results").mkdir(exist_ok=True)
    failed = []
    for name in args.suites or list(SUITES):
        out = HERE / "results" / f"{name}.json"
        cmd = [sys.executable, "-m", "pytest", str(HERE / f"bench_{name}.py"), "-o",
               "python_files=bench_*.py", "-q", "-s", "--benchmark-only",
               f"--benchmark-json={out}", *shlex.split(args.pytest_args)]
        print("$", " ".join(cmd), flush=True)
        if subprocess.run(cmd, cwd=HERE.parent).returncode != 0:
            failed.append(name)
            continue
        text = tables(json.loads(out.read_text()), SUITES[name])
        paste(HERE / "RESULTS.md", name, text)
        print(text, flush=True)
    if failed:
        print(f"failed suites: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
