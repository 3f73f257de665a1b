"""segkit.ensemble and `segkit ensemble` end to end on generated confidence stores: labels equal
to soft_vote on the same files, composition through the probability store, the submission CSV
parsed back, missing images, resume after an interruption, the Ray engine and ConvCRF."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import segkit
from segkit.io.masks import read_mask
from segkit.io.names import flatten_name, unflatten_name
from segkit.io.submission import read_submission, resize_labels
from segkit.jobs import ensemble as ens
from segkit.jobs.engine import JobError
from segkit.jobs.settings import EnsembleSetting
from segkit.reference.soft_vote import soft_vote as reference
from segkit.synthetic import model_probs

CLASSES = ["bg", "paper", "metal", "glass", "plastic"]
H, W = 24, 32
STEMS = [flatten_name(f"batch_0{k % 2}/{k:04d}.jpg") for k in range(6)]


def make_stores(root: Path, models: int = 3, stems=STEMS, skip=None, h=H, w=W) -> list[Path]:
    """`models` stores of float16 probabilities for `stems`; skip: {model: [stems it lacks]}."""
    roots = []
    for m in range(models):
        store = segkit.ConfidenceStore.create(root / f"model{m}", CLASSES, model=f"fake{m}",
                                              tta={"flip": bool(m % 2)})
        roots.append(store.root)
    for i, stem in enumerate(stems):
        probs = model_probs(models, len(CLASSES), h, w, agreement=0.7, seed=i)
        for m in range(models):
            if skip and stem in skip.get(m, ()):
                continue
            segkit.ConfidenceStore(roots[m]).write(stem, probs[m])
    return roots


def preset_crf(name, **overrides):
    """A CRF preset as tuned.json holds it."""
    return EnsembleSetting.preset(name, **overrides).to_dict()["crf"]


def expected_labels(roots, stem, weights):
    probs = [segkit.ConfidenceStore(r).read(stem) for r in roots]
    return reference(probs, weights, return_probs=True)


@pytest.fixture
def stores(tmp_path):
    return make_stores(tmp_path / "stores")


def test_end_to_end_labels_probs_and_submission(stores, tmp_path):
    out = tmp_path / "out"
    sample_ids = [unflatten_name(s) for s in STEMS][::-1]  # the sample's order is not sorted
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("image_id,PredictionString\n" + "".join(f"{i},\n" for i in sample_ids))
    weights = [0.5, 0.3, 0.2]
    report = segkit.ensemble(stores, weights, out, submission=tmp_path / "sub.csv",
                             sample=sample, size=16, save_probs=True, workers=2,
                             progress=False)
    assert (report.images, report.written, report.skipped) == (6, 6, 0)
    assert not report.missing and report.submission == tmp_path / "sub.csv"
    probs_store = segkit.ConfidenceStore(out / "probs")
    assert probs_store.stems() == sorted(STEMS) and probs_store.classes == CLASSES
    for stem in STEMS:
        labels, mean = expected_labels(stores, stem, weights)
        got, palette = read_mask(out / "labels" / f"{stem}.png", with_palette=True)
        np.testing.assert_array_equal(got, labels)
        assert palette is not None  # a palette PNG
        np.testing.assert_array_equal(probs_store.read(stem), mean.astype(np.float16))
    sub = read_submission(tmp_path / "sub.csv")
    assert list(sub) == sample_ids
    for image_id, small in sub.items():
        full = read_mask(out / "labels" / f"{flatten_name(image_id)}.png")
        np.testing.assert_array_equal(small, resize_labels(full, 16))
    settings = json.loads((out / "ensemble.json").read_text())
    assert settings["weights"] == weights and settings["last_run"]["written"] == 6


def test_ensembles_compose_through_the_probability_store(stores, tmp_path):
    segkit.ensemble(stores[:2], None, tmp_path / "ab", save_probs=True, workers=1,
                    progress=False)
    segkit.ensemble([tmp_path / "ab" / "probs", stores[2]], [2, 1], tmp_path / "abc",
                    workers=1, progress=False)
    for stem in STEMS:
        ab = segkit.ConfidenceStore(tmp_path / "ab" / "probs").read(stem)
        c = segkit.ConfidenceStore(stores[2]).read(stem)
        np.testing.assert_array_equal(read_mask(tmp_path / "abc" / "labels" / f"{stem}.png"),
                                      reference([ab, c], [2, 1]))


def test_missing_images_are_reported_or_refused(tmp_path):
    roots = make_stores(tmp_path / "s", skip={1: [STEMS[0]], 2: [STEMS[0], STEMS[3]]})
    with pytest.warns(UserWarning, match="voting the 4 images present in every store"):
        report = segkit.ensemble(roots, None, tmp_path / "out", workers=1, progress=False)
    assert report.images == 4
    assert report.missing == {str(roots[1]): [STEMS[0]],
                              str(roots[2]): sorted([STEMS[0], STEMS[3]])}
    assert "lacks 2 image(s)" in str(report)
    with pytest.raises(segkit.StoreError, match="stores differ in their images"):
        segkit.ensemble(roots, None, tmp_path / "strict", strict=True, progress=False)
    # the submission needs every image of the sample
    sample = tmp_path / "sample.csv"
    sample.write_text("image_id,PredictionString\n" +
                      "".join(f"{unflatten_name(s)},\n" for s in STEMS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(segkit.StoreError, match="2 have none"):
            segkit.ensemble(roots, None, tmp_path / "out", submission=tmp_path / "s.csv",
                            sample=sample, workers=1, progress=False)
    assert not (tmp_path / "s.csv").exists()


def test_resume_after_interruption(stores, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_call = ens._VoteImage.__call__
    calls = []

    def crashing(self, stem):
        calls.append(stem)
        if len(calls) == 4:
            raise RuntimeError("simulated crash")
        return real_call(self, stem)

    monkeypatch.setattr(ens._VoteImage, "__call__", crashing)
    with pytest.raises(JobError, match="simulated crash"):
        segkit.ensemble(stores, [1, 2, 3], out, save_probs=True, workers=1, progress=False)
    monkeypatch.setattr(ens._VoteImage, "__call__", real_call)
    done = sorted(p.stem for p in (out / "labels").glob("*.png"))
    assert len(done) == 3
    mtimes = {s: os.stat(out / "labels" / f"{s}.png").st_mtime_ns for s in done}
    # a crash mid-write leaves a temporary: it is cleaned up, never taken for an output
    (out / "labels" / f".{STEMS[5]}.tmp-999-deadbeef.png").write_bytes(b"\x89PNG partial")
    report = segkit.ensemble(stores, [1, 2, 3], out, save_probs=True, workers=1,
                             progress=False)
    assert (report.written, report.skipped) == (3, 3)
    assert not list((out / "labels").glob(".*"))
    for stem in STEMS:
        labels, _ = expected_labels(stores, stem, [1, 2, 3])
        np.testing.assert_array_equal(read_mask(out / "labels" / f"{stem}.png"), labels)
    for s, t in mtimes.items():  # finished images were not redone
        assert os.stat(out / "labels" / f"{s}.png").st_mtime_ns == t
    # a damaged output (wrong size) is redone; other settings are refused; --no-resume redoes all
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(out / "labels" / f"{STEMS[0]}.png")
    assert segkit.ensemble(stores, [1, 2, 3], out, save_probs=True, workers=1,
                           progress=False).written == 1
    with pytest.raises(ValueError, match="other settings"):
        segkit.ensemble(stores, [1, 1, 1], out, workers=1, progress=False)
    assert segkit.ensemble(stores, [1, 1, 1], out, resume=False, workers=1,
                           progress=False).written == 6


def test_job_errors_name_the_image(stores, tmp_path):
    path = Path(stores[1]) / f"{STEMS[2]}.npy"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(JobError, match=rf"{re.escape(STEMS[2])}: StoreError: .*truncated"):
        segkit.ensemble(stores, None, tmp_path / "out", workers=1, progress=False)
    # a store holding another size for an image
    store = segkit.ConfidenceStore(stores[0])
    store.write(STEMS[2], np.full((len(CLASSES), H + 1, W), 0.2))
    segkit.ConfidenceStore(stores[1]).write(STEMS[2], np.full((len(CLASSES), H, W), 0.2))
    with pytest.raises(JobError, match=r"holds \(5, 24, 32\), but .* holds \(5, 25, 32\)"):
        segkit.ensemble(stores, None, tmp_path / "out2", workers=1, progress=False)


def test_argument_errors(stores, tmp_path):
    other = segkit.ConfidenceStore.create(tmp_path / "other", ["a", "b"])
    with pytest.raises(segkit.StoreError, match="same classes"):
        segkit.ensemble([stores[0], other.root], None, tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="weights has 2 values for 3 models"):
        segkit.ensemble(stores, [1, 2], tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="downsample must be one of"):
        segkit.ensemble(stores, None, tmp_path / "o", downsample="area", progress=False)
    with pytest.raises(ValueError, match="sample is only used with submission"):
        segkit.ensemble(stores, None, tmp_path / "o", sample=tmp_path / "x.csv",
                        progress=False)
    with pytest.raises(segkit.StoreError, match="not a confidence store"):
        segkit.ensemble([tmp_path], None, tmp_path / "o", progress=False)


# ---- ConvCRF (issue 4): the path is wired exactly to the agreed API ---------------------------
def _write_images(root: Path):
    rng = np.random.default_rng(0)
    for stem in STEMS:
        path = root / unflatten_name(stem, suffix=".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)


def test_crf_call_uses_the_agreed_api(stores, tmp_path, monkeypatch):
    """The CRF stage with a stand-in for segkit.convcrf (what the ensemble setting calls): it
    receives the float32 mean (C, H, W), the image (H, W, 3) and the preset's setting,
    "logits" for "seed" and "probs" otherwise, and its scores' argmax is what gets written.
    (The real ConvCRF is tested below.)"""
    from segkit.jobs import settings as st

    images = tmp_path / "images"
    _write_images(images)
    calls = []

    def fake_convcrf(probs, image, *, backend, **setting):
        calls.append((setting, probs.dtype, probs.shape, image.shape))
        return np.roll(probs, 1, axis=0)  # argmax + 1: recognisably not the plain vote

    monkeypatch.setattr(st, "convcrf", fake_convcrf)
    for preset, kind in (("convcrf", "probs"), ("seed", "logits")):
        calls.clear()
        segkit.ensemble(stores, None, tmp_path / preset, crf=preset, images=images, workers=1,
                        progress=False)
        setting = segkit.ops.convcrf.convcrf_params(preset, unary_kind=kind).as_dict()
        assert calls == [(setting, np.float32, (len(CLASSES), H, W), (H, W, 3))] * 6
        for stem in STEMS:
            plain = expected_labels(stores, stem, None)[0]
            np.testing.assert_array_equal(read_mask(tmp_path / preset / "labels" / f"{stem}.png"),
                                          (plain + 1) % len(CLASSES))
    (images / unflatten_name(STEMS[0], ".png")).unlink()
    with pytest.raises(JobError, match=r"no image for .* \(looked for batch_00/0000.jpg"):
        segkit.ensemble(stores, None, tmp_path / "noimg", crf="convcrf", images=images,
                        workers=1, progress=False)


@pytest.mark.parametrize("preset", ["convcrf", "seed"])
def test_crf_refines_the_averaged_probabilities(stores, tmp_path, preset):
    images = tmp_path / "images"
    _write_images(images)
    out = tmp_path / preset
    segkit.ensemble(stores, [1, 2, 1], out, crf=preset, images=images, workers=1,
                    progress=False)
    for stem in STEMS[:2]:
        _, mean = expected_labels(stores, stem, [1, 2, 1])
        image = np.asarray(Image.open(images / unflatten_name(stem, ".png")).convert("RGB"))
        expected = segkit.convcrf_labels(mean, image, preset=preset,
                                         unary_kind="logits" if preset == "seed" else "probs")
        np.testing.assert_array_equal(read_mask(out / "labels" / f"{stem}.png"),
                                      np.asarray(expected))
    with pytest.raises(ValueError, match="crf needs the images"):
        segkit.ensemble(stores, None, tmp_path / "o", crf=preset, progress=False)
    with pytest.raises(ValueError, match="crf must be one of"):
        segkit.ensemble(stores, None, tmp_path / "o", crf="dense", images=images,
                        progress=False)


# ---- engines and the command line ----------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="ray is not installed (the ray extra: pip install 'segkit[ray]')")
def test_ray_engine(stores, tmp_path, monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        report = segkit.ensemble(stores, None, tmp_path / "out", engine="ray", workers=2,
                                 progress=False)
    finally:
        ray.shutdown()
    assert report.written == 6
    for stem in STEMS:
        np.testing.assert_array_equal(read_mask(tmp_path / "out" / "labels" / f"{stem}.png"),
                                      expected_labels(stores, stem, None)[0])


def test_cli(tmp_path):
    from segkit.cli import main

    stores = make_stores(tmp_path / "square", h=32, w=32)
    sample = tmp_path / "sample.csv"
    sample.write_text("image_id,PredictionString\n" +
                      "".join(f"{unflatten_name(s)},\n" for s in STEMS))
    runner = CliRunner()
    args = ["ensemble", *map(str, stores), "--weights", "0.5,0.3,0.2", "--out",
            str(tmp_path / "out"), "--submission", str(tmp_path / "sub.csv"), "--sample",
            str(sample), "--size", "16", "--downsample", "mode", "--workers", "1"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "6 images (6 written, 0 already done)" in result.output
    sub = read_submission(tmp_path / "sub.csv")
    assert list(sub) == [unflatten_name(s) for s in STEMS]
    for image_id, small in sub.items():
        full = read_mask(tmp_path / "out" / "labels" / f"{flatten_name(image_id)}.png")
        np.testing.assert_array_equal(full, expected_labels(stores, flatten_name(image_id),
                                                            [0.5, 0.3, 0.2])[0])
        np.testing.assert_array_equal(small, resize_labels(full, 16, "mode"))
    again = runner.invoke(main, args)
    assert again.exit_code == 0 and "(0 written, 6 already done)" in again.output
    bad = runner.invoke(main, ["ensemble", *map(str, stores), "--weights", "1,2", "--out",
                               str(tmp_path / "o2")])
    assert bad.exit_code != 0 and "weights has 2 values for 3 models" in bad.output
    bad = runner.invoke(main, ["ensemble", str(stores[0]), "--weights", "a,b", "--out",
                               str(tmp_path / "o3")])
    assert bad.exit_code != 0 and "expected numbers separated by commas" in bad.output
    assert "Example" in runner.invoke(main, ["ensemble", "--help"]).output


def test_fold_store_sets_vote_like_whole_stores(stores, tmp_path):
    """A model's OOF fold stores joined as 'a_fold0,a_fold1' vote exactly as one store."""
    sets = []
    for m, root in enumerate(stores):
        src = segkit.ConfidenceStore(root)
        parts = [segkit.ConfidenceStore.create(tmp_path / f"m{m}_fold{f}", CLASSES)
                 for f in range(2)]
        for i, stem in enumerate(src.stems()):
            parts[i % 2].write(stem, src.read(stem))
        sets.append(",".join(str(p.root) for p in parts))
    whole = segkit.ensemble(stores, [1, 2, 3], tmp_path / "whole", progress=False, workers=1)
    split = segkit.ensemble(sets, [1, 2, 3], tmp_path / "split", progress=False, workers=2)
    assert whole.images == split.images == len(STEMS)
    for stem in STEMS:
        np.testing.assert_array_equal(read_mask(tmp_path / "split" / "labels" / f"{stem}.png"),
                                      read_mask(tmp_path / "whole" / "labels" / f"{stem}.png"))
    settings = json.loads((tmp_path / "split" / "ensemble.json").read_text())
    assert settings["stores"][0].count(",") == 1
    from segkit.cli import main

    # fold stores of one set must hold disjoint images: m1_fold0 and m0_fold0 share theirs
    result = CliRunner().invoke(main, ["ensemble", sets[0],
                                       f"{tmp_path / 'm1_fold0'},{tmp_path / 'm0_fold0'}",
                                       "--out", str(tmp_path / "bad")])
    assert result.exit_code != 0 and "disjoint" in result.output


