"""Datasets for mmsegmentation: images plus single-channel label PNGs as `segkit masks` writes
them, selected by split files of image stems as `segkit kfold` writes them.

Layout (README, "Training with mmsegmentation")::

    data_root/
      images/   batch_01_vt/0002.jpg ...     (as the COCO file names them; nested or flat)
      masks/    batch_01_vt+0002.png ...     (one PNG per image, named by its stem; `dir+name`
                                              when `segkit masks --flatten` flattened the path)
      splits/   fold0/train.txt, fold0/val.txt, ...  (one stem per line)

A stem ``batch_01_vt+0002`` finds its image as ``images/batch_01_vt+0002.jpg`` or, when that does
not exist, ``images/batch_01_vt/0002.jpg``, then any image suffix in any case (``.JPG``,
``.webp``: ``segkit.io.images.find_image``); its mask is ``masks/batch_01_vt+0002.png``.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Any, Sequence

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from ..io.images import IMAGE_SUFFIXES, ImageLookupError, find_image, list_images
from ..io.names import SEP, unflatten_name
from ..palette import TRASH_CLASSES, TRASH_PALETTE, palette_for


class DatasetError(ValueError):
    """A dataset whose files or class table do not fit together; the message names the file."""


def read_class_table(path: str | os.PathLike) -> dict[str, list]:
    """Classes (and palette, when given) from a json file.

    Accepted forms: a list of class names (index = label value); ``{"classes": [...],
    "palette": [[r, g, b], ...]}``; or a COCO annotation file, whose categories become classes
    ``["Background", <name of id 1>, <name of id 2>, ...]`` (ids must run 1..K; for other ids pass
    the class table that `segkit masks` wrote with the masks).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"classes_file {path!r}: cannot read ({exc})") from exc
    palette = None
    if isinstance(data, list):
        classes = data
    elif isinstance(data, dict) and "classes" in data:
        classes, palette = data["classes"], data.get("palette")
    elif isinstance(data, dict) and "categories" in data:
        cats = sorted(data["categories"], key=lambda c: c["id"])
        ids = [c["id"] for c in cats]
        if ids != list(range(1, len(ids) + 1)):
            raise DatasetError(
                f"classes_file {path!r}: COCO category ids {ids} do not run 1..{len(ids)}, so "
                "they are not the mask values; pass the class table written with the masks")
        classes = ["Background"] + [c["name"] for c in cats]
    else:
        raise DatasetError(f"classes_file {path!r}: expected a list of class names, a dict with "
                           "'classes' (and 'palette'), or a COCO file with 'categories'")
    if not (isinstance(classes, list) and len(classes) >= 2
            and all(isinstance(c, str) for c in classes)):
        raise DatasetError(f"classes_file {path!r}: 'classes' must list at least 2 names")
    if palette is None:
        palette = palette_for(len(classes))[: len(classes)].tolist()
    elif len(palette) != len(classes) or any(len(c) != 3 for c in palette):
        raise DatasetError(f"classes_file {path!r}: palette has {len(palette)} entries for "
                           f"{len(classes)} classes (need one [r, g, b] per class)")
    return {"classes": list(classes), "palette": [list(map(int, c)) for c in palette]}


def read_split(path: str) -> list[str]:
    """Stems from a split file: one per line; blank lines and lines starting with '#' skipped."""
    if not osp.isfile(path):
        raise DatasetError(f"split file {path!r} does not exist (write the folds with "
                           "`segkit kfold ANN.json --out DIR`)")
    with open(path, encoding="utf-8") as f:
        stems = [s.strip() for s in f]
    stems = [s for s in stems if s and not s.startswith("#")]
    if not stems:
        raise DatasetError(f"split file {path!r} lists no image")
    return stems


