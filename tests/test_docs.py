"""The docs site's API reference covers the public API, every public object has a docstring,
and the user guide has a page per job. (`make docs` builds the site with warnings as errors:
numpydoc's GL08 check fails the build on an object without a docstring that reaches a page.)"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
JOBS = ["masks", "resample", "kfold", "train", "infer", "ensemble", "tune", "audit", "crf", "eval"]


def api_entries() -> set[str]:
    """Full names of the autosummary entries of docs/api.rst (after each currentmodule)."""
    names, module, in_summary = set(), "", False
    for line in (DOCS / "api.rst").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\.\. currentmodule:: (\S+)", line)
        if m:
            module = m.group(1)
            continue
        if line.startswith(".. autosummary::"):
            in_summary = True
            continue
        if in_summary:
            if line.strip().startswith(":") or not line.strip():
                continue
            if line.startswith("   "):
                names.add(f"{module}.{line.strip()}")
                continue
            in_summary = False
    return names


def resolve(name: str):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


def own_doc(obj) -> str:
    return (obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__) or ""


def check_public(module_name: str, names) -> list[str]:
    entries = api_entries()
    problems = []
    for name in names:
        if name.startswith("__"):
            continue
        full = f"{module_name}.{name}"
        if full not in entries:
            problems.append(f"{full} is not in docs/api.rst")
        obj = getattr(importlib.import_module(module_name), name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not own_doc(obj).strip():
            problems.append(f"{full} has no docstring")
    return problems


def test_api_lists_every_public_name_of_segkit():
    import segkit

    assert not check_public("segkit", segkit.__all__)


def test_api_lists_segkit_torch():
    pytest.importorskip("torch", reason="segkit.torch needs torch (the mmseg or dev extra)")
    import segkit.torch

    assert not check_public("segkit.torch", segkit.torch.__all__)


def test_api_lists_segkit_mmseg():
    pytest.importorskip("mmseg", reason="segkit.mmseg needs mmsegmentation (the mmseg extra)")
    import segkit.mmseg

    assert not check_public("segkit.mmseg", segkit.mmseg.__all__)


def test_api_entries_resolve():
    """A name that moved or was renamed fails here before it fails the docs build."""
    missing = []
    for name in sorted(api_entries()):
        if name.startswith(("segkit.torch", "segkit.mmseg")):
            continue  # checked above where torch / mmseg are installed
        try:
            resolve(name)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{name}: {exc}")
    assert not missing


def test_every_public_object_of_segkit_io_has_a_docstring():
    """docs/api.rst documents segkit.io recursively: each module's own public functions and
    classes appear, so each needs a docstring."""
    import segkit.io

    undocumented = []
    for info in pkgutil.walk_packages(segkit.io.__path__, "segkit.io."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        if not (module.__doc__ or "").strip():
            undocumented.append(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", None) == info.name and not own_doc(obj).strip():
                undocumented.append(f"{info.name}.{name}")
    assert not undocumented


def test_user_guide_has_a_page_per_job():
    toc = (DOCS / "guide" / "index.md").read_text(encoding="utf-8")
    for job in JOBS:
        page = DOCS / "guide" / f"{job}.md"
        assert page.exists(), page
        assert re.search(rf"^{job}$", toc, re.M), f"docs/guide/index.md does not list {job}"
        assert page.read_text(encoding="utf-8").startswith(f"# {job}"), page


def test_benchmarks_page_includes_results():
    text = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    assert "{include} ../benchmarks/RESULTS.md" in text
    assert (ROOT / "benchmarks" / "RESULTS.md").exists()
