"""The layers of GUIDE.md section 2, checked on the source text (``ast``, nothing imported).

Rules: (a) a job module never imports another job module's private names; (b) io, ops, the
references and the backends (and the other modules below the jobs) never import
``segkit.jobs``, nor the top-level package (which loads every job); (c) nothing below the
commands imports ``segkit.commands`` or ``segkit.cli``; (d) the import graph of the modules in
``segkit/jobs`` has no cycle, and a job module imports no other job module at all: what
several jobs share has its home in a shared module below them (``_common``, ``_stores``,
``_coco``, ``engine``, ``settings``...), so that jobs stand side by side; (e) no Python file
under ``segkit/`` is over 450 lines; (f) what is private to the ops and to io stays inside:
no module outside ``segkit.ops`` (``segkit.io``) imports a private module or name of it, and
only the ops reach the references and the Numba kernels (``segkit.reference``,
``segkit._numba``): the jobs, commands and the rest call the public ops; (g) the jobs reach
the ops through ``segkit.ops`` (or a module below it), never through the top-level package
``segkit``, which loads every job (``from segkit import _C`` and other private modules stay
allowed, as in (b)).

A job module is a public module of ``segkit/jobs`` other than ``engine`` and ``settings``;
private modules (a leading underscore) are shared helpers or the helpers of one job.

Every rule is checked for every module. ``ALLOWED`` lists, by name, offences tolerated for a
while (empty now), each with its reason; an entry that no longer matches an offence fails the
test, so it cannot go stale.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "segkit"
MAX_LINES = 450
MAX_NATIVE_LINES = 400

#: Modules of segkit/jobs that several jobs share (not jobs themselves).
SHARED_JOB_MODULES = {"engine", "settings"}
#: Packages and modules below the jobs (rule b) besides io, ops, reference and _numba.
LOWER_MODULES = {"segkit._backend", "segkit._cuda", "segkit._config", "segkit._env",
                 "segkit._validate", "segkit.errors", "segkit.palette", "segkit.viz",
                 "segkit.synthetic", "segkit.torch"}
LOWER_PACKAGES = ("segkit.io", "segkit.ops", "segkit.reference", "segkit._numba")

#: Offences that helper T's branch removes (tune.py is split and stops being imported by
#: ensemble for its settings). The lead empties this at merge time.
ALLOWED: set[str] = set()  # every offence is fixed; an entry here needs its reason beside it


@dataclass(frozen=True)
class Import:
    """One import statement's target in a module: `module` imported whole (`name` None) or
    `name` taken from it; `line` for messages."""
    module: str
    name: str | None
    line: int


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def from_module(node: ast.ImportFrom, here: str) -> str:
    """The absolute module of ``from X import ...`` written in package `here`."""
    if not node.level:
        return node.module or ""
    base = here.split(".")
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, source: str, package: bool, known: set[str]) -> list[Import]:
    """Every import in `source` (module `name`), function-level ones included, with relative
    imports resolved; ``from pkg import sub`` where ``pkg.sub`` is a module in `known` counts as
    importing that module."""
    tree = ast.parse(source)
    here = name if package else name.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = from_module(node, here)
            for a in node.names:
                sub = f"{mod}.{a.name}"
                if sub in known:
                    found.append(Import(sub, None, node.lineno))
                else:
                    found.append(Import(mod, a.name, node.lineno))
    return found


def private_attributes(source: str, aliases: dict[str, str]) -> list[tuple[str, str, int]]:
    """``alias._name`` uses in `source` where `alias` names an imported module:
    (module, name, line)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            out.append((aliases[node.value.id], node.attr, node.lineno))
    return out


def module_aliases(source: str, name: str, package: bool, known: set[str]) -> dict[str, str]:
    """Local names bound to modules of `known` by the imports of `source`."""
    here = name if package else name.rpartition(".")[0]
    aliases = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and a.name in known:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            mod = from_module(node, here)
            for a in node.names:
                if f"{mod}.{a.name}" in known:
                    aliases[a.asname or a.name] = f"{mod}.{a.name}"
    return aliases


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def is_job_module(module: str) -> bool:
    """A public module of segkit/jobs that is a job (not the engine nor the settings)."""
    if not module.startswith("segkit.jobs."):
        return False
    last = module.split(".")[2]
    return not last.startswith("_") and last not in SHARED_JOB_MODULES


#: Packages whose private modules and names no module outside them may import (rule f).
SEALED_PACKAGES = ("segkit.ops", "segkit.io")
#: What only the ops (and these packages themselves) may import (rule f).
KERNEL_PACKAGES = ("segkit.reference", "segkit._numba")