@DATASETS.register_module()
class CocoMaskDataset(BaseSegDataset):
    """Images and label PNGs for any class list (e.g. masks rasterised from a COCO file).

    Besides BaseSegDataset's parameters (``data_root``, ``data_prefix=dict(img_path=...,
    seg_map_path=...)``, ``pipeline``, ``ignore_index``, ...) it takes:

    Parameters
    ----------
    ann_file : str
        Split file (one image stem per line). May contain ``{fold}``, filled from `fold`. Empty:
        every image under ``img_path`` (recursively).
    fold : int, optional
        Fold number substituted into `ann_file` (``segkit train --fold K`` sets it).
    classes_file : str, optional
        json with the classes (and palette): see :func:`read_class_table`. Alternatively pass
        ``metainfo=dict(classes=..., palette=...)``.
    img_suffix, seg_map_suffix : str
        File suffixes of images and masks (``.jpg``, ``.png``).
    """

    METAINFO: dict = {}

    def __init__(self, ann_file: str = "", *, fold: int | None = None,
                 classes_file: str | None = None, img_suffix: str = ".jpg",
                 seg_map_suffix: str = ".png", metainfo: dict | None = None, **kwargs: Any):
        if "{fold}" in ann_file:
            if fold is None:
                raise DatasetError(f"ann_file {ann_file!r} has a {{fold}} placeholder but fold "
                                   "is None (set fold=K or use segkit train --fold K)")
            if not isinstance(fold, int) or isinstance(fold, bool) or fold < 0:
                raise DatasetError(f"fold must be a non-negative int; got {fold!r}")
            ann_file = ann_file.format(fold=fold)
        self.fold = fold
        if classes_file is not None:
            metainfo = {**read_class_table(classes_file), **(metainfo or {})}
        if not (metainfo or {}).get("classes") and not self.METAINFO.get("classes"):
            raise DatasetError(f"{type(self).__name__}: no classes given (pass classes_file= or "
                               "metainfo=dict(classes=..., palette=...))")
        super().__init__(ann_file=ann_file, img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         metainfo=metainfo, **kwargs)

    # -- file resolution ----------------------------------------------------------------
    def _image_for(self, img_dir: str, stem: str) -> str:
        flat = osp.join(img_dir, stem + self.img_suffix)
        if osp.isfile(flat):
            return flat
        tried = [flat]
        if SEP in stem:
            nested = osp.join(img_dir, unflatten_name(stem, self.img_suffix))
            if osp.isfile(nested):
                return nested
            tried.append(nested)
        try:  # other suffixes and cases (.JPG, .webp)
            return str(find_image(img_dir, stem, (self.img_suffix, *IMAGE_SUFFIXES)))
        except FileNotFoundError:
            tried.append("other image suffixes in any case")
        raise DatasetError(f"image for stem {stem!r} not found (tried {', '.join(tried)})")

    def _mask_for(self, ann_dir: str, stem: str, nested_rel: str | None = None) -> str:
        path = osp.join(ann_dir, stem + self.seg_map_suffix)
        if osp.isfile(path):
            return path
        tried = [path]
        if nested_rel is not None:
            nested = osp.join(ann_dir, nested_rel + self.seg_map_suffix)
            if osp.isfile(nested):
                return nested
            tried.append(nested)
        raise DatasetError(f"mask for stem {stem!r} not found (tried {', '.join(tried)}); "
                           "write masks with `segkit masks ANN.json OUT_DIR`")

    def _stems_from_images(self, img_dir: str) -> list[tuple[str, str, str]]:
        try:
            found = list_images(img_dir, (self.img_suffix,), allow_empty=True)
        except (ImageLookupError, FileNotFoundError) as exc:
            raise DatasetError(str(exc)) from None
        if not found:
            raise DatasetError(f"no '*{self.img_suffix}' image under {img_dir!r}")
        entries = []
        for stem, path in found.items():
            rel = path.relative_to(img_dir).as_posix()
            entries.append((stem, str(path), rel[: -len(self.img_suffix)]))
        return sorted(entries)

    def load_data_list(self) -> list[dict]:
        img_dir = self.data_prefix.get("img_path") or ""
        ann_dir = self.data_prefix.get("seg_map_path") or None
        if self.ann_file:
            entries = [(s, self._image_for(img_dir, s), None) for s in read_split(self.ann_file)]
        else:
            entries = self._stems_from_images(img_dir)
        data_list = []
        for stem, img_path, nested_rel in entries:
            info = dict(img_path=img_path, stem=stem, label_map=self.label_map,
                        reduce_zero_label=self.reduce_zero_label, seg_fields=[])
            if ann_dir is not None:
                info["seg_map_path"] = self._mask_for(ann_dir, stem, nested_rel)
            data_list.append(info)
        return data_list


@DATASETS.register_module()
class TrashDataset(CocoMaskDataset):
    """The recycling-trash recipe's 11 classes and palette (GUIDE section 6)."""

    METAINFO = dict(classes=TRASH_CLASSES, palette=TRASH_PALETTE.tolist())


def dataset_classes(cfg_dataset: dict) -> Sequence[str] | None:
    """Class names a dataset config declares (without building it), or None."""
    meta = cfg_dataset.get("metainfo") or {}
    if meta.get("classes"):
        return list(meta["classes"])
    if cfg_dataset.get("classes_file"):
        return read_class_table(cfg_dataset["classes_file"])["classes"]
    cls = DATASETS.get(cfg_dataset.get("type", ""))
    classes = getattr(cls, "METAINFO", {}).get("classes") if cls is not None else None
    return list(classes) if classes else None
