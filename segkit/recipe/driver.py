"""`segkit recipe run` and `segkit recipe status`: the stages in order, each skipped when its
record matches (see :mod:`segkit.recipe.state`), then report.json and the report page."""
from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import SegkitError
from ..io.atomic import write_json
from ..jobs._memory import item_peak
from .dataset import inspect_dataset, read_classes
from .report import write_report
from .settings import RECIPE_FILE, Recipe, load_recipe
from .stage import Context, Stage
from .stages_analysis import (Audit, Ensembles, Evaluate, Submission, Tune,
                              tune_table_with_test)
from .stages_data import Folds, Masks, Resample
from .stages_models import OOF, Retrain, Test, Train
from .state import Ledger, digest, made_identities, why_stale

STAGES: tuple[Stage, ...] = (Masks(), Resample(), Folds(), Train(), OOF(), Test(), Tune(),
                             Audit(), Retrain(), Ensembles(), Submission(), Evaluate())
STAGE_NAMES = tuple(s.name for s in STAGES) + ("report",)


class StageError(SegkitError, RuntimeError):
    """A stage failed; the message names it (what it made before is kept)."""


def check_dataset(folder: Path, recipe: Recipe):
    """The checks of init, again at the start of a run (before any training)."""
    ds = recipe.dataset
    ctx_path = lambda v: None if not v else (Path(v) if Path(v).is_absolute()  # noqa: E731
                                             else folder / v)
    classes = read_classes(ctx_path(ds.classes_file))
    check_stores(recipe, classes, ctx_path)
    return inspect_dataset(ctx_path(ds.images), masks=ctx_path(ds.masks),
                           coco=ctx_path(ds.coco), ignore_index=ds.ignore_index,
                           classes=classes, test_images=ctx_path(ds.test_images),
                           test_masks=ctx_path(ds.test_masks))


def check_stores(recipe: Recipe, classes: list[str], where: Callable) -> None:
    """Each [[stores]] path is a confidence store of the recipe's classes."""
    from ..io.store import ConfidenceStore, StoreError

    for i, st in enumerate(recipe.stores):
        for path in [*st.oof, *([st.test] if st.test else [])]:
            store = ConfidenceStore(where(path))
            if store.classes != classes:
                raise StoreError(f"stores[{i}] ({st.name}): {store.root} has classes "
                                 f"{store.classes}; the recipe's are {classes} (same names, "
                                 "same order)")


def plan(ctx: Context, ledger: Ledger) -> list[dict]:
    """Each stage with what it reads now, its key, its last record and why it is stale."""
    keys: dict[str, str] = {}
    out = []
    for stage in STAGES:
        note = stage.active(ctx)
        now = json.loads(json.dumps({"settings": stage.reads(ctx), "inputs": stage.inputs(ctx),
                                     "upstream": {u: keys[u] for u in stage.after}}))
        keys[stage.name] = digest(now) if note is None else digest({"inactive": note})
        record = ledger.read(stage.name)
        reasons = [] if note is not None else why_stale(record, now, ctx.folder)
        out.append({"stage": stage, "now": now, "key": keys[stage.name], "record": record,
                    "note": note, "reasons": reasons})
    return out