def is_private_of(target: str, name: str | None, package: str) -> bool:
    """Whether importing `name` from `target` (or `target` itself) reaches a private module or
    name of `package`."""
    if not within(target, package):
        return False
    parts = target[len(package):].split(".")[1:]
    return any(p.startswith("_") for p in parts) or bool(
        name and name.startswith("_") and not name.startswith("__"))


def is_lower(module: str) -> bool:
    return module in LOWER_MODULES or any(within(module, p) for p in LOWER_PACKAGES)


def check(sources: dict[str, tuple[str, bool]], lines: dict[str, int] | None = None,
          paths: dict[str, str] | None = None) -> list[str]:
    """Every offence against rules (a) to (g) in `sources` ({module: (source, is_package)}),
    as sorted strings: 'private: A imports B._x', 'down: A imports B', 'cycle: A -> B -> A',
    'job: A imports B', 'kernel: A imports B', 'top: A imports segkit', 'size: path'. `lines` and `paths` give the line count and display
    path of each module (rule e)."""
    known = set(sources)
    offences: set[str] = set()
    graph: dict[str, set[str]] = {m: set() for m in known if within(m, "segkit.jobs")}
    for mod, (source, package) in sources.items():
        found = imports_of(mod, source, package, known)
        aliases = module_aliases(source, mod, package, known)
        jobs_side = within(mod, "segkit.jobs")
        for imp in found:
            target = imp.module
            # (a) private names of another job module
            if (jobs_side and imp.name and imp.name.startswith("_")
                    and not imp.name.startswith("__") and is_job_module(target)
                    and target != mod):
                offences.add(f"private: {mod} imports {target}.{imp.name}")
            # (b) below the jobs: no segkit.jobs, no top-level segkit (it loads the jobs)
            if is_lower(mod):
                # `from segkit import _C` (the extension) and other private modules are fine
                top_level = target == "segkit" and not (imp.name and imp.name.startswith("_"))
                if within(target, "segkit.jobs") or top_level:
                    what = target if imp.name is None else f"{target}.{imp.name}"
                    offences.add(f"down: {mod} imports {what}")
            # (g) the jobs reach the ops through segkit.ops (or the module below), never through
            # the top-level package, which loads every job
            if jobs_side and target == "segkit" and not (imp.name and imp.name.startswith("_")):
                what = target if imp.name is None else f"{target}.{imp.name}"
                offences.add(f"top: {mod} imports {what}")
            # (c) nothing below the commands imports the commands or the CLI
            if (is_lower(mod) or jobs_side) and (within(target, "segkit.commands")
                                                 or within(target, "segkit.cli")):
                offences.add(f"down: {mod} imports {target}")
            # (d) jobs stand side by side: no job module imports another
            if is_job_module(mod) and is_job_module(target) and target != mod:
                offences.add(f"job: {mod} imports {target}")
            # (d) edges of the jobs' import graph
            if jobs_side and within(target, "segkit.jobs") and target in graph and target != mod:
                graph[mod].add(target)
            # (f) private to the ops and io; the kernels only through the ops
            for package in SEALED_PACKAGES:
                if not within(mod, package) and is_private_of(target, imp.name, package):
                    what = target if imp.name is None else f"{target}.{imp.name}"
                    offences.add(f"private: {mod} imports {what}")
            if any(within(target, k) for k in KERNEL_PACKAGES) and not any(
                    within(mod, p) for p in ("segkit.ops",) + KERNEL_PACKAGES):
                offences.add(f"kernel: {mod} imports {target}")
        if jobs_side:
            for target, attr, _ in private_attributes(source, aliases):
                if is_job_module(target) and target != mod:
                    offences.add(f"private: {mod} imports {target}.{attr}")
    offences.update(f"cycle: {' -> '.join(c)}" for c in cycles(graph))
    for mod, count in (lines or {}).items():
        if count > MAX_LINES:
            offences.add(f"size: {(paths or {}).get(mod, mod)}")
    return sorted(offences)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (or a module that
    imports itself), as a path that starts and ends at its smallest module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for comp in components:
        members = set(comp)
        start = min(comp)
        # walk inside the component back to the start (breadth first, shortest)
        prev: dict[str, str] = {}
        frontier = [start]
        end = None
        while frontier and end is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        end = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if end is not None:
                    break
            frontier = nxt
        path = [start]
        v = end
        while v is not None and v != start:
            path.insert(1, v)
            v = prev.get(v)
        out.append(path + [start])
    return out


def tree_sources() -> tuple[dict[str, tuple[str, bool]], dict[str, int], dict[str, str]]:
    sources, lines, paths = {}, {}, {}
    for path in sorted(ROOT.rglob("*.py")):
        mod = module_name(path, ROOT)
        text = path.read_text(encoding="utf-8")
        sources[mod] = (text, is_package(path))
        lines[mod] = len(text.splitlines())
        paths[mod] = str(path.relative_to(ROOT.parent))
    return sources, lines, paths


