"""The category-id -> label table of a COCO file (GUIDE section 4).

Category ids ``1..n`` map to themselves (label 0 is the background). Any other set of ids maps
through an explicit table, in the order of the ids, to ``1..n`` (:class:`LabelTable`; the jobs
print it and write it as ``labels.json``). A category with id 0 named "background" keeps
label 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

BACKGROUND_NAMES = ("background", "backgroud", "_background_", "bg")


@dataclass(frozen=True)
class LabelTable:
    """How category ids become mask labels.

    ``category_to_label[id]`` is the label painted for annotations of category ``id``;
    ``classes[label]`` its name (``classes[0]`` is the background). ``identity`` is True when
    every category id is its own label.
    """

    category_to_label: Mapping[int, int]
    classes: tuple[str, ...]
    identity: bool

    @property
    def num_labels(self) -> int:
        """How many labels the masks use, the background included."""
        return len(self.classes)

    @property
    def dtype(self) -> np.dtype:
        """uint8 while the labels leave 255 free for the ignore label, else uint16."""
        return np.dtype(np.uint8) if self.num_labels <= 255 else np.dtype(np.uint16)

    def describe(self) -> list[str]:
        """Human-readable lines: one sentence for identity tables, the whole table otherwise."""
        if self.identity:
            return [f"category ids are their labels (1..{self.num_labels - 1}; 0 = background)"]
        lines = ["category ids are not 1..n; they map to labels through this table:",
                 f"    {'category id':>11s} -> label  class"]
        for cat, label in sorted(self.category_to_label.items()):
            lines.append(f"    {cat:11d} -> {label:5d}  {self.classes[label]}")
        return lines

    def to_json(self) -> dict:
        """The table as ``labels.json`` holds it (category ids as strings)."""
        return {"classes": list(self.classes), "identity": self.identity,
                "category_to_label": {str(k): v for k, v in
                                      sorted(self.category_to_label.items())}}


def _is_background(name: str) -> bool:
    return name.strip().lower() in BACKGROUND_NAMES


def label_table(categories: Sequence[Mapping[str, Any]]) -> LabelTable:
    """The :class:`LabelTable` for a COCO ``categories`` list (already validated)."""
    by_id = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
    background_cat = [i for i, n in by_id.items() if i == 0 and _is_background(n)]
    ids = sorted(i for i in by_id if i not in background_cat)
    names = ["Background"]
    if ids == list(range(1, len(ids) + 1)):
        table = {i: i for i in ids}
        identity = True
    else:
        table = {cat: label for label, cat in enumerate(ids, start=1)}
        identity = False
    names += [by_id[i] for i in ids]
    if background_cat:
        table[0] = 0
        names[0] = by_id[0]
    return LabelTable(table, tuple(names), identity)