# ---- a tuned setting given as a dict is checked as a tuned.json is ----------------------------
def test_a_bad_tuned_dict_is_refused_before_any_image(stores, tmp_path):
    from segkit.errors import InputError

    images = tmp_path / "images"
    _write_images(images)
    good = {"weights": [1, 1, 1], "classes": CLASSES, "bias": None, "crf": None}
    cases = [(dict(good, crf="dense"), r"tuned \(dict\): crf preset must be one of .*'dense'"),
             (dict(good, bias=[0.1, 0.2]), r"tuned \(dict\): bias must hold one number per "
                                           r"class \(5\)"),
             (dict(good, crf=dict(preset_crf("convcrf"), weight=[0.2] * 3)),
              r"tuned \(dict\): crf weight has 3 values for 5 classes"),
             (dict(good, crf={"size": 3}), r"tuned \(dict\): crf has unknown keys \['size'\]"),
             (dict(good, weights=[1, -1, 1]), r"tuned \(dict\): weights\[1\] is -1"),
             (dict(good, classes="bg"), r"tuned \(dict\): classes must be a list"),
             ({"weights": [1, 1, 1]}, r"tuned \(dict\): not a segkit tuned setting")]
    for i, (doc, message) in enumerate(cases):
        out = tmp_path / f"o{i}"
        with pytest.raises(InputError, match=message):
            segkit.ensemble(stores, None, out, tuned=doc, images=images, workers=1,
                            progress=False)
        assert not out.exists()