# ---- the real tree -----------------------------------------------------------------------


def test_the_tree_keeps_its_layers():
    sources, lines, paths = tree_sources()
    assert "segkit.jobs.ensemble" in sources and "segkit.ops.soft_vote" in sources
    offences = set(check(sources, lines, paths))
    assert sorted(offences - ALLOWED) == []


def test_no_native_source_is_over_400_lines():
    """csrc/README.md's rule for the C++ and CUDA sources, as rule (e) is for Python."""
    csrc = ROOT.parent / "csrc"
    sources = [p for p in csrc.rglob("*") if p.suffix in (".cpp", ".h", ".cu", ".cuh")]
    assert len(sources) > 10
    long = {str(p.relative_to(csrc)): n for p in sources
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_NATIVE_LINES}
    assert long == {}


def test_the_allowlist_names_only_current_offences():
    sources, lines, paths = tree_sources()
    offences = set(check(sources, lines, paths))
    assert sorted(ALLOWED - offences) == [], "empty these entries from ALLOWED"


# ---- each rule can fail: fake modules that break it ----------------------------------------


def fake(**modules: str) -> dict[str, tuple[str, bool]]:
    """{dotted.name: source}, with the packages above them as empty __init__ sources."""
    out = {}
    for mod, source in modules.items():
        out[mod.replace("__", ".")] = (source, False)
    for mod in list(out):
        parts = mod.split(".")
        for i in range(1, len(parts)):
            out.setdefault(".".join(parts[:i]), ("", True))
    return out


def test_private_name_of_another_job_is_caught():
    src = fake(segkit__jobs__tune="def _helper(): pass\n",
               segkit__jobs__ensemble="from .tune import _helper\n",
               segkit__jobs___common="from .tune import _helper\n")
    assert check(src) == ["job: segkit.jobs.ensemble imports segkit.jobs.tune",
                          "private: segkit.jobs._common imports segkit.jobs.tune._helper",
                          "private: segkit.jobs.ensemble imports segkit.jobs.tune._helper"]


def test_private_name_through_a_module_alias_is_caught():
    src = fake(segkit__jobs__tune="",
               segkit__jobs___audit_page="def f():\n    from . import tune as t\n    return t._x\n")
    assert check(src) == ["private: segkit.jobs._audit_page imports segkit.jobs.tune._x"]


def test_private_names_of_shared_modules_are_fine():
    src = fake(segkit__jobs___common="", segkit__jobs__engine="", segkit__jobs__settings="",
               segkit__jobs___ensemble_page="",
               segkit__jobs__ensemble=("from ._common import _x\nfrom .engine import _y\n"
                                       "from .settings import _z\n"
                                       "from ._ensemble_page import _w\n"))
    assert check(src) == []


def test_a_job_importing_another_job_is_caught():
    src = fake(segkit__jobs__tune="", segkit__jobs__evaluate="",
               segkit__jobs__ensemble="def f():\n    from .tune import load_tuned\n",
               segkit__jobs__resample="from segkit.jobs import evaluate\n")
    assert check(src) == ["job: segkit.jobs.ensemble imports segkit.jobs.tune",
                          "job: segkit.jobs.resample imports segkit.jobs.evaluate"]


@pytest.mark.parametrize("lower", ["segkit.io.coco", "segkit.ops.soft_vote",
                                   "segkit.reference.convcrf", "segkit._numba.convcrf",
                                   "segkit._cuda", "segkit._backend", "segkit.synthetic"])
@pytest.mark.parametrize("statement", [
    "from segkit.jobs.masks import coco_to_masks\n",
    "def f():\n    import segkit.jobs.masks\n",
    "def f():\n    from segkit import coco_to_masks\n",
    "import segkit\n",
])
def test_lower_layers_importing_jobs_are_caught(lower, statement):
    src = fake(**{lower.replace(".", "__"): statement}, segkit__jobs__masks="")
    offences = check(src)
    assert len(offences) == 1 and offences[0].startswith(f"down: {lower} imports segkit")


def test_relative_import_of_the_jobs_from_below_is_caught():
    src = fake(segkit__ops__soft_vote="def f():\n    from ..jobs import ensemble\n",
               segkit__jobs__ensemble="")
    assert check(src) == ["down: segkit.ops.soft_vote imports segkit.jobs.ensemble"]


def test_lower_layers_may_import_sibling_modules_through_the_package():
    src = fake(segkit__ops__soft_vote="from .. import _backend, _validate\n",
               segkit___backend="", segkit___validate="")
    assert check(src) == []


@pytest.mark.parametrize("mod", ["segkit.jobs.audit", "segkit.io.store"])
def test_importing_the_commands_from_below_is_caught(mod):
    src = fake(**{mod.replace(".", "__"): "def f():\n    from segkit.commands import audit\n"},
               segkit__commands__audit="")
    assert check(src) == [f"down: {mod} imports segkit.commands.audit"]


