"""Backend discovery and selection: auto picks the fastest, nothing falls back silently."""
from __future__ import annotations

import re

import numpy as np
import pytest

import segkit
from segkit import _backend
from segkit._backend import BackendInfo, BackendUnavailableError


class FakeDeviceArray:
    """Looks like a GPU array to segkit (it has __cuda_array_interface__)."""
    __cuda_array_interface__ = {"shape": (2, 2), "typestr": "|u1", "data": (0, False),
                                "version": 3}


def test_backends_lists_all_with_reasons():
    infos = segkit.backends()
    assert list(infos) == ["numpy", "numba", "cpp", "cuda"]
    assert infos["numpy"].available
    for info in infos.values():
        assert isinstance(info, BackendInfo)
        assert info.available or info.reason  # unavailable ones say why


def test_auto_picks_cpp_for_host_arrays():
    assert _backend.resolve("auto", np.zeros((2, 2), np.uint8)) == "cpp"


def test_auto_skips_unavailable_cpu_backends(backend_probes):
    backend_probes["cpp"] = lambda: BackendInfo("cpp", False, "not built (test)")
    assert _backend.resolve("auto", np.zeros(1)) == "numba"
    backend_probes["numba"] = lambda: BackendInfo("numba", False, "no numba (test)")
    assert _backend.resolve("auto", np.zeros(1)) == "numpy"


def test_named_unavailable_backend_raises_with_reason(backend_probes):
    backend_probes["cpp"] = lambda: BackendInfo("cpp", False, "segkit._C is not built (test)")
    with pytest.raises(BackendUnavailableError, match=r"backend='cpp' is not available: "
                                                      r"segkit._C is not built \(test\)"):
        segkit.mode_filter(np.zeros((3, 3), np.uint8), backend="cpp")


def test_device_array_needs_cuda(backend_probes):
    backend_probes["cuda"] = lambda: BackendInfo("cuda", False, "no CUDA GPU (test)")
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
        _backend.resolve("auto", FakeDeviceArray())
    with pytest.raises(ValueError, match=r"backend='cpp' runs on the CPU but the input is on "
                                         r"a GPU"):
        _backend.resolve("cpp", FakeDeviceArray())


def test_cuda_probe_reports_why_here():
    info = _backend.backend_info("cuda")
    if info.available:
        pytest.skip("a GPU is present; the unavailable path is not reachable here")
    assert "CuPy" in info.reason or "GPU" in info.reason or "sources" in info.reason


def test_cpp_build_info():
    from segkit import _C

    info = _C.build_info()
    assert info["simd_best"] in ("base", "avx2", "avx512")
    assert info["simd_active"] == _C.simd_isa()
    with pytest.raises(ValueError, match="isa must be one of"):
        _C.set_simd_isa("sse9")


def test_simd_table_matches_the_compiler():
    """Each instruction set checks at run time every CPU feature its target string enables
    (as g++ reports them), so no kernel runs an instruction the CPU lacks."""
    import shutil
    import subprocess

    from segkit import _C

    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ is not installed: the target strings cannot be expanded here")
    table = _C.build_info()["simd_table"]
    assert [row["name"] for row in table] == ["base", "avx2", "avx512"]
    for row in table:
        flags = [f"-m{t}" for t in row["target"].split(",") if t]
        macros = subprocess.run([cxx, *flags, "-dM", "-E", "-x", "c++", "/dev/null"],
                                capture_output=True, text=True, check=True).stdout
        enabled = set()
        for line in macros.splitlines():
            name = line.split()[1]
            for f in ("SSE", "SSE2", "SSE3", "SSSE3", "SSE4_1", "SSE4_2", "POPCNT", "AVX", "AVX2",
                      "FMA", "F16C", "AVX512F", "AVX512VL", "AVX512BW", "AVX512DQ"):
                if name == f"__{f}__":
                    enabled.add(f.lower().replace("_", "."))
        assert set(row["features"]) == enabled, row["name"]
        assert row["supported"] == all(row["features"].values()), row["name"]
    best = [row["name"] for row in table if row["supported"]][-1]
    assert _C.build_info()["simd_best"] == best


def test_simd_report_names_what_is_missing():
    from segkit._backend import simd_report

    table = [{"name": "base", "features": {"sse2": True}},
             {"name": "avx512", "features": {"avx512f": True, "avx512dq": False}}]
    assert simd_report(table) == "; avx512 lacks avx512dq"
    assert "SIMD" in str(_backend.backend_info("cpp"))


