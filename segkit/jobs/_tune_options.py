"""`segkit tune`'s options: one record, declared once.

:class:`TuneOptions` is the one place each option of `segkit tune` is written: its default,
its help text and its range are field metadata that the signature of :func:`segkit.tune`
(``options=`` or keywords), the command line (``segkit tune``: its flags are built from these
fields) and the ``settings`` block of ``tuned.json`` (:meth:`TuneOptions.tuned_settings`) all
read. :func:`tune_options` checks a record (InputError naming the option and the bad value).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, InputTypeError
from ._tune_crf import FitOptions

#: What `search` may name.
SEARCHES = ("weights", "bias", "crf")
#: The kernel backends `backend` takes (each op gets it where it has it: see TuneOptions).
BACKEND_CHOICES = ("auto", "numpy", "numba", "cpp", "cuda")


def _f(default: Any, help: str, *, kind: str, recorded: bool = True, **limits: Any) -> Any:
    """A field with its help text, its kind (how it is checked and shown on the command line:
    int, float, flag, text, folder, label, choice; workers, engine and switch are left to the
    job's engine and the commands' shared options) and its limits (low, high, low_open,
    high_open, noun, choices). `recorded`: written in tuned.json's ``settings`` block."""
    return field(default=default, metadata={"help": help, "kind": kind, "recorded": recorded,
                                            **limits})


@dataclass(frozen=True)
class TuneOptions:
    """The options of :func:`segkit.tune` (and of ``segkit tune``: ``crf_lr`` is ``--crf-lr``).

    Every field's help text, default and range are declared here once; the Attributes below
    are generated from them.
    """
    images: str | Path | None = _f(None, "The images: needed for --search crf and the "
                                         "recipe's CRF on the hold-out.", kind="folder")
    search: tuple[str, ...] = _f(("weights", "bias"), "What to tune: some of weights, bias, "
                                                      "crf (comma-separated).", kind="text")
    holdout: float = _f(0.2, "Fraction of the OOF images held out (seeded), never seen by the "
                             "search.", kind="float", low=0, high=1, low_open=True,
                        high_open=True, noun="a fraction in (0, 1)")
    budget: int = _f(200, "Weight/bias candidates per search (a --refit gets as many again).",
                     kind="int", low=1)
    seed: int = _f(0, "Seeds the hold-out, the search order and the CRF fit.", kind="int",
                   low=0)
    bias_bound: float = _f(2.0, "Biases stay within +-this.", kind="float", low=0, high=20,
                           low_open=True, noun="in (0, 20]")
    crf_images: int = _f(32, "Search images (seeded) the CRF fit draws its crops from.",
                         kind="int", low=1)
    crf_crop: int = _f(128, "Side of the CRF fit's random crops (at most the smallest image).",
                       kind="int", low=1)
    crf_batch: int = _f(4, "Crops per CRF fit step.", kind="int", low=1)
    crf_steps: int = _f(400, "Adam steps of the CRF fit.", kind="int", low=1)
    crf_lr: float = _f(0.02, "Learning rate of the CRF fit.", kind="float", low=0,
                       low_open=True, noun="a number > 0")
    refit: bool = _f(False, "Also search weights and bias again on all OOF images (reported in "
                            "tuned.json's refit block, not written as the setting).", kind="flag")
    ignore_index: int | None = _f(255, "Ground-truth label that is not counted.", kind="label")
    workers: int | None = _f(None, "Worker processes (local) or concurrent tasks (ray) of the "
                                   "image reads and CRF runs; also the search kernel's "
                                   "threads. [default: all cores]", kind="workers",
                             recorded=False)
    engine: str = _f("local", "local (a process pool) or ray.", kind="engine", recorded=False)
    backend: str = _f("auto", "Kernel backend of the soft vote and ConvCRF (auto: the fastest "
                              "here); the search's kernels, which have numpy and numba only, "
                              "run on numba for cpp and cuda. The CRF fit runs on torch's CPU "
                              "op.", kind="choice", choices=BACKEND_CHOICES, recorded=False)
    progress: bool = _f(True, "Show a progress bar.", kind="switch", recorded=False)

    def fit(self) -> FitOptions:
        """The CRF fit's options (a ``FitOptions`` of ``segkit.jobs._tune_crf``)."""
        return FitOptions(int(self.crf_images), int(self.crf_crop), int(self.crf_batch),
                          int(self.crf_steps), float(self.crf_lr))

    def tuned_settings(self, gt: Any) -> dict[str, Any]:
        """tuned.json's ``settings`` block: the recorded options in field order, the folders
        (`images`, `gt`) last, as text."""
        block: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["recorded"] and f.metadata["kind"] != "folder":
                block[f.name] = list(value) if isinstance(value, tuple) else value
        block["images"] = None if self.images is None else str(self.images)
        block["gt"] = str(gt)
        return block

    @classmethod
    def from_tuned(cls, doc: dict) -> "TuneOptions":
        """The options a tuned.json was made with (its ``settings`` block; keys it lacks take
        their defaults, ``gt`` and keys of newer versions are left out), checked.

        Parameters
        ----------
        doc : dict
            A tuned.json's contents (:func:`segkit.jobs.settings.load_tuned`).

        Returns
        -------
        TuneOptions
        """
        block = doc.get("settings") if isinstance(doc, dict) else None
        if not isinstance(block, dict):
            raise InputError("tuned.json has no settings block (written by segkit tune)")
        names = {f.name for f in dataclasses.fields(cls)}
        return tune_options(None, {k: v for k, v in block.items() if k in names})


