"""`segkit tune` as stages (issue 28 part 2): the options record (one declaration read by the
signature, the command line and tuned.json), each stage alone (split, read, search, CRF fit,
held-out measurement, refit, write) and `backend` reaching the kernels tune calls."""
from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import segkit
from segkit.cli import main
from segkit.errors import InputError, InputTypeError
from segkit.jobs import _tune_pixels, settings as st
from segkit.jobs import tune as tn
from segkit.jobs._tune_crf import FitImage, fit_crf, fit_draw
from segkit.jobs._tune_options import TuneOptions, tune_options
from segkit.jobs._tune_pixels import PixelSet, miou_of
from segkit.ops.confusion import iou_scores

from .test_tune import CLASSES, FIT, write_oof

#: `segkit tune`'s flags and defaults as users' scripts know them (before the record).
CLI_DEFAULTS = {"images": None, "search": "weights,bias", "holdout": 0.2, "budget": 200,
                "seed": 0, "bias_bound": 2.0, "crf_images": 32, "crf_crop": 128,
                "crf_batch": 4, "crf_steps": 400, "crf_lr": 0.02, "refit": False,
                "ignore_index": 255, "workers": None, "engine": "local", "backend": "auto",
                "progress": True}
#: tuned.json's settings block as main wrote it before the record (keys in this order).
OLD_SETTINGS = ["search", "holdout", "budget", "seed", "bias_bound", "crf_images", "crf_crop",
                "crf_batch", "crf_steps", "crf_lr", "refit", "ignore_index", "images", "gt"]


@pytest.fixture(scope="module")
def oof(tmp_path_factory):
    root = tmp_path_factory.mktemp("oof_stages")
    specs, labels, probs, stems = write_oof(root)
    return root, specs, labels, probs, stems


def _run(oof, **settings) -> tn.OofData:
    root, specs, *_ = oof
    options = tune_options(None, dict(dict(workers=1, progress=False), **settings))
    return tn.open_oof(specs, root / "gt", options, lambda s: None)


# ---- the options record -------------------------------------------------------------------
def test_the_command_line_keeps_its_flags_and_defaults():
    from segkit.commands.tune import command

    params = {p.name: p for p in command.params if p.name not in ("models", "gt", "out")}
    assert {k: p.default for k, p in params.items()} == CLI_DEFAULTS
    flags = {k: sorted(p.opts + p.secondary_opts) for k, p in params.items()}
    assert flags["refit"] == ["--no-refit", "--refit"]
    assert flags["crf_lr"] == ["--crf-lr"] and flags["bias_bound"] == ["--bias-bound"]
    assert flags["progress"] == ["--no-progress", "--progress"]
    help_text = CliRunner().invoke(main, ["tune", "--help"]).output
    for f in dataclasses.fields(TuneOptions):
        assert "--" + f.name.replace("_", "-") in help_text
    assert "Crops per CRF fit step." in help_text  # help from the record


def test_the_command_line_keeps_its_ranges():
    for argv, bad in ((["--holdout", "1"], "--holdout"), (["--budget", "0"], "--budget"),
                      (["--seed", "-1"], "--seed"), (["--bias-bound", "0"], "--bias-bound"),
                      (["--crf-lr", "0"], "--crf-lr"), (["--crf-steps", "0"], "--crf-steps"),
                      (["--backend", "gpu"], "--backend")):
        res = CliRunner().invoke(main, ["tune", ".", "--gt", ".", "--out", "x", *argv])
        assert res.exit_code == 2 and bad in res.output, res.output


def test_the_signature_defaults_are_the_records():
    options = tune_options(None, {})
    assert options == tune_options(TuneOptions(), {})
    want = dict(CLI_DEFAULTS, search=("weights", "bias"))
    assert dataclasses.asdict(options) == want


@pytest.mark.parametrize("settings, error, message", [
    (dict(holdout=1.0), InputError, r"holdout must be a fraction in \(0, 1\); got 1.0"),
    (dict(budget=0), InputError, "budget must be an integer >= 1; got 0"),
    (dict(budget=2.0), InputError, "budget must be an integer >= 1; got 2.0"),
    (dict(seed=-1), InputError, "seed must be an integer >= 0; got -1"),
    (dict(bias_bound=25), InputError, r"bias_bound must be in \(0, 20\]; got 25"),
    (dict(crf_images=True), InputError, "crf_images must be an integer >= 1; got True"),
    (dict(crf_lr=float("inf")), InputError, "crf_lr must be a number > 0; got inf"),
    (dict(refit="yes"), InputError, "refit must be True or False; got 'yes'"),
    (dict(search="weights,magic"), InputError, "search must name some of"),
    (dict(backend="gpu"), InputError, "backend must be one of 'auto', 'numpy'"),
    (dict(ignore_index="255"), InputError, "ignore_index must be an integer label or None"),
    (dict(budgte=3), InputTypeError, r"unknown options \['budgte'\]"),
])
def test_bad_options_are_named(settings, error, message):
    with pytest.raises(error, match=message):
        tune_options(None, settings)


