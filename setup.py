"""Build segkit._C, the pybind11 + OpenMP extension, from csrc/.

Portable by design: the module is compiled for baseline x86-64 (or the host's baseline on other
architectures); the SIMD kernels carry their own AVX2 / AVX-512 variants behind `target`
attributes and pick one at run time, so a wheel built here runs on any x86-64 machine.

Environment knobs:
  SEGKIT_DEBUG=1      -O0 -g instead of -O3
  SEGKIT_NO_OPENMP=1  build without OpenMP (single-threaded kernels)
  SEGKIT_BUILD_JOBS=N parallel compile jobs (default: CPU count)
"""
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"

DEBUG = os.environ.get("SEGKIT_DEBUG", "") not in ("", "0")
OPENMP = os.environ.get("SEGKIT_NO_OPENMP", "") in ("", "0")

# Sorted so that every build compiles and links the same sources in the same order.
SOURCES = sorted(str(p.relative_to(ROOT)) for p in CSRC.rglob("*.cpp"))

compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
compile_args += ["-fvisibility=hidden", "-Wall", "-Wno-unknown-pragmas"]
link_args = []
if OPENMP:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")

ext = Pybind11Extension(
    "segkit._C",
    SOURCES,
    include_dirs=[str(CSRC)],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    cxx_std=17,
)


class BuildExt(build_ext):
    """build_ext that says what it does and fails with a clear message without a compiler."""

    def build_extensions(self):
        cxx = self.compiler.compiler_so[0] if getattr(self.compiler, "compiler_so", None) else None
        if cxx and shutil.which(cxx) is None:
            sys.exit(
                f"segkit: the C++ compiler '{cxx}' was not found. Install one (Debian/Ubuntu: "
                "'apt-get install g++'; Fedora: 'dnf install gcc-c++'; macOS: Xcode command line "
                "tools plus libomp) or set CXX/CC to a compiler with C++17 and OpenMP."
            )
        print(
            "segkit build config:\n"
            f"  compiler   {cxx}\n"
            f"  python     {sys.version.split()[0]} ({sysconfig.get_platform()})\n"
            f"  flags      {' '.join(compile_args)}\n"
            f"  openmp     {'on' if OPENMP else 'off'}\n"
            f"  sources    {len(SOURCES)}: {', '.join(SOURCES)}",
            flush=True,
        )
        try:
            super().build_extensions()
        except Exception as exc:  # noqa: BLE001 - re-raised with a hint
            raise RuntimeError(
                f"segkit: building the C++ extension failed ({exc}). It needs a C++17 compiler "
                "with OpenMP (g++ >= 9 or clang >= 10 with libomp); set SEGKIT_NO_OPENMP=1 to "
                "build without OpenMP."
            ) from exc


class BuildPy(build_py):
    """Ship the CUDA sources (csrc/common, csrc/cuda) inside the package as segkit/_csrc."""

    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads them from the checkout
            return
        target = Path(self.build_lib) / "segkit" / "_csrc"
        for sub in ("common", "cuda"):
            shutil.copytree(CSRC / sub, target / sub, dirs_exist_ok=True)


ParallelCompile("SEGKIT_BUILD_JOBS", default=0).install()

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExt, "build_py": BuildPy})
