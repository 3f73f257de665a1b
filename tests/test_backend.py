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
