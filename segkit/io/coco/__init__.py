"""COCO annotation files (GUIDE section 4).

:meth:`CocoIndex.open <segkit.io.coco.index.CocoIndex.open>` is the one way to open a COCO
file: it reads, checks and indexes it. One module per concern, their public names gathered
here:

- :mod:`segkit.io.coco.labels`: the category-id -> label table
  (:class:`~segkit.io.coco.labels.LabelTable`);
- :mod:`segkit.io.coco.checks`: the checks of a file's JSON
  (:func:`~segkit.io.coco.checks.check_coco`, :class:`~segkit.io.coco.checks.CocoFindings`,
  :class:`~segkit.io.coco.checks.CocoError`) and of an image file against its record;
- :mod:`segkit.io.coco.index`: :class:`~segkit.io.coco.index.CocoIndex`, a checked file's
  images with their annotations and its label table;
- :mod:`segkit.io.coco.raster`: one image's annotations painted into a label mask
  (:func:`~segkit.io.coco.raster.rasterize`), crowd regions included.
"""
from __future__ import annotations

from .checks import (ON_INVALID, CocoError, CocoFindings, annotation_problem, check_annotations,
                     check_coco, check_image_size, segmentation_problem)
from .index import CocoIndex
from .labels import BACKGROUND_NAMES, LabelTable, label_table
from .raster import (CROWD_MODES, IGNORE_LABEL, annotation_rle, check_crowd, count_labels,
                     is_crowd, painting_order, rasterize)

__all__ = ["BACKGROUND_NAMES", "CROWD_MODES", "IGNORE_LABEL", "ON_INVALID", "CocoError",
           "CocoFindings", "CocoIndex", "LabelTable", "annotation_problem", "annotation_rle",
           "check_annotations", "check_coco", "check_crowd", "check_image_size", "count_labels",
           "is_crowd", "label_table", "painting_order", "rasterize", "segmentation_problem"]
