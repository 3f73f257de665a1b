"""Minimal ctypes binding of NVRTC, to compile segkit's CUDA sources exactly as CuPy would at
run time (same source string, same options) on a machine without a GPU."""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys


def find_library() -> str | None:
    found = ctypes.util.find_library("nvrtc")
    if found:
        return found
    patterns = []
    for base in sys.path:
        patterns += [os.path.join(base, "nvidia", "*", "lib", "libnvrtc.so*"),
                     os.path.join(base, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*")]
    patterns += ["/usr/local/cuda/lib64/libnvrtc.so*"]
    for pattern in patterns:
        hits = sorted(p for p in glob.glob(pattern) if "builtins" not in p)
        if hits:
            return hits[0]
    return None


def compile_ptx(source: str, options: tuple[str, ...], name: str = "segkit.cu") -> str:
    """PTX of `source`; raises RuntimeError with NVRTC's log on failure."""
    path = find_library()
    if path is None:
        raise FileNotFoundError("libnvrtc not found")
    lib = ctypes.CDLL(path)
    prog = ctypes.c_void_p()
    check = _checker(lib)
    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None,
                                 None), "create")
    try:
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        status = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        if status != 0:
            raise RuntimeError(f"NVRTC failed to compile {name}:\n{log.value.decode()}")
        check(lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "ptx size")
        ptx = ctypes.create_string_buffer(size.value)
        check(lib.nvrtcGetPTX(prog, ptx), "ptx")
        return ptx.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _checker(lib):
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def check(status, what):
        if status != 0:
            raise RuntimeError(f"nvrtc {what}: {lib.nvrtcGetErrorString(status).decode()}")

    return check
