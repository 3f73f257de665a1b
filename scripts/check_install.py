"""Resolve segkit's full install from PyPI alone, for every supported Python on this machine.

What a new user meets: a machine whose pip reaches PyPI and nothing else. So the machine's pip
configuration is ignored (PIP_CONFIG_FILE=/dev/null, every PIP_* variable dropped: no find-links,
no extra index, no global constraint) and pip resolves, without installing,

    pip install --dry-run --ignore-installed -c constraints.txt ".[EXTRAS]"

for both stacks (the upstream mmseg line and the onedl line) in a throw-away virtual environment
per interpreter, with the pip that constraints.txt pins (its fast-deps reads each wheel's
metadata by HTTP range requests, so the dry run downloads no wheels). It fails naming the Python,
the stack and pip's conflict, and it fails when constraints.txt pins a package that torch (or
what torch pulls) pins for itself, the drift that broke the install once (nvidia-cuda-nvrtc).

    python3 scripts/check_install.py                    # every Python 3.11-3.13 found here
    python3 scripts/check_install.py --python python3.12 --stacks mmseg
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUPPORTED = ("3.11", "3.12", "3.13")
#: extras per stack; the two OpenMMLab lines share import names, so never in one environment
STACKS = {"mmseg": "dev,docs,mmseg,ray", "onedl": "dev,onedl,ray"}
#: The index here serves no PEP 658 metadata files, so a plain dry run downloads every wheel it
#: considers (CUDA torch and its nvidia-* libraries: about 3 GB per Python). pip's fast-deps reads
#: each wheel's METADATA through HTTP range requests instead: the same resolver, kilobytes.
FAST_DEPS = ("--use-feature=fast-deps",)
#: By default one resolution covers both stacks, `.[dev,mmseg,onedl,ray]`: pip knows no conflicts
#: between distributions (mmcv-lite and onedl-mmcv are different names), so a solution of the union
#: restricted to one stack's requirements is a solution of that stack, and the check costs one
#: dry run per Python instead of two.
PYPI = "https://pypi.org/simple"


def pypi_only_env() -> dict[str, str]:
    """The environment of a user whose pip knows PyPI only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1", PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    return env


def interpreter_version(python: str) -> str | None:
    """'3.12.1' for a working interpreter, else None (pyenv shims without that version fail)."""
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_interpreters(wanted=SUPPORTED) -> dict[str, str]:
    """minor version -> the newest interpreter found for it (pyenv, then PATH)."""
    candidates = []
    roots = {os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")}
    if shutil.which("pyenv"):
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
        roots.add(out.stdout.strip())
    for root in filter(None, roots):
        candidates += glob.glob(os.path.join(root, "versions", "3.*", "bin", "python3.*[0-9]"))
    for minor in wanted:
        for name in (f"python{minor}",):
            path = shutil.which(name)
            if path:
                candidates.append(path)
    found: dict[str, tuple[tuple[int, ...], str]] = {}
    for path in candidates:
        if not re.fullmatch(r"python3\.\d+", os.path.basename(path)):
            continue
        version = interpreter_version(path)
        if version is None:
            continue
        minor = ".".join(version.split(".")[:2])
        key = tuple(int(x) for x in version.split("."))
        if minor in wanted and (minor not in found or key > found[minor][0]):
            found[minor] = (key, os.path.realpath(path))
    return {minor: found[minor][1] for minor in sorted(found)}


def pinned(constraints: Path) -> dict[str, str]:
    """normalised name -> version for each `name==version` line of constraints.txt."""
    pins = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
        if m:
            pins[normalise(m.group(1))] = m.group(2)
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def conflict_lines(stderr: str) -> list[str]:
    """pip's own account of a failed resolution, without the progress noise."""
    keep, lines = False, []
    for line in stderr.splitlines():
        if line.startswith("ERROR:") or "conflict is caused by" in line:
            keep = True
        if keep and line.strip() and not line.startswith("To fix this") and \
                not re.match(r"\s*\d\. (loosen|remove)", line):
            lines.append(line.rstrip())
    return lines or stderr.strip().splitlines()[-15:]


def requirement_name(req: str) -> str:
    return normalise(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req).group(0))


def torch_pinned(report: dict) -> set[str]:
    """Packages that torch pins with == (cuda-toolkit, triton), and what those pin in turn
    (cuda-toolkit pins nvidia-cuda-nvrtc and the other nvidia-* packages)."""
    by_name = {normalise(item["metadata"]["name"]): item for item in report["install"]}
    todo, result = ["torch"], set()
    while todo:
        name = todo.pop()
        for req in by_name.get(name, {}).get("metadata", {}).get("requires_dist") or []:
            dep = requirement_name(req)
            exact = re.search(r"===?\s*[0-9]", req.split(";", 1)[0])
            if exact and dep in by_name and dep not in result:
                result.add(dep)
                todo.append(dep)
    return result