def test_set_num_threads_roundtrip():
    old = segkit.get_num_threads()
    try:
        segkit.set_num_threads(1)
        assert segkit.get_num_threads() == 1
        out = segkit.mode_filter(np.eye(8, dtype=np.uint8))
        assert out.shape == (8, 8)
    finally:
        segkit.set_num_threads(0)
    assert segkit.get_num_threads() == old
    with pytest.raises(ValueError, match=r"n must be a non-negative integer, got -1"):
        segkit.set_num_threads(-1)


# ---- the one table of which op has which backend (issue 27) ----------------------------------
def test_the_readme_shows_the_backends_table():
    from pathlib import Path

    from segkit._backend import backends_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shown = re.search(r"<!-- backends -->\n(.*?)\n<!-- /backends -->", readme, re.S)
    assert shown and shown.group(1) == backends_table()
    assert "every kernel has four backends" not in readme.lower()


def test_each_op_takes_exactly_the_backends_of_the_table():
    """An op refuses a backend outside its row (naming the ones it has) and runs on every
    available one inside it."""
    import numpy as np

    import segkit
    from segkit import _backend
    from segkit.errors import InputError
    from segkit.ops.vote_confusion import settled_pixels

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (6, 7)).astype(np.uint8)
    probs = rng.dirichlet(np.ones(3), (6, 7)).transpose(2, 0, 1).astype(np.float32)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    calls = {
        "mode_filter": lambda b: segkit.mode_filter(labels, backend=b),
        "convcrf": lambda b: segkit.convcrf(probs[None], image[None], num_iter=1, backend=b),
        "soft_vote": lambda b: segkit.soft_vote([probs, probs], backend=b),
        "confusion_matrix": lambda b: segkit.confusion_matrix(labels, labels, 3, backend=b),
        "label_issues": lambda b: segkit.label_issues(labels, probs, backend=b),
        "label_quality": lambda b: segkit.label_quality(labels, probs, backend=b),
        "vote_confusion": lambda b: segkit.vote_confusion([probs], labels, [1], backend=b),
        "settled_pixels": lambda b: settled_pixels(probs.reshape(3, -1), 2.0, backend=b),
    }
    assert set(calls) | {"conv_crf (trainable)"} == set(_backend.OP_BACKENDS)
    for op, call in calls.items():
        have = _backend.OP_BACKENDS[op]
        for b in _backend.BACKENDS:
            if b not in have:
                with pytest.raises(InputError, match=r"backend must be one of 'auto', "
                                   + ", ".join(f"'{h}'" for h in have)):
                    call(b)
            elif _backend.backend_info(b).available:
                call(b)


def test_segkit_info_prints_the_backends_of_each_op():
    from click.testing import CliRunner

    from segkit import _backend
    from segkit.cli import main

    out = CliRunner().invoke(main, ["info", "--fast"]).output
    for op, have in _backend.OP_BACKENDS.items():
        assert re.search(rf"{re.escape(op)}\s+{re.escape(', '.join(have))}", out), op


# ---- the one op skeleton (issue 28 part 3) -------------------------------------------------
def test_the_docs_show_the_backends_table():
    """docs/development.md shows the table too (the same marked block as the README)."""
    from pathlib import Path

    from segkit._backend import backends_table

    page = (Path(__file__).resolve().parents[1] / "docs" / "development.md").read_text()
    shown = re.search(r"<!-- backends -->\n(.*?)\n<!-- /backends -->", page, re.S)
    assert shown and shown.group(1) == backends_table()


def test_each_op_module_declares_its_row():
    """The row an op dispatches through is the row of the table, and every runner is callable
    (a record of stage functions for label_issues)."""
    import dataclasses

    from segkit.ops import confusion, convcrf, label_issues, mode_filter, soft_vote
    from segkit.ops import vote_confusion

    rows = {"mode_filter": mode_filter.OP, "convcrf": convcrf.OP, "soft_vote": soft_vote.OP,
            "confusion_matrix": confusion.OP, "label_issues": label_issues.OP,
            "label_quality": label_issues.QUALITY_OP, "vote_confusion": vote_confusion.OP,
            "settled_pixels": vote_confusion.SETTLED_OP}
    for name, op in rows.items():
        assert _backend.OPS[name] is op and op.name == name
    assert list(_backend.OPS) == list(rows) + ["conv_crf (trainable)"]
    for op in _backend.OPS.values():
        assert op.backends == tuple(b for b in _backend.BACKENDS if b in op.runners)
        for runner in op.runners.values():
            if dataclasses.is_dataclass(runner):
                stages = {f.name: getattr(runner, f.name) for f in dataclasses.fields(runner)}
                assert all(callable(f) for f in stages.values() if f is not None), op.name
                assert all(stages[s] is not None for s in ("sums", "scores", "softmin", "flags"))
            else:
                assert callable(runner), op.name