def test_a_tuned_dict_may_name_a_crf_preset(stores, tmp_path):
    images = tmp_path / "images"
    _write_images(images)
    bias = [0.3, 0, -0.2, 0, 0.1]
    tuned = {"weights": [1, 2, 1], "classes": CLASSES, "bias": bias, "crf": "convcrf"}
    out = tmp_path / "out"
    segkit.ensemble(stores, None, out, tuned=tuned, images=images, workers=1, progress=False)
    assert tuned["crf"] == "convcrf"  # the caller's dict is untouched
    crf = preset_crf("convcrf")
    assert json.loads((out / "ensemble.json").read_text())["crf_setting"] == crf
    for stem in STEMS[:3]:
        _, mean = segkit.soft_vote([segkit.ConfidenceStore(r).read(stem) for r in stores],
                                   [1, 2, 1], return_probs=True)
        image = np.asarray(Image.open(images / unflatten_name(stem, ".png")).convert("RGB"))
        np.testing.assert_array_equal(read_mask(out / "labels" / f"{stem}.png"),
                                      EnsembleSetting.from_tuned(tuned).labels(mean, image))


# ---- issue 27: a folder's outputs belong to one setting ---------------------------------------
def test_an_interrupted_no_resume_run_never_leaves_the_old_labels(tmp_path):
    """weights [1, 0], then [0, 1] with resume=False failing part way (a truncated store
    file), then [0, 1] resumed: every label is the [0, 1] vote (the old labels were removed
    before the new setting was recorded)."""
    stores = make_stores(tmp_path / "s", models=2)
    out = tmp_path / "out"
    segkit.ensemble(stores, [1, 0], out, workers=1, progress=False)
    bad = Path(stores[1]) / f"{sorted(STEMS)[3]}.npy"
    whole = bad.read_bytes()
    bad.write_bytes(whole[:-10])
    with pytest.raises(JobError, match="truncated"):
        segkit.ensemble(stores, [0, 1], out, resume=False, workers=1, progress=False)
    bad.write_bytes(whole)
    report = segkit.ensemble(stores, [0, 1], out, workers=1, progress=False)
    assert report.written == 3 and report.skipped == 3
    for stem in STEMS:
        np.testing.assert_array_equal(read_mask(out / "labels" / f"{stem}.png"),
                                      expected_labels(stores, stem, [0, 1])[0], err_msg=stem)