def check(minor: str, python: str, stacks: list[str], constraints: Path, work: Path) -> list[str]:
    """Problems for one interpreter (empty when every stack resolves)."""
    env = pypi_only_env()
    venv = work / f"venv{minor}"
    problems = []
    t0 = time.time()
    subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True, env=env)
    vpy = str(venv / "bin" / "python")
    pip_pin = pinned(constraints).get("pip")
    boot = subprocess.run([vpy, "-m", "pip", "install", "-q", "--index-url", PYPI,
                           f"pip=={pip_pin}" if pip_pin else "pip"],
                          capture_output=True, text=True, env=env)
    if boot.returncode:
        return [f"Python {minor} ({python}): cannot install pip {pip_pin} from PyPI:\n"
                + "\n".join(boot.stderr.strip().splitlines()[-5:])]
    config = subprocess.run([vpy, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            env=env)
    ours = {":env:.config-file", ":env:.disable-pip-version-check", ":env:.no-input"}
    foreign = [ln for ln in config.stdout.splitlines() if ln.split("=", 1)[0] not in ours]
    if foreign:  # the point of the check: nothing of this machine's pip configuration applies
        return [f"Python {minor}: pip still reads a configuration: {'; '.join(foreign)}"]
    pins = pinned(constraints)
    for stack in stacks:
        extras = ",".join(sorted({e for s in stack.split("+") for e in STACKS[s].split(",")}))
        report_path = work / f"report-{minor}-{stack}.json"
        cmd = [vpy, "-m", "pip", "install", "--dry-run", "--ignore-installed", *FAST_DEPS,
               "--index-url", PYPI, "--report", str(report_path), "-c", str(constraints),
               f"{ROOT}[{extras}]"]
        t1 = time.time()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, cwd=work)
        label = f"Python {minor} ({python}), stack {stack} [{extras}]"
        if proc.returncode:
            problems.append(f"{label}: the install does not resolve from PyPI:\n  "
                            + "\n  ".join(conflict_lines(proc.stdout)))
            continue
        report = json.loads(report_path.read_text())
        got = {normalise(i["metadata"]["name"]): i["metadata"]["version"]
               for i in report["install"]}
        bad = sorted(n for n in torch_pinned(report) if n in pins)
        if bad:
            named = ", ".join(f"{n}=={pins[n]}" for n in bad)
            problems.append(f"{label}: constraints.txt pins {named}, which torch pins for "
                            "itself; drop the pin")
        unpinned = sorted(n for n in got if n not in pins and n != "segkit"
                          and not n.startswith(("nvidia-", "cuda-", "triton")))
        torch = got.get("torch", "-")
        mm = " + ".join(f"{n} {got[n]}" for n in ("mmsegmentation", "onedl-mmsegmentation")
                        if n in got)
        print(f"  ok  {label}: {len(got)} packages, torch {torch}, {mm} "
              f"({time.time() - t1:.0f} s)" + (f"; not pinned: {', '.join(unpinned)}"
                                               if unpinned else ""), flush=True)
    print(f"  Python {minor}: {time.time() - t0:.0f} s", flush=True)
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", action="append", help="an interpreter to check (repeatable); "
                    "default: every CPython 3.11-3.13 found (pyenv, PATH)")
    ap.add_argument("--stacks", default="+".join(STACKS), help="comma-separated stacks, "
                    f"each one of {', '.join(STACKS)} or a union such as mmseg+onedl (the "
                    "default: one resolution for both)")
    ap.add_argument("--jobs", type=int, default=3, help="Pythons checked at once (the dry runs "
                    "wait on the network more than on the CPU)")
    ap.add_argument("--constraints", default=str(ROOT / "constraints.txt"))
    ap.add_argument("--find", metavar="3.X", help="print the path of the newest Python 3.X "
                    "found (pyenv, PATH) and exit (nothing printed, status 1, if none)")
    args = ap.parse_args(argv)
    if args.find:
        path = find_interpreters((args.find,)).get(args.find)
        if path:
            print(path)
        return 0 if path else 1
    stacks = [s for s in args.stacks.split(",") if s]
    for s in stacks:
        for part in s.split("+"):
            if part not in STACKS:
                ap.error(f"--stacks: unknown stack {part!r} (known: {', '.join(STACKS)})")
    if args.python:
        pythons = {}
        for p in args.python:
            version = interpreter_version(p)
            if version is None:
                ap.error(f"--python: {p!r} does not run")
            pythons[".".join(version.split(".")[:2])] = p
    else:
        pythons = find_interpreters()
        missing = [m for m in SUPPORTED if m not in pythons]
        if missing:
            print(f"check-install: no interpreter found for Python {', '.join(missing)} "
                  "(checked pyenv and PATH)", file=sys.stderr)
        if not pythons:
            return 1
    constraints = Path(args.constraints).resolve()
    print(f"check-install: PyPI only ({PYPI}), {constraints.name}, stacks {', '.join(stacks)}, "
          f"Pythons {', '.join(f'{m} ({p})' for m, p in pythons.items())}", flush=True)
    problems = []
    with tempfile.TemporaryDirectory(prefix="segkit-check-install-") as tmp:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = [pool.submit(check, minor, python, stacks, constraints, Path(tmp))
                       for minor, python in pythons.items()]
            for future in futures:
                problems += future.result()
    for problem in problems:
        print(f"check-install: FAIL {problem}", file=sys.stderr)
    if not problems:
        print("check-install: every stack resolves on every Python checked")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
