"""segkit: native-accelerated data and post-processing kernels for semantic segmentation.

Every op has four backends behind one function (NumPy reference, Numba, C++/OpenMP, CUDA via
CuPy); ``backend="auto"`` picks the fastest available. See ``segkit.backends()``.
"""
from ._backend import (BackendInfo, BackendUnavailableError, backends, get_num_threads,
                       set_num_threads)
from .jobs.evaluate import Evaluation, evaluate
from .ops.confusion import confusion_matrix
from .jobs.crf import crf_job
from .ops.convcrf import CRF_PRESETS, convcrf, convcrf_labels
from .ops.mode_filter import mode_filter
from .jobs.kfold import kfold, kfold_masks
from .jobs.masks import coco_to_masks
from .jobs.resample import resample
from .ops.soft_vote import soft_vote
from .io.store import ConfidenceStore, StoreError
from .io.submission import read_submission, write_submission
from .jobs.ensemble import ensemble
from .ops.label_issues import label_issues, label_quality
from .jobs.audit import audit
from .ops.vote_confusion import vote_confusion
from .jobs.tune import tune

__version__ = "0.1.0"

__all__ = [
    "BackendInfo", "BackendUnavailableError", "Evaluation", "backends", "confusion_matrix",
    "evaluate", "get_num_threads",
    "mode_filter",
    "set_num_threads", "__version__",
    "coco_to_masks", "kfold", "kfold_masks", "resample",
    "soft_vote", "ConfidenceStore", "StoreError", "ensemble", "read_submission",
    "write_submission",
    "CRF_PRESETS", "convcrf", "convcrf_labels", "crf_job",
    "label_issues", "label_quality", "audit",
    "vote_confusion", "tune",
]
