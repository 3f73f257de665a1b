"""Run the benchmark suites and paste their tables into benchmarks/RESULTS.md.

    python benchmarks/run.py                 # every suite (what `make bench` does)
    python benchmarks/run.py convcrf resample
    python benchmarks/run.py --pytest-args "--benchmark-min-rounds=3"
    python benchmarks/run.py label_issues --baseline main --alternate 5 \
        --pytest-args "--benchmark-min-rounds=1 --benchmark-max-time=0 -k segkit"

Each suite is `benchmarks/bench_<name>.py`; its JSON goes to `benchmarks/results/<name>.json`
and its tables, with ratios against the listed peers, between the `<!-- bench:<name> -->`
markers of RESULTS.md (see report.py).

**Against the last landed main** (``--baseline REF``, default ``main``; ``none`` skips it):
every suite also runs on a build of REF, in the same run, so that a change that makes one
kernel faster and another slower shows. REF is checked out (``git archive``) and its extension
built once into ``benchmarks/.baseline/<sha>/`` (ignored by git); its ``segkit`` alone is put
first on the path of the baseline's pytest (``--import-mode=append``, so the suite's code is
this tree's and only the package measured differs; ``PYTHONSAFEPATH`` keeps ``python -m``
from putting this tree first, and the run checks which segkit it imports). The two builds
alternate, suite by suite,
`--alternate` times; pytest-benchmark saves the baseline's run and compares this tree's with it
(its own table, in the output), and the best (minimum) time of each benchmark over all runs of
each build goes into RESULTS.md between the ``<!-- bench:<name>:vs-main -->`` markers, with
the ratio and a SLOWER mark where this tree takes more than ``--slower`` (default 1.10) times
the baseline's time. ``--fail-slower`` makes such a mark fail the run.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
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
    "machine": [],
}


def baseline_site(ref: str) -> tuple[Path, str]:
    """(a folder holding only REF's ``segkit`` package, with its extension built; REF's sha),
    built once per sha under benchmarks/.baseline/."""
    repo = HERE.parent
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=repo,
                         capture_output=True, text=True)
    if sha.returncode != 0:
        raise SystemExit(f"--baseline {ref}: not a commit here ({sha.stderr.strip()})")
    sha = sha.stdout.strip()
    root = HERE / ".baseline" / sha[:12]
    tree, site = root / "tree", root / "site"
    if not (root / "built").is_file():
        print(f"building the baseline {ref} ({sha[:12]}) in {root} (once per sha)", flush=True)
        shutil.rmtree(root, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha], cwd=repo, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree,
                       check=True, stdout=subprocess.DEVNULL)
        site.mkdir()
        (site / "segkit").symlink_to(tree / "segkit", target_is_directory=True)
        (root / "built").write_text(sha + "\n")
    return site, sha


def baseline_env(site: Path) -> dict:
    """The environment of a run on the baseline: its segkit first on the path, and not the
    working directory (``python -m`` would put this tree's segkit before it: PYTHONSAFEPATH);
    checked by importing it."""
    env = dict(os.environ, PYTHONSAFEPATH="1")
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    found = subprocess.run([sys.executable, "-c", "import segkit; print(segkit.__file__)"],
                           cwd=HERE.parent, env=env, capture_output=True, text=True)
    if not found.stdout.strip().startswith(str(site)):
        raise SystemExit(f"the baseline run would import segkit from {found.stdout.strip()!r} "
                         f"{found.stderr[-500:]}, not from {site}")
    return env


def _pytest(name: str, out: Path, pytest_args: str, site: Path | None, extra=()) -> bool:
    """One run of suite `name` (on the baseline's segkit when `site` is given)."""
    cmd = [sys.executable, "-m", "pytest", str(HERE / f"bench_{name}.py"), "-o",
           "python_files=bench_*.py", "-q", "-s", "--benchmark-only",
           f"--benchmark-json={out}", *shlex.split(pytest_args), *extra]
    env = dict(os.environ)
    if site is not None:  # its segkit first; this tree's suite code
        cmd.append("--import-mode=append")
        env = baseline_env(site)
    print("$", ("PYTHONPATH=" + str(site) + " ") * (site is not None) + " ".join(cmd),
          flush=True)
    return subprocess.run(cmd, cwd=HERE.parent, env=env).returncode == 0


def best_times(paths: list[Path]) -> dict[str, tuple[float, dict]]:
    """name -> (the minimum over every run's minimum, the benchmark's record)."""
    best: dict[str, tuple[float, dict]] = {}
    for path in paths:
        if not path.is_file():
            continue
        for b in json.loads(path.read_text())["benchmarks"]:
            t = b["stats"]["min"] * b["extra_info"].get("scale", 1)
            if b["name"] not in best or t < best[b["name"]][0]:
                best[b["name"]] = (t, b)
    return best


def compare_table(ours: dict, theirs: dict, ref: str, sha: str, runs: int,
                  slower: float) -> tuple[str, list[str]]:
    """Markdown: each benchmark's best time here and on the baseline, their ratio; and the
    names of those slower than `slower` times the baseline."""
    import datetime
    import platform

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"This tree against {ref} ({sha[:12]}), built side by side and run alternately in "
             f"one `make bench` ({runs} run(s) of each; best time of all rounds), {when}, "
             f"{platform.node() or 'this machine'} ({os.cpu_count()} cores).", "",
             "| benchmark | this tree | " + ref + " | this / " + ref + " |",
             "|---|---:|---:|---:|"]
    slow = []
    for name in sorted(set(ours) & set(theirs)):
        a, b = ours[name][0], theirs[name][0]
        impl = ours[name][1]["extra_info"].get("impl", name)
        group = ours[name][1].get("group") or ""
        mark = ""
        if a > slower * b:
            mark, _ = " SLOWER", slow.append(name)
        lines.append(f"| {group}: {impl} | {a * 1e3:,.2f} ms | {b * 1e3:,.2f} ms | "
                     f"{a / b:.2f}{mark} |")
    only = sorted(set(ours) ^ set(theirs))
    if only:
        lines += ["", f"Not in both runs: {', '.join(only)}."]
    return "\n".join(lines), slow


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suites", nargs="*", metavar="SUITE", default=[],
                    help=f"suites to run: {', '.join(SUITES)} (default: all)")
    ap.add_argument("--pytest-args", default="--benchmark-min-rounds=5 --benchmark-max-time=1")
    ap.add_argument("--baseline", default="main",
                    help="git ref to compare with, built side by side (default main; none)")
    ap.add_argument("--alternate", type=int, default=1,
                    help="runs of each build, alternating (default 1)")
    ap.add_argument("--slower", type=float, default=1.10,
                    help="mark a benchmark SLOWER above this ratio to the baseline")
    ap.add_argument("--fail-slower", action="store_true",
                    help="exit 1 when a benchmark is marked SLOWER")
    args = ap.parse_args()
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        ap.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    sys.path.insert(0, str(HERE))
    from report import paste, tables

    (HERE / "results").mkdir(exist_ok=True)
    site = sha = None
    if args.baseline.lower() != "none":
        site, sha = baseline_site(args.baseline)
    storage = f"--benchmark-storage=file://{HERE / '.baseline' / 'storage'}"
    failed, slower = [], []
    partial = "-k" in shlex.split(args.pytest_args)
    for name in args.suites or list(SUITES):
        out = HERE / "results" / f"{name}.json"
        ours, theirs, ok = [], [], True
        for k in range(max(1, args.alternate)):
            if site is not None:
                base = HERE / "results" / f"{name}.{sha[:12]}.{k}.json"
                if _pytest(name, base, args.pytest_args, site,
                           (storage, f"--benchmark-save={name}-{sha[:12]}")):
                    theirs.append(base)
            here = out if k == 0 else HERE / "results" / f"{name}.{k}.json"
            compare = (storage, "--benchmark-compare") if theirs else ()
            ok = _pytest(name, here, args.pytest_args, None, compare) and ok
            ours.append(here)
        if not ok:
            failed.append(name)
            continue
        text = tables(json.loads(out.read_text()), SUITES[name])
        if partial:  # a subset (-k) must not replace the whole suite's tables
            print("(a subset of the suite: its tables are not pasted into RESULTS.md)")
        else:
            paste(HERE / "RESULTS.md", name, text)
        print(text, flush=True)
        if theirs:
            table, slow = compare_table(best_times(ours), best_times(theirs), args.baseline,
                                        sha, len(ours), args.slower)
            paste(HERE / "RESULTS.md", f"{name}:vs-main", table)
            print(table, flush=True)
            slower += [f"{name}: {s}" for s in slow]
    if failed:
        print(f"failed suites: {', '.join(failed)}", file=sys.stderr)
    if slower:
        print(f"slower than {args.baseline} (x{args.slower}): {'; '.join(slower)}",
              file=sys.stderr)
    return 1 if failed or (slower and args.fail_slower) else 0


if __name__ == "__main__":
    sys.exit(main())