def parse_search(search: Any) -> tuple[str, ...]:
    """The search keywords ("weights,bias" or a sequence) checked; InputError otherwise."""
    if isinstance(search, str):
        search = [s.strip() for s in search.split(",") if s.strip()]
    search = tuple(search)
    bad = [s for s in search if s not in SEARCHES]
    if bad or not search:
        raise InputError(f"search must name some of {', '.join(SEARCHES)}; got {search!r}")
    return search


def _number(name: str, value: Any, meta: dict) -> Any:
    """`value` checked against the field's kind and limits (ints as int)."""
    low, high = meta.get("low"), meta.get("high")
    integer = meta["kind"] == "int"
    bad = isinstance(value, bool) or not isinstance(
        value, (int, np.integer) if integer else (int, float, np.integer, np.floating))
    if not bad:
        bad = not math.isfinite(value) or (
            low is not None and (value <= low if meta.get("low_open") else value < low)) or (
            high is not None and (value >= high if meta.get("high_open") else value > high))
    if bad:
        noun = meta.get("noun") or f"an integer >= {low}"
        raise InputError(f"{name} must be {noun}; got {value!r}")
    return int(value) if integer else value


def _checked(name: str, value: Any, meta: dict) -> Any:
    kind = meta["kind"]
    if kind == "text":
        return parse_search(value)
    if kind in ("int", "float"):
        return _number(name, value, meta)
    if kind == "flag":
        if not isinstance(value, bool):
            raise InputError(f"{name} must be True or False; got {value!r}")
        return value
    if kind == "choice" and value not in meta["choices"]:
        raise InputError(f"{name} must be one of {', '.join(map(repr, meta['choices']))}; "
                         f"got {value!r}")
    if kind == "label" and value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(f"{name} must be an integer label or None; got {value!r}")
        return int(value)
    return value  # folder, workers, engine, switch: checked with the paths and the engine


def tune_options(options: TuneOptions | None, settings: dict[str, Any]) -> TuneOptions:
    """`options` (or the defaults) with `settings` (field names) replacing its values, each
    checked.

    Parameters
    ----------
    options : TuneOptions or None
    settings : dict
        Field names of :class:`TuneOptions` and their values.

    Returns
    -------
    TuneOptions

    Raises
    ------
    InputTypeError
        For a name that is no option (or `options` that is not a TuneOptions).
    InputError
        Naming the option and the bad value.
    """
    if options is None:
        options = TuneOptions()
    if not isinstance(options, TuneOptions):
        raise InputTypeError(f"options must be a TuneOptions; got {type(options).__name__}")
    fields = {f.name: f for f in dataclasses.fields(TuneOptions)}
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise InputTypeError(f"tune() got unknown options {unknown}; known: "
                             f"{', '.join(fields)}")
    options = dataclasses.replace(options, **settings)
    return dataclasses.replace(options, **{
        name: _checked(name, getattr(options, name), f.metadata) for name, f in fields.items()})


def _attributes() -> str:
    """The numpydoc Attributes section of TuneOptions, from its fields."""
    import textwrap

    lines = ["", "    Attributes", "    ----------"]
    for f in dataclasses.fields(TuneOptions):
        lines += [f"    {f.name} : default {f.default!r}",
                  *textwrap.wrap(f.metadata["help"], 92, initial_indent=" " * 8,
                                 subsequent_indent=" " * 8)]
    return "\n".join(lines) + "\n"


TuneOptions.__doc__ = (TuneOptions.__doc__ or "") + _attributes()