def test_no_resume_removes_the_other_settings_probabilities_too(stores, tmp_path):
    out = tmp_path / "out"
    segkit.ensemble(stores, [1, 2, 3], out, save_probs=True, workers=1, progress=False)
    real_call = ens._VoteImage.__call__

    def stop(self, stem):
        raise RuntimeError("stopped before the first image")

    ens._VoteImage.__call__ = stop
    try:
        with pytest.raises(JobError, match="stopped"):
            segkit.ensemble(stores, [1, 1, 1], out, save_probs=True, resume=False, workers=1,
                            progress=False)
    finally:
        ens._VoteImage.__call__ = real_call
    assert not list((out / "labels").glob("*.png")) and not list((out / "probs").glob("*.npy"))


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary", b"{not json", b"[1, 2]"],
                         ids=["not-utf8", "bad-json", "not-an-object"])
def test_an_unreadable_settings_file_is_named(stores, tmp_path, content):
    from segkit.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "ensemble.json").write_bytes(content)
    with pytest.raises(segkit.errors.DataError, match=r"ensemble\.json: unreadable"):
        segkit.ensemble(stores, None, out, workers=1, progress=False)
    result = CliRunner().invoke(main, ["ensemble", *map(str, stores), "--out", str(out),
                                       "--workers", "1"])
    assert result.exit_code == 1 and "ensemble.json: unreadable" in result.output
    assert "Traceback" not in result.output
    # --no-resume recomputes (and rewrites the file)
    assert segkit.ensemble(stores, None, out, resume=False, workers=1,
                           progress=False).written == 6