def test_options_are_taken_as_a_record_or_by_name_with_names_winning():
    options = tune_options(TuneOptions(budget=7, search="bias"),
                           dict(seed=np.int64(3), ignore_index=np.uint8(11)))
    assert (options.budget, options.search, options.seed) == (7, ("bias",), 3)
    # NumPy integers are written to tuned.json as ints (json.dumps refuses NumPy's)
    assert type(options.seed) is int and type(options.ignore_index) is int
    json.dumps(options.tuned_settings("gt"))
    with pytest.raises(InputTypeError, match="options must be a TuneOptions"):
        tune_options({"budget": 3}, {})


def test_tuned_settings_block_is_the_old_one_and_reads_back(tmp_path):
    options = tune_options(None, dict(search="bias,weights", budget=5, images=tmp_path,
                                      holdout=0.25, workers=2, backend="numpy"))
    block = options.tuned_settings(tmp_path / "gt")
    assert list(block) == OLD_SETTINGS
    assert block["search"] == ["bias", "weights"] and block["images"] == str(tmp_path)
    assert block["gt"] == str(tmp_path / "gt") and "workers" not in block
    back = TuneOptions.from_tuned({"settings": json.loads(json.dumps(block))})
    run_only = dict(workers=None, backend="auto")  # not recorded: their defaults come back
    assert back == dataclasses.replace(options, images=str(tmp_path), **run_only)
    with pytest.raises(InputError, match="no settings block"):
        TuneOptions.from_tuned({"weights": [1.0]})


def test_an_old_tuned_json_reads_back():
    """A settings block exactly as main's tune wrote it (no workers, engine or backend)."""
    old = {"search": ["weights", "bias", "crf"], "holdout": 0.25, "budget": 20, "seed": 1,
           "bias_bound": 2.0, "crf_images": 4, "crf_crop": 16, "crf_batch": 2, "crf_steps": 8,
           "crf_lr": 0.02, "refit": False, "ignore_index": 255, "images": "/data/images",
           "gt": "/data/gt"}
    options = TuneOptions.from_tuned({"settings": old})
    assert options.tuned_settings("/data/gt") == old
    assert options.search == ("weights", "bias", "crf") and options.crf_steps == 8


def test_the_options_are_documented_once():
    doc = " ".join(TuneOptions.__doc__.split())
    for f in dataclasses.fields(TuneOptions):
        assert f"{f.name} : default {f.default!r} {f.metadata['help']}" in doc
    assert "options : TuneOptions" in segkit.tune.__doc__


# ---- the stages, each alone -----------------------------------------------------------------
def test_split_is_seeded_disjoint_and_keeps_one_image_on_each_side():
    stems = [f"s{i}" for i in range(10)]
    a = tn.split_stems(stems, 0.3, np.random.default_rng(4))
    assert a == tn.split_stems(stems, 0.3, np.random.default_rng(4))
    search, hold = a
    assert len(hold) == 3 and hold == sorted(hold) and not set(search) & set(hold)
    assert [s for s in stems if s in search] == search and set(search) | set(hold) == set(stems)
    assert len(tn.split_stems(stems, 0.01, np.random.default_rng(0))[1]) == 1
    assert len(tn.split_stems(stems[:2], 0.99, np.random.default_rng(0))[0]) == 1
    assert tn.split_stems(stems, 0.3, np.random.default_rng(5))[1] != hold


def test_each_image_is_read_once_for_the_search_and_the_fit(oof, monkeypatch):
    root, specs, labels, probs, stems = oof
    run = _run(oof, images=root / "images", search="weights,crf", **FIT)
    reads: list[str] = []
    real = type(run.reader).read
    monkeypatch.setattr(type(run.reader), "read",
                        lambda self, stem: reads.append(stem) or real(self, stem))
    search, hold = stems[:18], stems[18:]
    fit, _ = fit_draw(search, 0, 4)
    pix, pix_hold, fit_images, seconds = tn.read_search(run, search, hold, fit)
    assert sorted(reads) == sorted(stems)  # every image once, the fit's included
    assert [f.stem for f in fit_images] == sorted(fit) and seconds >= 0
    reads.clear()
    expected = PixelSet.join([run.reader(s) for s in search], 3, len(CLASSES))
    assert pix.stems == expected.stems == sorted(search) and pix_hold.stems == sorted(hold)
    np.testing.assert_array_equal(pix.data, expected.data)
    np.testing.assert_array_equal(pix.settled, expected.settled)
    one = fit_images[0]
    i = stems.index(one.stem)
    np.testing.assert_array_equal(one.target, labels[i])
    assert [p.shape for p in one.probs] == [probs[m, i].shape for m in range(3)]


