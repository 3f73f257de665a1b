"""Every CUDA source compiles: with nvcc from the checkout, as the inlined single string that
segkit hands to CuPy, and through NVRTC (the run-time compiler) where libnvrtc is present.
This runs without a GPU; the kernels' results are checked in the needs_cuda tests."""
from __future__ import annotations

import re
import subprocess

import pytest

from segkit import _config, _cuda

from . import nvrtc

SOURCES = _cuda.cuda_sources()
NVCC_ARCH = "sm_90"

#: Kernels each source must define (extern "C" names CuPy looks up).
EXPECTED_KERNELS = {
    "mode_filter": [f"mode_filter_{s}" for s in ("u8", "u16", "i32", "i64")],
    "confusion": [f"confusion_{s}" for s in ("u8", "u16", "i32", "i64")],
    "soft_vote": [f"soft_vote_{t}_{l}" for t in ("f16", "f32", "v8_f16", "v4_f32")
                  for l in ("u8", "u16")],
    # the forward of the one ConvCRF family (inference; the trainable op adds convcrf_grad's)
    "convcrf": ["crfg_prepare_u8", "crfg_prepare_f32", "crfg_unary", "crfg_start",
                "crfg_pass", "crfg_update"],
}


def test_sources_are_found():
    assert _cuda.source_root() is not None
    assert {p.stem for p in SOURCES} >= set(EXPECTED_KERNELS)


@pytest.mark.needs_nvcc
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_nvcc_compiles_checkout_source(src, tmp_path):
    root = _cuda.source_root()
    cmd = ["nvcc", f"-arch={NVCC_ARCH}", "-std=c++17", "-I", str(root), "-c", str(src),
           "-o", str(tmp_path / "k.o")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.needs_nvcc
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_nvcc_compiles_inlined_source(src, tmp_path):
    """The string CuPy receives stands alone: no include path, every kernel present."""
    code = _cuda.load_source(src.stem)
    assert "#include \"" not in code
    path = tmp_path / src.name
    path.write_text(code)
    result = subprocess.run(["nvcc", f"-arch={NVCC_ARCH}", "-std=c++17", "-ptx", str(path),
                             "-o", str(tmp_path / "k.ptx")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ptx = (tmp_path / "k.ptx").read_text()
    for name in EXPECTED_KERNELS.get(src.stem, []):
        assert re.search(rf"\.entry\s+{name}\s*\(", ptx), f"{name} missing from {src.name}"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_nvrtc_compiles_inlined_source(src):
    if nvrtc.find_library() is None:
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc, part of the dev extra)")
    ptx = nvrtc.compile_ptx(_cuda.load_source(src.stem),
                            _config.NVRTC_OPTIONS + ("--gpu-architecture=compute_90",), src.name)
    for name in EXPECTED_KERNELS.get(src.stem, []):
        assert re.search(rf"\.entry\s+{name}\s*\(", ptx), f"{name} missing from {src.name}"