def test_a_tuned_crf_refuses_stores_that_hold_no_probabilities(tmp_path):
    """A fitted CRF takes the log of the averaged probabilities: stores whose values do not
    sum to 1 per pixel (written past the store's own check) are refused with the image named,
    before the CRF runs."""
    stores = make_stores(tmp_path / "s", models=2)
    half = segkit.ConfidenceStore.create(tmp_path / "half", CLASSES)
    for stem in STEMS:
        half.write(stem, segkit.ConfidenceStore(stores[1]).read(stem) / 2, check=False)
    images = tmp_path / "images"
    _write_images(images)
    crf = dict(preset_crf("convcrf", blur=2, num_iter=2), weight=[0.1, 0.3, 0.2, 0.4, 0.25])
    doc = {"weights": [1, 1], "classes": CLASSES, "crf": crf}
    with pytest.raises(JobError, match=r"the averaged probabilities: a tuned CRF setting takes "
                                       r"probabilities .* pixel sums over the 5 classes from 0\.7"):
        segkit.ensemble([stores[0], half.root], None, tmp_path / "o", tuned=doc, images=images,
                        workers=1, progress=False)
    assert segkit.ensemble(stores, None, tmp_path / "ok", tuned=doc, images=images, workers=1,
                           progress=False).written == 6