def test_the_fit_images_give_the_fit_what_it_read_before(oof):
    """FitImage.inputs: the weighted mean of the stores (floored), the image, the targets."""
    from PIL import Image

    root, specs, labels, probs, stems = oof
    run = _run(oof, images=root / "images", search="weights,crf", **FIT)
    _, _, fit_images, _ = tn.read_search(run, stems, [], stems[:2])
    stores = [segkit.io.store.open_store(s) for s in specs]
    w = [0.5, 0.3, 0.2]
    for f in fit_images:
        mean, image, target = f.inputs(w)
        _, want = segkit.soft_vote([x.read(f.stem) for x in stores], w, return_probs=True)
        np.testing.assert_array_equal(mean, np.maximum(want, np.float32(st.PROB_FLOOR)))
        rgb = np.asarray(Image.open(root / "images" / f"{f.stem}.png").convert("RGB"))
        np.testing.assert_array_equal(image, rgb.transpose(2, 0, 1).astype(np.float32))
        assert image.dtype == np.float32 and target.dtype == np.int64


def test_the_search_stage_is_seeded_and_returns_its_best(oof):
    root, specs, *_, stems = oof
    run = _run(oof, budget=12)
    pix, *_ = tn.read_search(run, stems, [], [])
    results = []
    for _ in range(2):
        history: list = []
        w, b, best, used = tn.search_weights(run, pix, np.random.default_rng(1), history)
        results.append((list(w), list(b), best, history))
        assert 1 <= used == len(history) <= 12
        assert best == max(h["miou"] for h in history) == miou_of(pix.confusion(w, b))
    assert results[0] == results[1]
    assert results[0][3][0]["weights"] == [1 / 3] * 3  # from equal weights


def test_the_crf_fit_stage_runs_on_what_was_read(oof):
    pytest.importorskip("torch")
    root, specs, *_, stems = oof
    run = _run(oof, images=root / "images", search="weights,crf", **FIT)
    fit, rng = fit_draw(stems, 2, 3)
    _, _, fit_images, _ = tn.read_search(run, stems, [], fit)
    options = run.options.fit()
    lines: list[str] = []
    fitted, record = fit_crf(list(fit_images), rng, [1 / 3] * 3, None, options=options,
                             say=lines.append)
    assert record["images"] == fit and len(record["loss"]) == FIT["crf_steps"]
    assert fitted is not None and len(fitted["weight"]) == len(CLASSES)
    consumed = list(fit_images)
    again = fit_crf(consumed, fit_draw(stems, 2, 3)[1], [1 / 3] * 3, None,
                    options=options, say=lines.append)
    assert consumed == []  # the fit lets the probabilities go as it makes its inputs
    assert again[1]["loss"] == record["loss"] and again[0] == fitted
    assert any(line.startswith("    crf fit:") for line in lines)


def test_the_holdout_stage_without_crf_equals_the_search_arithmetic(oof):
    """The held-out pass (EnsembleSetting.labels on whole images) and the search's compacted pixels
    agree on the same weights and bias."""
    root, specs, *_, stems = oof
    run = _run(oof)
    hold = stems[:8]
    w, b = np.array([0.6, 0.3, 0.1]), np.linspace(-0.3, 0.3, len(CLASSES))
    metrics = tn.measure_holdout(run, hold, w, b, {"off": None})
    pix, *_ = tn.read_search(run, hold, [], [])
    assert metrics["holdout"]["tuned"]["miou"] == miou_of(pix.confusion(w, b))
    assert metrics["holdout"]["equal"]["miou"] == miou_of(pix.confusion([1, 1, 1], None))
    assert metrics["crf_choice"] == "off" and metrics["holdout"]["recipe"] is None
    assert (metrics["holdout_images"], metrics["search_images"]) == (8, len(stems) - 8)


def test_the_refit_stage_reports_all_images(oof):
    root, specs, *_, stems = oof
    run = _run(oof, budget=6, refit=True)
    pix, pix_hold, _, _ = tn.read_search(run, stems[:16], stems[16:], [])
    both = pix + pix_hold
    assert both.pixels == pix.pixels + pix_hold.pixels and both.stems == pix.stems + pix_hold.stems
    history: list = []
    block = tn.refit_all(run, both, np.random.default_rng(0), history, np.full(3, 1 / 3), None)
    assert {h["stage"] for h in history} == {"refit"} and len(history) <= 6
    assert block["oof_miou"] == max(h["miou"] for h in history)
    assert block["oof_equal_miou"] == miou_of(both.confusion(np.full(3, 1 / 3), None))