def test_register_refuses_a_backend_that_does_not_exist():
    with pytest.raises(ValueError, match=r"op 'x': runners must be keyed by backends among"):
        _backend.register("x", {"gpu": lambda: None})
    with pytest.raises(ValueError, match=r"op 'x'"):
        _backend.register("x", {})
    assert "x" not in _backend.OPS


def _spy(monkeypatch, runners, backend, calls):
    """Replace `runners[backend]` (each stage of a record of stages) by a wrapper that records
    the call."""
    import dataclasses

    def wrap(f):
        def wrapper(*args, **kwargs):
            calls.append(backend)
            return f(*args, **kwargs)
        return wrapper

    real = runners[backend]
    if dataclasses.is_dataclass(real):
        new = dataclasses.replace(real, **{f.name: wrap(getattr(real, f.name))
                                           for f in dataclasses.fields(real)
                                           if getattr(real, f.name) is not None})
    else:
        new = wrap(real)
    monkeypatch.setitem(runners, backend, new)


@pytest.mark.parametrize("backend", ["numpy", "numba", "cpp"])
def test_every_op_runs_the_runner_its_row_names(monkeypatch, backend):
    """Replacing a runner in the table changes what the op runs: the table is the one place
    an op's backends are declared (no private dict beside it)."""
    from segkit.ops.vote_confusion import settled_pixels

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (5, 6)).astype(np.uint8)
    probs = rng.dirichlet(np.ones(3), (5, 6)).transpose(2, 0, 1).astype(np.float32)
    image = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    calls = {
        "mode_filter": lambda: segkit.mode_filter(labels, backend=backend),
        "convcrf": lambda: segkit.convcrf(probs, image, num_iter=1, backend=backend),
        "soft_vote": lambda: segkit.soft_vote([probs], backend=backend),
        "confusion_matrix": lambda: segkit.confusion_matrix(labels, labels, 3, backend=backend),
        "label_issues": lambda: segkit.label_issues(labels, probs, backend=backend),
        "label_quality": lambda: segkit.label_quality(labels, probs, backend=backend),
        "vote_confusion": lambda: segkit.vote_confusion([probs], labels, backend=backend),
        "settled_pixels": lambda: settled_pixels(probs.reshape(3, -1), 2.0, backend=backend),
    }
    for name, call in calls.items():
        op = _backend.OPS[name]
        if backend not in op.backends:
            continue
        expected = call()
        seen: list[str] = []
        with monkeypatch.context() as m:
            _spy(m, op.runners, backend, seen)
            got = call()
        assert seen and set(seen) == {backend}, name
        for a, b in zip(got if isinstance(got, tuple) else (got,),
                        expected if isinstance(expected, tuple) else (expected,)):
            np.testing.assert_array_equal(a, b)


def test_a_call_returns_the_kind_it_was_given():
    """Host backends: NumPy in, NumPy out (torch CPU tensors too, as the ops did before);
    the result's kind is the first converted input's."""
    torch = pytest.importorskip("torch")

    op = _backend.Op("twice", {"numpy": lambda x: 2 * x, "cpp": lambda x: 2 * x})
    with op.call("cpp", np.arange(3)) as call:
        assert call.backend == "cpp"
        out = call.back(call.runner(call.array(np.arange(3))))
    assert type(out) is np.ndarray and out.tolist() == [0, 2, 4]
    t = torch.arange(3.0, requires_grad=True)
    with op.call("auto", t) as call:
        x = call.array(t)
        assert type(x) is np.ndarray  # detached: no autograd error
        assert type(call.back(call.runner(x))) is np.ndarray
    with pytest.raises(ValueError, match=r"backend must be one of 'auto', 'numpy', 'cpp'; got "
                                         r"'numba'"):
        op.call("numba", np.arange(3))


def test_backends_of_follows_the_table():
    from .conftest import backends_of

    assert [p.values[0] for p in backends_of("vote_confusion")] == ["numpy", "numba"]
    assert [p.values[0] for p in backends_of("mode_filter", reference=False)] == \
        ["numba", "cpp", "cuda"]
    cuda = [p for p in backends_of("soft_vote") if p.values[0] == "cuda"]
    assert [m.name for m in cuda[0].marks] == ["needs_cuda"]


def test_auto_without_any_cpu_backend_of_the_op_says_why(backend_probes):
    """An op whose CPU backends are all unavailable (the trainable ConvCRF has only cpp on the
    host) gets a clear error from "auto", naming each one's reason, not a StopIteration."""
    backend_probes["cpp"] = lambda: BackendInfo("cpp", False, "not built (test)")
    with pytest.raises(BackendUnavailableError, match=r"none of this op's CPU backends "
                                                      r"\(cpp, cuda\).*cpp: not built \(test\)"):
        _backend.resolve("auto", np.zeros(1), among=("cpp", "cuda"))