def run_recipe(folder: str | Path, *, engine: str | None = None, progress: bool = True,
               log: Callable[[str], Any] | None = print, hooks: dict | None = None) -> dict:
    """Run every stage of the recipe in `folder` that is not done; returns report.json's dict.

    Parameters
    ----------
    folder : path
        A recipe folder (``segkit recipe init`` wrote its recipe.toml).
    engine : {"local", "ray"}, optional
        Where the trainings run (default: the recipe's ``train.engine``).
    progress : bool
        The jobs' progress bars.
    log : callable or None
        Where the stage lines go.
    hooks : dict, optional
        Test seams: ``"run_trainings"``: called instead of
        ``segkit.recipe.trainings.run_trainings`` (same arguments). Callers that add to the
        recipe (``segkit demo``): ``"head"``: ``head(i, n, name) -> str`` writes the
        ``[i/n] name`` prefix of each stage's line; ``"after_stage"``:
        ``after_stage(name, ctx, state)`` is called after each stage (ran, reused or skipped;
        ``state`` is its entry of report.json's ``stages``), before the next one starts.

    Returns
    -------
    dict
        The report (also in ``folder/report.json``, rendered into ``folder/report/``).
    """
    folder = Path(folder)
    log = log or (lambda line: None)
    recipe = load_recipe(folder)
    summary = check_dataset(folder, recipe)
    ctx = Context(folder, recipe, log=log, progress=progress, engine=engine, hooks=hooks)
    ledger = Ledger(folder)
    states: dict[str, dict] = {}
    steps = plan(ctx, ledger)
    t_all = time.perf_counter()
    hooks = hooks or {}
    make_head = hooks.get("head", lambda i, n, name: f"[{i}/{n}] {name}")
    after_stage = hooks.get("after_stage", lambda name, ctx, state: None)
    ran: set[str] = set()
    for i, item in enumerate(steps, 1):
        if i > 1:
            after_stage(steps[i - 2]["stage"].name, ctx, states[steps[i - 2]["stage"].name])
        stage, record = item["stage"], item["record"]
        head = make_head(i, len(steps) + 1, stage.name)
        again = [u for u in stage.after if u in ran]
        if again and item["note"] is None and not item["reasons"]:
            # its key is the same, but what it reads was made again (a training redone
            # after its work dir was removed, ...): cheap where the jobs reuse items
            item["reasons"] = [f"stage {u} before it ran again" for u in again]
        if item["note"] is not None:
            states[stage.name] = {"state": "skipped", "seconds": 0.0, "peak_rss_mb": None,
                                  "note": item["note"]}
            ledger.write(stage.name, {"key": item["key"], "state": "skipped",
                                      "note": item["note"]})
            log(f"{head}: skipped ({item['note']})")
            continue
        if not item["reasons"]:
            ctx.results[stage.name] = record.get("result", {})
            states[stage.name] = {"state": "reused", "seconds": record.get("seconds", 0.0),
                                  "peak_rss_mb": record.get("peak_rss_mb"),
                                  "note": "done before; inputs and settings unchanged"}
            log(f"{head}: done before (unchanged)")
            continue
        last = f"; last run {record['seconds']:.0f} s" if record and "seconds" in record else ""
        est = stage.estimate(ctx)
        log(f"{head} ({'; '.join(item['reasons'][:3])}{'; ' + est if est else ''}{last})")
        ledger.write(stage.name, {"key": item["key"], "state": "running", "started": _now()})
        t0 = time.perf_counter()
        try:
            with item_peak() as mem:
                result = stage.run(ctx)
        except SegkitError as exc:
            raise StageError(f"stage '{stage.name}' failed: {exc}") from exc
        seconds = round(time.perf_counter() - t0, 2)
        peak = round(mem["peak_rss"] / 2 ** 20, 1) if mem.get("peak_rss") else None
        ctx.results[stage.name] = result
        ran.add(stage.name)
        ledger.write(stage.name, {
            "key": item["key"], "state": "ran", **item["now"],
            "made": made_identities(folder, stage.made(ctx)), "result": result,
            "seconds": seconds, "peak_rss_mb": peak, "finished": _now()})
        states[stage.name] = {"state": "ran", "seconds": seconds, "peak_rss_mb": peak,
                              "note": "; ".join(item["reasons"][:3])}
        log(f"    ({seconds:.1f} s; {time.perf_counter() - t_all:.0f} s so far)")
    if steps:
        after_stage(steps[-1]["stage"].name, ctx, states[steps[-1]["stage"].name])
    t0 = time.perf_counter()
    report = build_report(ctx, summary, states)
    report["stages"]["report"] = {"state": "ran", "seconds": 0.0, "peak_rss_mb": None,
                                  "note": "report.json and report/"}
    write_json(folder / "report.json", report, indent=1, default=str)
    paths = write_report(folder / "report", report, log=None)
    report["stages"]["report"]["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(folder / "report.json", report, indent=1, default=str)
    log(f"{make_head(len(steps) + 1, len(steps) + 1, 'report')}: {folder / 'report.json'}, "
        f"{paths.get('html', folder / 'report' / 'index.html')}")
    for line in summary_lines(report):
        log("    " + line)
    return report


def summary_lines(report: dict) -> list[str]:
    """The headline figures of a report, as the run's last lines."""
    out = []
    if "oof" in report:
        out.append(f"out-of-fold mIoU {report['oof']['miou']:.3f}")
    steps = report.get("test", {}).get("steps", {})
    if steps:
        out.append("test mIoU: " + ", ".join(f"{k} {v['miou']:.3f}" for k, v in steps.items()))
    if "submission" in report:
        sub = report["submission"]
        out.append(f"{sub['path']}: {sub['rows']} rows of {sub['size']}x{sub['size']}")
    return out


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def build_report(ctx: Context, summary, states: dict) -> dict:
    """report.json's dict from the stages' results (docs/formats.md has the schema)."""
    r = ctx.results
    dataset = summary.to_report(ctx.classes, ctx.recipe.dataset.ignore_index,
                                ctx.has_test_masks)
    if "masks" in r:
        dataset["class_pixels"] = r["masks"]["class_pixels"]
        dataset["ignored_pixels"] = r["masks"]["ignored_pixels"]
    report: dict = {
        "recipe": {"dir": str(ctx.folder), "file": RECIPE_FILE, "preset": ctx.recipe.preset,
                   "settings": ctx.recipe.to_dict()},
        "dataset": dataset, "stages": states}
    if "resample" in r:
        report["resample"] = {k: v for k, v in r["resample"].items() if k != "picture"}
    if "folds" in r:
        report["folds"] = r["folds"]
    runs = {**r.get("train", {}).get("runs", {}), **r.get("retrain", {}).get("runs", {})}
    if runs:
        report["models"] = {k: {f: v[f] for f in ("model", "variant", "fold", "seed",
                                                  "val_mIoU", "curve", "seconds")}
                            for k, v in runs.items()}
    if r.get("oof", {}).get("score"):
        report["oof"] = r["oof"]["score"]
    test = r.get("evaluate")
    if "tune" in r:
        report["tune"] = {**r["tune"], "table": tune_table_with_test(
            r["tune"], (test or {}).get("steps", {}))}
    if "audit" in r:
        report["audit"] = {k: v for k, v in r["audit"].items() if k != "fixed_pixels"}
    if test:
        report["test"] = test
    if "submission" in r:
        report["submission"] = r["submission"]
    pictures = {"resampling": r.get("resample", {}).get("picture"),
                "vote and vote + CRF": r.get("ensembles", {}).get("picture"),
                "tuning": "tuned/tuning.png" if (ctx.folder / "tuned" / "tuning.png").is_file()
                and "tune" in r else None}
    report["pictures"] = {k: v for k, v in pictures.items() if v}
    return report


def recipe_status(folder: str | Path) -> list[dict]:
    """Per stage: ``{"stage", "state": "done" | "stale" | "missing" | "skipped", "why"}``."""
    folder = Path(folder)
    recipe = load_recipe(folder)
    ctx = Context(folder, recipe, log=lambda line: None, progress=False)
    rows = []
    for item in plan(ctx, Ledger(folder)):
        name, record = item["stage"].name, item["record"]
        if item["note"] is not None:
            rows.append({"stage": name, "state": "skipped", "why": [item["note"]]})
        elif record is None:
            rows.append({"stage": name, "state": "missing", "why": ["never ran"]})
        elif item["reasons"]:
            rows.append({"stage": name, "state": "stale", "why": item["reasons"]})
        else:
            rows.append({"stage": name, "state": "done", "why": []})
    report = folder / "report.json"
    rows.append({"stage": "report", "state": "done" if report.is_file() else "missing",
                 "why": [] if report.is_file() else ["never written"]})
    return rows