def test_the_write_stage_writes_the_options_block(oof, tmp_path):
    root, specs, *_ = oof
    res = segkit.tune(specs, root / "gt", tmp_path / "t", budget=3, seed=2, workers=1,
                      progress=False, log=None)
    doc = json.loads((tmp_path / "t" / "tuned.json").read_text())
    assert doc["settings"] == TuneOptions(budget=3, seed=2).tuned_settings(root / "gt")
    assert TuneOptions.from_tuned(doc) == tune_options(None, dict(budget=3, seed=2))
    assert res.out == tmp_path / "t" and (tmp_path / "t" / "tuning.png").is_file()


def test_no_function_of_tune_is_over_100_lines():
    """tune and its helpers stay short (issue 28: no job function over about 100 lines)."""
    root = Path(tn.__file__).parent
    long = []
    for path in [root / "tune.py", *sorted(root.glob("_tune_*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                if size > 100:
                    long.append(f"{path.name}:{node.name} ({size} lines)")
    assert not long


# ---- backend ---------------------------------------------------------------------------------
def test_the_backend_reaches_the_kernels(oof, tmp_path, monkeypatch):
    """backend="numpy": the soft vote, the ConvCRF of the hold-out and the search's kernels
    (settled pixels, vote confusion) all run on numpy, and the result is the one "auto"
    finds (they are exact)."""
    import segkit.jobs.settings as settings_module

    root, specs, *_ = oof
    seen: dict[str, set] = {"soft_vote": set(), "settled_pixels": set(), "convcrf": set(),
                            "vote_confusion": set()}

    def spy(name, real):
        def wrapped(*args, **kwargs):
            seen[name].add(kwargs.get("backend", "auto"))
            return real(*args, **kwargs)
        return wrapped

    for module, name in ((settings_module, "soft_vote"), (_tune_pixels, "settled_pixels"),
                         (_tune_pixels, "vote_confusion"), (settings_module, "convcrf")):
        monkeypatch.setattr(module, name, spy(name, getattr(module, name)))
    kw = dict(images=root / "images", budget=4, seed=1, workers=1, progress=False, log=None)
    res = segkit.tune(specs, root / "gt", tmp_path / "n", backend="numpy", **kw)
    assert seen == {k: {"numpy"} for k in seen}
    for k in seen:
        seen[k].clear()
    ref = segkit.tune(specs, root / "gt", tmp_path / "a", **kw)
    assert seen["vote_confusion"] == set()  # "auto": the fused kernel, not the op
    assert (res.weights, res.bias, res.history) == (ref.weights, ref.bias, ref.history)
    assert res.metrics["holdout"]["tuned"] == ref.metrics["holdout"]["tuned"]


def test_an_unavailable_backend_is_refused_before_reading(oof, tmp_path, monkeypatch):
    root, specs, *_ = oof
    if segkit.backends()["cuda"].available:
        pytest.skip("a CUDA GPU is available here: cuda is not an unavailable backend")

    def no_reading(*args, **kwargs):
        raise AssertionError("tune read images before refusing the backend")

    monkeypatch.setattr(tn, "map_items", no_reading)
    with pytest.raises(segkit.errors.UnavailableError, match="backend='cuda' is not available"):
        segkit.tune(specs, root / "gt", tmp_path / "x", backend="cuda", log=None)
    res = CliRunner().invoke(main, ["tune", *specs, "--gt", str(root / "gt"), "--out",
                                    str(tmp_path / "y"), "--backend", "cuda"])
    assert res.exit_code == 1 and "backend='cuda' is not available" in res.output


def test_the_search_backend_of_each_name():
    assert [tn.search_backend(b) for b in ("auto", "numpy", "numba", "cpp", "cuda")] == \
        ["auto", "numpy", "numba", "auto", "auto"]


def test_iou_of_the_numpy_path_equals_the_fused_kernel(oof):
    root, specs, *_, stems = oof
    run = _run(oof)
    pix, *_ = tn.read_search(run, stems, [], [])
    slow = dataclasses.replace(pix, backend="numpy")
    rng = np.random.default_rng(3)
    for _ in range(3):
        w, b = rng.random(3), rng.uniform(-1, 1, len(CLASSES))
        np.testing.assert_array_equal(slow.confusion(w, b), pix.confusion(w, b))
        assert iou_scores(slow.confusion(w, None))["miou"] == miou_of(pix.confusion(w, None))
