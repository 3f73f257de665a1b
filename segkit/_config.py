"""Tunables in one place (tests patch these to reach edge cases)."""

#: CUDA threads per block for the element-wise kernels.
CUDA_BLOCK = 256
#: Upper bound on CUDA blocks per launch (kernels use grid-stride loops beyond it).
CUDA_MAX_BLOCKS = 65535 * 16
#: Compiler options every CUDA source is built with (NVRTC through CuPy).
NVRTC_OPTIONS = ("--std=c++17",)
#: Preference order of backend="auto" for host (NumPy) inputs.
CPU_PREFERENCE = ("cpp", "numba", "numpy")
