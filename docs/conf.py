"""Sphinx configuration of segkit's documentation (`make docs`; docs/README.md says why Sphinx).

The build is offline and strict: `make docs` runs sphinx-build with -W (warnings are errors),
-n (nitpicky: every cross-reference must resolve) and --keep-going (all warnings at once).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # segkit.mmseg imports albumentations

import segkit  # noqa: E402

project = "segkit"
author = "the segkit authors"
copyright = "2026, the segkit authors"
release = version = segkit.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# --- API reference: generated from the docstrings (docs/api.rst names the public objects) ---
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"          # numpydoc's Parameters sections carry the types
autodoc_member_order = "bysource"
# Methods that only override a base class (mmengine hooks, nn.Module) are not listed with the
# base class's docstring: segkit documents what it adds.
autodoc_inherit_docstrings = False
autodoc_default_options = {"exclude-members": "__init__, __new__"}
numpydoc_show_class_members = False  # the class template lists members through autodoc
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# An object that reaches the API pages without a docstring fails the build (GL08); the rest of
# numpydoc's style checks are not enforced (tests/test_docs.py checks the public names).
numpydoc_validation_checks = {"GL08"}

# --- Markdown pages (MyST) ---
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings = [
    # benchmarks/RESULTS.md and the guide link to source files of the repository (bench_*.py,
    # scripts/*): they are not documents, and the links are right on GitHub.
    "myst.xref_missing",
]

# --- Nitpicky, offline: no intersphinx inventories can be fetched, so references to other
# projects' types (numpy, torch, pathlib, ...) cannot resolve; they are ignored by name. Every
# reference into segkit itself must resolve.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|torch|cupy|pathlib|os|typing|collections|mmengine|mmseg|mmcv|ray|PIL|click)(\..*)?"),
    (r"py:.*", r"(Path|PathLike|Iterable|Iterator|Sequence|Mapping|Callable|Any|ndarray|array_like|array-like)"),
]

# --- HTML ---
html_theme = "pydata_sphinx_theme"
html_title = "segkit"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False


# docs/demo.md (the demo's page, with its pictures) comes from the demo's own stream: the index
# lists it when it exists, so that the build stays strict either way.
DEMO_PAGE = Path(__file__).resolve().parent / "demo.md"


def _list_demo_page(app, docname, source):
    if docname == "index" and DEMO_PAGE.exists():
        source[0] = source[0].replace("\nbenchmarks\n", "\nbenchmarks\ndemo\n", 1)


def setup(app):
    app.connect("source-read", _list_demo_page)
