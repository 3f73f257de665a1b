"""Opening a COCO annotation file: :meth:`~segkit.io.coco.index.CocoIndex.open`, the one way
segkit reads one.

The file is read (JSON's non-standard ``NaN``, ``Infinity`` and ``-Infinity`` included: they
make their annotation invalid), checked (:func:`~segkit.io.coco.checks.check_coco`) and indexed:
images in file order with their valid annotations, and the label table.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .checks import CocoError, CocoFindings, check_coco
from .labels import LabelTable, label_table


@dataclass
class CocoIndex:
    """A checked COCO file: images in file order with their (valid) annotations, the label
    table, and what the annotation check found
    (:class:`~segkit.io.coco.checks.CocoFindings`). Open one with :meth:`~segkit.io.coco.index.CocoIndex.open`."""

    path: Path
    data: dict
    table: LabelTable
    anns_by_image: dict[int, list[dict]] = field(repr=False)
    findings: CocoFindings = field(default_factory=CocoFindings, repr=False)

    @classmethod
    def open(cls, ann_file: str | Path, on_invalid: str = "error") -> "CocoIndex":
        """Read, check and index the COCO annotation file `ann_file`.

        Parameters
        ----------
        ann_file : str or Path
            The annotation file (.json).
        on_invalid : {"error", "skip"}
            An invalid annotation raises (``"error"``) or is left out and listed in
            ``findings.skipped`` (``"skip"``).

        Returns
        -------
        CocoIndex
            ``data`` is the checked JSON (with ``"skip"``: without the invalid annotations).

        Raises
        ------
        CocoError
            The file is missing, is not JSON, or fails the check (naming the file and the
            record).

        Examples
        --------
        >>> index = CocoIndex.open("data/train.json")  # doctest: +SKIP
        >>> len(index.images), index.table.classes[:2]  # doctest: +SKIP
        (120, ('Background', 'Plastic'))
        """
        data, findings = check_coco(_read_json(ann_file), Path(ann_file),
                                    on_invalid=on_invalid)
        by_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
        for ann in data.get("annotations", []):
            by_image[ann["image_id"]].append(ann)
        return cls(Path(ann_file), data, label_table(data["categories"]), by_image, findings)

    @property
    def images(self) -> list[dict]:
        """The image records, in file order."""
        return self.data["images"]

    @property
    def root(self) -> Path:
        """The folder image file names are relative to (the annotation file's folder)."""
        return self.path.parent

    def items(self) -> Iterator[tuple[dict, list[dict]]]:
        """(image record, its valid annotations) for every image, in file order."""
        for img in self.images:
            yield img, self.anns_by_image[img["id"]]


def _read_json(ann_file: str | Path) -> Any:
    path = Path(ann_file)
    if not path.exists():
        raise CocoError(f"{path}: no such file")
    if path.is_dir():
        raise CocoError(f"{path}: is a folder; expected a COCO annotation file (.json)")
    try:
        with open(path, "rb") as f:
            data = json.load(f)  # reads NaN / Infinity / -Infinity as floats
    except json.JSONDecodeError as exc:
        raise CocoError(f"{path}: not valid JSON ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CocoError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    return data
