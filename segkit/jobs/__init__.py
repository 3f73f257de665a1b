"""Dataset-scale jobs: one function per item (file, image), run on a local process pool or on
Ray, with a progress bar, atomic outputs and resumption."""

from ._common import DatasetError
from .engine import JobError, map_items

__all__ = ["DatasetError", "JobError", "map_items"]