def test_cli_import_from_a_job_is_caught():
    src = fake(segkit__jobs__masks="from ..cli import main\n", segkit__cli="")
    assert check(src) == ["down: segkit.jobs.masks imports segkit.cli"]


def test_import_cycle_between_jobs_is_caught():
    src = fake(segkit__jobs__ensemble="from .tune import load_tuned\n",
               segkit__jobs__tune="def f():\n    from .ensemble import ensemble\n")
    assert check(src) == ["cycle: segkit.jobs.ensemble -> segkit.jobs.tune -> segkit.jobs.ensemble",
                          "job: segkit.jobs.ensemble imports segkit.jobs.tune",
                          "job: segkit.jobs.tune imports segkit.jobs.ensemble"]


def test_longer_cycle_through_a_shared_module_is_caught():
    src = fake(segkit__jobs__a="from ._common import x\n",
               segkit__jobs___common="from .b import y\n",
               segkit__jobs__b="from . import a\n")
    assert check(src) == ["cycle: segkit.jobs._common -> segkit.jobs.b -> segkit.jobs.a "
                          "-> segkit.jobs._common", "job: segkit.jobs.b imports segkit.jobs.a"]


def test_imports_that_go_one_way_are_no_cycle():
    src = fake(segkit__jobs__ensemble="from .settings import load_tuned\n",
               segkit__jobs__tune="from .settings import load_tuned\nfrom ._stores import m\n",
               segkit__jobs__settings="from ._stores import r\n",
               segkit__jobs__evaluate="from ._stores import r\n", segkit__jobs___stores="")
    assert check(src) == []


def test_long_file_is_caught():
    src = fake(segkit__jobs__tune="")
    assert check(src, {"segkit.jobs.tune": 451}, {"segkit.jobs.tune": "segkit/jobs/tune.py"}) \
        == ["size: segkit/jobs/tune.py"]
    assert check(src, {"segkit.jobs.tune": 450}) == []


@pytest.mark.parametrize("statement, offence", [
    ("from segkit.ops.soft_vote import _check_weights\n",
     "private: segkit.jobs.ensemble imports segkit.ops.soft_vote._check_weights"),
    ("from ..ops import _label_issues_backends\n",
     "private: segkit.jobs.ensemble imports segkit.ops._label_issues_backends"),
    ("def f():\n    from ..io.coco.checks import _read_json\n",
     "private: segkit.jobs.ensemble imports segkit.io.coco.checks._read_json"),
    ("from ..reference.vote_confusion import bias_scale\n",
     "kernel: segkit.jobs.ensemble imports segkit.reference.vote_confusion"),
    ("def f():\n    from .._numba import soft_vote\n",
     "kernel: segkit.jobs.ensemble imports segkit._numba.soft_vote"),
])
def test_reaching_past_the_public_ops_is_caught(statement, offence):
    src = fake(segkit__jobs__ensemble=statement, segkit__ops__soft_vote="",
               segkit__ops___label_issues_backends="", segkit__io__coco__checks="",
               segkit__reference__vote_confusion="", segkit___numba__soft_vote="")
    assert check(src) == [offence]


@pytest.mark.parametrize("statement, offence", [
    ("def f():\n    import segkit\n", "top: segkit.jobs.ensemble imports segkit"),
    ("def f():\n    from segkit import soft_vote\n",
     "top: segkit.jobs.ensemble imports segkit.soft_vote"),
    ("from .. import soft_vote\n", "top: segkit.jobs.ensemble imports segkit.soft_vote"),
])
def test_a_job_reaching_the_ops_through_the_top_level_package_is_caught(statement, offence):
    src = fake(segkit__jobs__ensemble=statement, segkit__ops__soft_vote="")
    assert check(src) == [offence]


def test_a_job_reaching_the_ops_through_segkit_ops_is_fine():
    src = fake(segkit__jobs__ensemble=("from ..ops.soft_vote import soft_vote\n"
                                       "def f():\n    from segkit.ops import soft_vote\n"
                                       "from .. import _backend\n"),
               segkit__ops__soft_vote="", segkit___backend="")
    assert check(src) == []


def test_the_ops_may_use_their_private_modules_and_the_kernels():
    src = fake(segkit__ops__label_issues=("from ._label_issues_backends import STAGES\n"
                                          "from ..reference.label_issues import sums\n"
                                          "def f():\n    from .._numba import label_issues\n"),
               segkit__ops___label_issues_backends="from .._numba import label_issues\n",
               segkit__reference__label_issues="", segkit___numba__label_issues="",
               segkit__io__coco="from .checks import _read_json\n",
               segkit__io__coco__checks="")
    assert check(src) == []
