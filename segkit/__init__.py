"""segkit: native-accelerated data and post-processing kernels for semantic segmentation.

Every op has four backends behind one function (NumPy reference, Numba, C++/OpenMP, CUDA via
CuPy); ``backend="auto"`` picks the fastest available. See ``segkit.backends()``.
"""
from ._backend import (BackendInfo, BackendUnavailableError, backends, get_num_threads,
                       set_num_threads)
from .jobs.crf import crf_job
from .ops.convcrf import CRF_PRESETS, convcrf, convcrf_labels
from .ops.mode_filter import mode_filter

__version__ = "0.1.0"

__all__ = [
    "BackendInfo", "BackendUnavailableError", "backends", "get_num_threads", "mode_filter",
    "set_num_threads", "__version__",
    "CRF_PRESETS", "convcrf", "convcrf_labels", "crf_job",
]