def test_small_cli_defects(stores, tmp_path):
    """--no-progress in ensemble and crf; an empty weights list is named as empty."""
    from segkit.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["ensemble", *map(str, stores), "--out", str(tmp_path / "o"),
                               "--workers", "1", "--no-progress"])
    assert res.exit_code == 0 and "6 written" in res.output, res.output
    assert "--no-progress" in runner.invoke(main, ["crf", "--help"]).output
    res = runner.invoke(main, ["ensemble", *map(str, stores), "--out", str(tmp_path / "e"),
                               "--weights", ","])
    assert res.exit_code == 2 and "no weight given" in res.output
    with pytest.raises(segkit.errors.InputError, match="tuned \\(dict\\): weights is empty"):
        segkit.ensemble(stores, None, tmp_path / "t", progress=False,
                        tuned={"weights": [], "classes": CLASSES})


def test_a_resumed_run_decodes_the_label_maps_it_finds(stores, tmp_path):
    """A label map whose header is right but whose pixels are not (truncated data, a label
    that is no class) is redone, not skipped (the docs say resumed files are decoded)."""
    out = tmp_path / "out"
    segkit.ensemble(stores, None, out, workers=1, progress=False)
    first, second = (out / "labels" / f"{s}.png" for s in STEMS[:2])
    data = first.read_bytes()
    first.write_bytes(data[:len(data) // 2])  # the header (and size) survive
    Image.fromarray(np.full((H, W), len(CLASSES) + 3, np.uint8)).save(second)
    report = segkit.ensemble(stores, None, out, workers=1, progress=False)
    assert (report.written, report.skipped) == (2, 4)
    for stem in STEMS[:2]:
        np.testing.assert_array_equal(read_mask(out / "labels" / f"{stem}.png"),
                                      expected_labels(stores, stem, None)[0])
