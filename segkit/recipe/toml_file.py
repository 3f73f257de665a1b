"""Write a :class:`~segkit.recipe.settings.Recipe` as a commented TOML file a person edits:
every setting under its explanation (the field's ``help``), with a note where init chose the
value from the data."""
from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path
from typing import Any

from ..io.atomic import write_text
from .settings import ARRAYS, RECIPE_FILE, SECTIONS, Recipe, parse_recipe

WIDTH = 96
#: commented examples of an empty array of tables
EXAMPLES = {"stores": ['[[stores]]', 'name = "my_unet"',
                       'oof = ["/data/my_unet/oof0", "/data/my_unet/oof1", "..."]  # one per fold',
                       'test = "/data/my_unet/test"']}


def toml_value(value: Any) -> str:
    """`value` (str, bool, int, float or a list of them) as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _comment(text: str) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, WIDTH - 2)]


def _table(record: Any, section: str, notes: dict[str, str]) -> list[str]:
    lines: list[str] = []
    for f in dataclasses.fields(record):
        help_ = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices:
            many = isinstance(getattr(record, f.name), tuple)
            help_ += f" {'Any' if many else 'One'} of: {', '.join(choices)}."
        note = notes.get(f"{section}.{f.name}")
        lines += _comment(help_ + (f" [{note}]" if note else ""))
        lines.append(f"{f.name} = {toml_value(getattr(record, f.name))}")
    return lines


def render_recipe(recipe: Recipe, header: str = "", notes: dict[str, str] | None = None) -> str:
    """The commented TOML text of `recipe`.

    Parameters
    ----------
    recipe : Recipe
    header : str
        Comment paragraphs at the top (what init found in the data).
    notes : dict
        ``"section.key" -> note`` appended to that setting's comment.
    """
    notes = notes or {}
    out = _comment("segkit recipe: every setting of `segkit recipe run` on this dataset. Edit "
                   "freely: a rerun redoes the stages that read a changed setting and those "
                   "after them, no others. Paths are absolute or relative to this folder.")
    for para in header.split("\n\n") if header else ():
        out += ["#"] + _comment(para.strip())
    out += ["", *_comment(Recipe.__dataclass_fields__["preset"].metadata["help"]),
            f"preset = {toml_value(recipe.preset)}"]
    for name in SECTIONS:
        value = getattr(recipe, name)
        if name in ARRAYS:
            out += ["", *_comment(ARRAYS[name].__doc__ or "")]
            if not value:
                out += _comment(f"(none; add [[{name}]] tables here)")
                if name in EXAMPLES:
                    out += ["# " + line for line in EXAMPLES[name]]
            for item in value:
                out += [f"[[{name}]]", *_table(item, name, notes), ""]
        else:
            out += ["", *_comment(type(value).__doc__ or ""), f"[{name}]",
                    *_table(value, name, notes)]
    return "\n".join(out).rstrip() + "\n"


def write_recipe(folder: str | Path, recipe: Recipe, header: str = "",
                 notes: dict[str, str] | None = None) -> Path:
    """Write ``folder/recipe.toml`` atomically (after checking that it reads back the same)."""
    import tomllib

    text = render_recipe(recipe, header, notes)
    path = Path(folder) / RECIPE_FILE
    if parse_recipe(tomllib.loads(text), str(path)) != recipe:
        raise AssertionError("recipe.toml does not read back as written")  # a bug
    write_text(path, text)
    return path
