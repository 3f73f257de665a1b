"""segkit.vote_confusion (the fused vote + bias + confusion kernel against its NumPy
reference), the tuner's exact pixel compaction, `segkit tune` end to end on generated OOF
predictions (fold store sets, one model clearly better), and `segkit ensemble --tuned`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import segkit
from segkit.cli import main
from segkit.io.masks import read_mask, write_mask
from segkit.jobs import settings as st
from segkit.jobs import tune as tn
from segkit.jobs._tune_pixels import PixelReader, PixelSet
from segkit.ops.confusion import iou_scores
from segkit.reference.soft_vote import weight_factors
from segkit.reference.vote_confusion import bias_scale, biased_labels
from segkit.synthetic import model_probs, oof_predictions

CLASSES = [f"c{k}" for k in range(6)]


# ---- the kernel --------------------------------------------------------------------------------
def _random_case(rng, m, c, shape, dtype):
    probs = model_probs(m, c, *shape[-2:], agreement=0.4, seed=int(rng.integers(1000)))
    if len(shape) == 3:
        probs = np.stack([model_probs(m, c, *shape[-2:], seed=int(rng.integers(1000)) + i)
                          for i in range(shape[0])], axis=1)
    gt = rng.integers(0, c, probs.shape[1:-3] + probs.shape[-2:])
    gt[rng.random(gt.shape) < 0.1] = 255
    return [p.astype(dtype) for p in probs], gt


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (33, 65), (3, 9, 11)])
def test_numba_equals_reference(dtype, shape):
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    for m, c in ((1, 2), (3, 6), (5, 11)):
        probs, gt = _random_case(rng, m, c, shape, dtype)
        for weights, bias in ((None, None), (rng.random(m) + 0.1, None),
                              ([0.0] + [1.0] * (m - 1) if m > 1 else None,
                               rng.normal(0, 1, c))):
            ref = segkit.vote_confusion(probs, gt, weights, bias, backend="numpy")
            got = segkit.vote_confusion(probs, gt, weights, bias, backend="numba")
            np.testing.assert_array_equal(got, ref)
            assert ref.sum() == (gt != 255).sum()


def test_half_conversion_is_exact_for_every_bit_pattern():
    from segkit._numba.vote_confusion import half_to_float_all

    bits = np.arange(65536, dtype=np.uint16)
    out = np.empty(65536, np.float32)
    half_to_float_all(bits, out)
    ref = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(out), nan)
    np.testing.assert_array_equal(out[~nan].view(np.uint32), ref[~nan].view(np.uint32))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_settled_pixels_equal_the_definition(dtype, backend):
    from segkit.ops.vote_confusion import settled_pixels

    rng = np.random.default_rng(2)
    for c, n in ((1, 4), (2, 1), (3, 7), (11, 5000)):
        q = model_probs(1, c, 1, n, seed=c)[0, :, 0].astype(dtype)
        q[:, :3] = q[:, :1]  # equal pixels; and a tie between two classes:
        if c > 1:
            q[0, -1] = q[1, -1] = 0.5
            q[2:, -1] = 0
        ratio = float(rng.uniform(1, 4))
        top, settled = settled_pixels(q, ratio, backend=backend)
        f = q.astype(np.float32)
        srt = np.sort(f, axis=0)
        second = srt[-2] if c > 1 else np.full(n, -1, np.float32)
        np.testing.assert_array_equal(top, f.argmax(0))
        np.testing.assert_array_equal(settled, srt[-1] > np.float32(ratio) * second)
        assert settled[-1] == (c == 1)


def test_settled_pixels_refuses_bad_input():
    from segkit.errors import InputError, InputTypeError
    from segkit.ops.vote_confusion import settled_pixels

    with pytest.raises(InputError, match="ratio"):
        settled_pixels(np.ones((2, 3), np.float32), 0.0)
    with pytest.raises(InputError, match=r"\(C, P\)"):
        settled_pixels(np.ones(3, np.float32), 2.0)
    with pytest.raises(InputTypeError, match="float64"):
        settled_pixels(np.ones((2, 3)), 2.0)
    with pytest.raises(InputError, match="backend"):
        settled_pixels(np.ones((2, 3), np.float32), 2.0, backend="cpp")


def test_labels_follow_the_definition_by_hand():
    # one pixel, two models: mean (0.45, 0.55) -> 1; a bias of +0.3 on class 0 gives
    # 0.45 * e^0.3 = 0.607 > 0.55 -> 0
    a = np.array([[[0.5]], [[0.5]]], np.float32)
    b = np.array([[[0.4]], [[0.6]]], np.float32)
    gt = np.array([[0]])
    for backend in ("numpy", "numba"):
        assert segkit.vote_confusion([a, b], gt, backend=backend)[0].tolist() == [0, 1]
        assert segkit.vote_confusion([a, b], gt, bias=[0.3, 0], backend=backend)[0].tolist() \
            == [1, 0]
        # weights [1, 0]: model A alone, a tie (0.5, 0.5) -> the smaller class
        assert segkit.vote_confusion([a, b], gt, [1, 0], backend=backend)[0].tolist() == [1, 0]


def test_ties_go_to_the_smallest_class():
    p = np.full((4, 3, 5), 0.25, np.float16)
    gt = np.zeros((3, 5), np.int64)
    for backend in ("numpy", "numba"):
        cm = segkit.vote_confusion([p, p], gt, backend=backend)
        assert cm[0, 0] == 15 and cm.sum() == 15


def test_ignore_index_and_empty_input():
    p = np.full((2, 0, 4), 0.5, np.float32)
    for backend in ("numpy", "numba"):
        assert segkit.vote_confusion([p], np.zeros((0, 4), np.int32),
                                     backend=backend).tolist() == [[0, 0], [0, 0]]
    q = np.array([[[0.9, 0.2]], [[0.1, 0.8]]], np.float32)
    for backend in ("numpy", "numba"):
        cm = segkit.vote_confusion([q], np.array([[255, 1]]), backend=backend)
        assert cm.tolist() == [[0, 0], [0, 1]]
        cm = segkit.vote_confusion([q], np.array([[0, 1]]), ignore_index=None, backend=backend)
        assert cm.tolist() == [[1, 0], [0, 1]]


def test_bad_input_is_named():
    p = np.full((3, 2, 2), 1 / 3, np.float32)
    gt = np.zeros((2, 2), np.int64)
    with pytest.raises(ValueError, match="one number per class"):
        segkit.vote_confusion([p], gt, bias=[0, 1])
    with pytest.raises(ValueError, match=r"bias\[1\] is nan"):
        segkit.vote_confusion([p], gt, bias=[0, float("nan"), 0])
    with pytest.raises(ValueError, match="gt must have shape"):
        segkit.vote_confusion([p], gt[:1])
    with pytest.raises(ValueError, match="backend must be one of"):
        segkit.vote_confusion([p], gt, backend="cpp")
    with pytest.raises(ValueError, match="outside 0..2"):
        segkit.vote_confusion([p], gt + 3, backend="numba")
    with pytest.raises(ValueError, match="weights has 2 values for 1 models"):
        segkit.vote_confusion([p], gt, [1, 1])


# ---- generated OOF data in fold store sets -------------------------------------------------------
def write_oof(root: Path, n: int = 24, size: int = 24, folds: int = 2, seed: int = 0,
              noise=(1.5, 3.5, 3.5)):
    """Three models' OOF predictions (model 0 clearly better), each as `folds` fold stores with
    disjoint stems; masks in root/gt; images in root/images; returns the model specs."""
    labels, probs = oof_predictions(n, size, size, len(CLASSES), noise=noise, seed=seed)
    stems = [f"img{i:03d}" for i in range(n)]
    specs = []
    for m in range(len(noise)):
        roots = []
        for f in range(folds):
            store = segkit.ConfidenceStore.create(root / f"m{m}_fold{f}", CLASSES,
                                                  model=f"m{m}")
            for i in range(f, n, folds):
                store.write(stems[i], probs[m, i])
            roots.append(str(store.root))
        specs.append(",".join(roots))
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, (len(CLASSES), 3))
    from PIL import Image

    for i, stem in enumerate(stems):
        write_mask(root / "gt" / f"{stem}.png", labels[i])
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(colours[labels[i]].astype(np.uint8)).save(root / "images" /
                                                                  f"{stem}.png")
    return specs, labels, probs, stems


@pytest.fixture(scope="module")
def oof(tmp_path_factory):
    root = tmp_path_factory.mktemp("oof")
    specs, labels, probs, stems = write_oof(root)
    return root, specs, labels, probs, stems


def test_compaction_is_exact(oof):
    """The settled pixels' confusion plus the kernel over kept pixels equals the plain vote on
    whole images, for weights and biases within the bound."""
    root, specs, labels, probs, stems = oof
    masks = {s: str(root / "gt" / f"{s}.png") for s in stems}
    reader = PixelReader(specs, masks, len(CLASSES), 255, float(np.exp(2 * 1.0) * 1.001))
    parts = [reader(s) for s in stems]
    pix = PixelSet.join(parts, 3, len(CLASSES))
    assert 0 < pix.kept < pix.pixels == labels.size
    stores = [segkit.io.store.open_store(s) for s in specs]
    rng = np.random.default_rng(5)
    for _ in range(4):
        w = rng.random(3)
        b = rng.uniform(-1, 1, len(CLASSES))
        full = sum(segkit.vote_confusion([st.read(s) for st in stores], read_mask(masks[s]),
                                         w, b) for s in stems)
        np.testing.assert_array_equal(pix.confusion(w, b), full)


def test_tune_favours_the_better_model_and_beats_equal(oof, tmp_path):
    root, specs, *_ = oof
    res = segkit.tune(specs, root / "gt", tmp_path / "t", holdout=0.25, budget=80, seed=1,
                      workers=1, progress=False, log=None)
    assert int(np.argmax(res.weights)) == 0
    assert abs(sum(res.weights) - 1) < 1e-9 and min(res.weights) >= 0
    hold = res.metrics["holdout"]
    assert hold["tuned"]["miou"] > hold["equal"]["miou"]
    assert hold["recipe"] is None and "images" in res.metrics["recipe_note"]
    assert res.metrics["crf_candidates"] is None and res.crf_name == "off"
    doc = json.loads((tmp_path / "t" / "tuned.json").read_text())
    for key in ("weights", "bias", "crf", "crf_name", "metrics", "history"):
        assert key in doc
    assert doc["bias"] is None or len(doc["bias"]) == len(CLASSES)
    assert doc["crf"] is None and doc["crf_name"] == "off" and doc["refit"] is None
    assert (doc["weights"], doc["bias"]) == (res.weights, res.bias)
    assert len(doc["holdout_stems"]) == 6
    assert {h["stage"] for h in doc["history"]} == {"search"}
    assert (tmp_path / "t" / "tuning.png").stat().st_size > 0
    search = [h["miou"] for h in doc["history"] if h["stage"] == "search"]
    assert max(search) > search[0]  # the search improved on its start (equal weights)


def test_held_out_images_never_influence_the_search(oof, tmp_path):
    """Scrambling the held-out images' masks changes the held-out metrics, but not one
    candidate of the search, nor the weights and bias fitted without the hold-out."""
    root, specs, labels, probs, stems = oof
    kw = dict(holdout=0.25, budget=40, seed=2, workers=1, progress=False, log=None)
    first = segkit.tune(specs, root / "gt", tmp_path / "a", **kw)
    doc = json.loads((tmp_path / "a" / "tuned.json").read_text())
    gt = tmp_path / "gt"
    rng = np.random.default_rng(0)
    for i, stem in enumerate(stems):
        mask = labels[i]
        if stem in doc["holdout_stems"]:
            mask = rng.integers(0, len(CLASSES), mask.shape).astype(mask.dtype)
        write_mask(gt / f"{stem}.png", mask)
    second = segkit.tune(specs, gt, tmp_path / "b", **kw)
    doc2 = json.loads((tmp_path / "b" / "tuned.json").read_text())
    assert doc2["holdout_stems"] == doc["holdout_stems"]
    searched = [[h for h in d["history"] if h["stage"] == "search"] for d in (doc, doc2)]
    assert searched[0] == searched[1] and len(searched[0]) > 1
    assert (doc2["weights"], doc2["bias"]) == (doc["weights"], doc["bias"])
    assert second.metrics["holdout"]["tuned"] != first.metrics["holdout"]["tuned"]


@pytest.mark.parametrize("budget", [1, 2, 5, 13])
def test_the_search_stays_within_its_budget(oof, tmp_path, budget):
    root, specs, *_ = oof
    res = segkit.tune(specs, root / "gt", tmp_path / "t", budget=budget, workers=1,
                      refit=True, progress=False, log=None)
    stages = [h["stage"] for h in res.history]
    assert 1 <= stages.count("search") <= budget
    assert 1 <= stages.count("refit") <= budget
    if budget <= 5:  # this data always improves early: the search uses all it may
        assert stages.count("search") == budget


def test_tune_is_reproducible_and_seeded(oof, tmp_path):
    root, specs, *_ = oof
    kw = dict(budget=30, workers=1, progress=False, log=None)
    a = segkit.tune(specs, root / "gt", tmp_path / "a", seed=3, **kw)
    b = segkit.tune(specs, root / "gt", tmp_path / "b", seed=3, **kw)
    c = segkit.tune(specs, root / "gt", tmp_path / "c", seed=4, **kw)
    assert a.history == b.history and a.weights == b.weights and a.bias == b.bias
    da = json.loads((tmp_path / "a" / "tuned.json").read_text())
    dc = json.loads((tmp_path / "c" / "tuned.json").read_text())
    assert da["holdout_stems"] != dc["holdout_stems"]


def test_tune_weights_only_and_holdout_metrics_are_the_plain_vote(oof, tmp_path):
    root, specs, labels, probs, stems = oof
    res = segkit.tune(specs, root / "gt", tmp_path / "w", search="weights", budget=20,
                      workers=1, progress=False, log=None)
    assert res.bias is None
    doc = json.loads((tmp_path / "w" / "tuned.json").read_text())
    idx = [stems.index(s) for s in doc["holdout_stems"]]
    cm = segkit.confusion_matrix(probs[:, idx].mean(0).argmax(1).astype(np.uint8),
                                 labels[idx], len(CLASSES))
    # equal weights in float32 vs the float64 mean: labels may differ only at float ties
    assert abs(iou_scores(cm)["miou"] - res.metrics["holdout"]["equal"]["miou"]) < 1e-3


FIT = dict(crf_images=4, crf_crop=16, crf_batch=2, crf_steps=8)


@pytest.fixture(scope="module")
def tuned_crf(oof, tmp_path_factory):
    """`segkit tune` with the CRF search (a short fit) on the OOF fixture."""
    root, specs, *_ = oof
    out = tmp_path_factory.mktemp("tuned_crf")
    res = segkit.tune(specs, root / "gt", out, images=root / "images",
                      search="weights,bias,crf", holdout=0.25, budget=20, seed=1, workers=1,
                      progress=False, log=None, **FIT)
    return res, out


def preset_crf(name, **overrides):
    """A CRF preset as tuned.json holds it."""
    return st.EnsembleSetting.preset(name, **overrides).to_dict()["crf"]


def setting_labels(mean, bias, crf, image):
    """Labels of one image's averaged probabilities under a bias and a CRF as tuned.json holds
    them (what `ensemble --tuned` applies)."""
    from segkit.ops.convcrf import convcrf_params

    crf = None if crf is None else convcrf_params(None, **crf)
    return st.EnsembleSetting(bias=bias, crf=crf).labels(mean, image)


def fitted_of(doc: dict) -> dict:
    """The fitted candidate's CRF setting, from tuned.json's crf_fit record."""
    fit = doc["crf_fit"]
    return st.check_crf({**fit["config"], **fit["learned"]}, len(doc["classes"]))


def test_tune_crf_candidates_are_measured_and_the_best_is_written(tuned_crf):
    res, out = tuned_crf
    doc = st.load_tuned(out)
    cands = doc["metrics"]["crf_candidates"]
    assert list(cands) == ["off", "convcrf", "seed", "fitted"]
    order = list(cands)
    best = max(cands, key=lambda k: (cands[k]["miou"], -order.index(k)))
    assert doc["crf_name"] == res.crf_name == best
    assert doc["metrics"]["holdout"]["tuned"] == cands[best]
    expected = {"off": None, "convcrf": preset_crf("convcrf"),
                "seed": preset_crf("seed"), "fitted": fitted_of(doc)}[best]
    assert doc["crf"] == expected and res.crf == expected
    fit = doc["crf_fit"]
    assert len(fit["loss"]) == FIT["crf_steps"] and np.isfinite(fit["loss"]).all()
    assert fit["options"]["crop_used"] == 16 and len(fit["images"]) == 4
    assert not set(fit["images"]) & set(doc["holdout_stems"])
    learned = fitted_of(doc)
    assert len(learned["weight"]) == len(CLASSES) and learned["weight"] != fit["start"]["weight"]
    assert doc["metrics"]["holdout"]["recipe"] is not None
    assert doc["refit"] is None
    assert "held-out mIoU of the CRF candidates" in str(res)


def _fresh_confusion(specs, root, stems, weights, bias, crf):
    """The confusion of a setting over `stems`, computed afresh per image."""
    from PIL import Image

    stores = [segkit.io.store.open_store(s) for s in specs]
    cm = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    for s in stems:
        _, mean = segkit.soft_vote([x.read(s) for x in stores], weights, return_probs=True)
        image = np.asarray(Image.open(root / "images" / f"{s}.png").convert("RGB"))
        labels = setting_labels(mean, bias, crf, image)
        gt = read_mask(root / "gt" / f"{s}.png")
        cm += segkit.confusion_matrix(labels.astype(np.uint8), gt, len(CLASSES))
    return cm


def test_the_written_setting_is_the_one_measured(oof, tuned_crf):
    """Every CRF candidate, and the written setting, evaluated afresh on the held-out images
    give exactly the held-out figures tuned.json reports."""
    root, specs, *_ = oof
    _, out = tuned_crf
    doc = st.load_tuned(out)
    hold = doc["holdout_stems"]
    w, b = doc["weights"], doc["bias"]
    cm = _fresh_confusion(specs, root, hold, w, b, doc["crf"])
    assert iou_scores(cm)["miou"] == doc["metrics"]["holdout"]["tuned"]["miou"]
    for name, crf in (("convcrf", preset_crf("convcrf")), ("fitted", fitted_of(doc))):
        cm = _fresh_confusion(specs, root, hold, w, b, crf)
        assert iou_scores(cm)["miou"] == doc["metrics"]["crf_candidates"][name]["miou"]
    # and through `segkit ensemble --tuned` on the OOF stores
    ens = out / "ens"
    segkit.ensemble(specs, None, ens, tuned=out, images=root / "images", workers=1,
                    progress=False)
    cm = sum(segkit.confusion_matrix(read_mask(ens / "labels" / f"{s}.png"),
                                     read_mask(root / "gt" / f"{s}.png"), len(CLASSES))
             for s in hold)
    assert iou_scores(cm)["miou"] == doc["metrics"]["holdout"]["tuned"]["miou"]


def test_a_fitted_crf_round_trips_into_ensemble_and_crf(oof, tuned_crf, tmp_path):
    """tuned.json with the fitted CRF -> `ensemble --tuned` and `crf --tuned`: the labels are
    EnsembleSetting.labels of the same input."""
    from PIL import Image

    from segkit.io.store import ConfidenceStore, open_store

    root, specs, labels, probs, stems = oof
    doc = st.load_tuned(tuned_crf[1])
    doc["crf"], doc["crf_name"] = fitted_of(doc), "fitted"
    st.write_tuned(tmp_path / "t", doc)
    assert st.load_tuned(tmp_path / "t")["crf"] == doc["crf"]
    res = CliRunner().invoke(main, ["ensemble", *specs, "--tuned", str(tmp_path / "t"),
                                    "--images", str(root / "images"), "--out",
                                    str(tmp_path / "ens"), "--save-probs", "--workers", "1"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["crf", str(tmp_path / "ens" / "probs"), str(root / "images"),
                                    "--tuned", str(tmp_path / "t" / "tuned.json"), "--out",
                                    str(tmp_path / "crf"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    stores = [open_store(s) for s in specs]
    saved = ConfidenceStore(tmp_path / "ens" / "probs")
    bias = doc["bias"]
    changed = differ = pixels = 0
    for s in stems[:6]:
        image = np.asarray(Image.open(root / "images" / f"{s}.png").convert("RGB"))
        _, mean = segkit.soft_vote([x.read(s) for x in stores], doc["weights"],
                                   return_probs=True)
        want = setting_labels(mean, bias, doc["crf"], image)
        np.testing.assert_array_equal(read_mask(tmp_path / "ens" / "labels" / f"{s}.png"), want)
        unary = np.asarray(saved.read(s))
        want = setting_labels(unary, bias, doc["crf"], image)
        np.testing.assert_array_equal(read_mask(tmp_path / "crf" / f"{s}.png"), want)
        changed += int((want != setting_labels(unary, bias, None, None)).sum())
        # crf --tuned reads the float16 store ensemble wrote, ensemble applied the setting to
        # the float32 mean: the two label maps differ only where that rounding flips a label
        # (docs/guide/crf.md says so)
        ens = read_mask(tmp_path / "ens" / "labels" / f"{s}.png")
        differ += int((ens != want).sum())
        pixels += want.size
    assert changed > 0  # the CRF changed labels: the test sees whether it was applied
    assert differ <= 0.01 * pixels, (differ, pixels)
    with pytest.raises(ValueError, match="either tuned or preset"):
        segkit.crf_job(tmp_path / "ens" / "probs", root / "images", tmp_path / "x",
                       tuned=tmp_path / "t", preset="seed", progress=False)
    off = dict(doc, crf=None)
    with pytest.raises(ValueError, match="has no CRF"):
        segkit.crf_job(tmp_path / "ens" / "probs", root / "images", tmp_path / "x",
                       tuned=off, progress=False)


def test_the_crf_fit_is_seeded(oof, tmp_path):
    """The same seed gives the same fit, with one worker or two (the engine yields the fit
    images in completion order). torch's thread count, on crops large enough for torch to
    split its work, is varied by tests/test_tune_failures.py (the fit pins it to one)."""
    root, specs, *_ = oof
    kw = dict(images=root / "images", search="weights,crf", budget=5, progress=False,
              log=None, **FIT)
    a = segkit.tune(specs, root / "gt", tmp_path / "a", seed=5, workers=2, **kw)
    b = segkit.tune(specs, root / "gt", tmp_path / "b", seed=5, workers=1, **kw)
    c = segkit.tune(specs, root / "gt", tmp_path / "c", seed=6, workers=1, **kw)
    assert a.crf_fit["learned"] == b.crf_fit["learned"] and a.crf_fit["loss"] == b.crf_fit["loss"]
    assert a.crf_fit["learned"] != c.crf_fit["learned"]


def test_the_crf_fit_needs_torch(oof, tmp_path, monkeypatch):
    import sys

    root, specs, *_ = oof
    from segkit.jobs import tune as tune_job

    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "segkit.torch", None)

    def no_reading(*args, **kwargs):  # the refusal comes before any image is read
        raise AssertionError("tune read images before finding that torch is missing")

    monkeypatch.setattr(tune_job, "map_items", no_reading)
    with pytest.raises(segkit.errors.UnavailableError, match=r"pip install 'segkit\[mmseg\]'"):
        segkit.tune(specs, root / "gt", tmp_path / "x", images=root / "images",
                    search="weights,crf", budget=2, workers=1, progress=False, log=None, **FIT)


def test_the_crf_fit_leaves_the_callers_torch_random_state_alone(oof, tmp_path):
    import torch

    root, specs, *_ = oof
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    segkit.tune(specs, root / "gt", tmp_path / "t", images=root / "images",
                search="weights,crf", budget=2, seed=3, workers=1, progress=False, log=None,
                **FIT)
    assert torch.equal(torch.rand(3), expected)


def test_masks_with_nothing_to_count_are_refused(oof, tmp_path):
    root, specs, labels, probs, stems = oof
    gt = tmp_path / "ignored"
    for stem, lab in zip(stems, labels):
        write_mask(gt / f"{stem}.png", np.full(lab.shape, 255, np.uint8))
    with pytest.raises(segkit.errors.InputError, match="no pixel to count"):
        segkit.tune(specs, gt, tmp_path / "t", budget=2, workers=1, progress=False, log=None)
    assert not (tmp_path / "t" / "tuned.json").exists()


def test_refit_is_reported_apart_from_the_written_setting(oof, tmp_path):
    root, specs, *_ = oof
    res = segkit.tune(specs, root / "gt", tmp_path / "r", budget=30, seed=2, refit=True,
                      workers=1, progress=False, log=None)
    doc = json.loads((tmp_path / "r" / "tuned.json").read_text())
    fit = [h for h in doc["history"] if h["stage"] == "search"]
    best = max(fit, key=lambda h: h["miou"])
    assert doc["weights"] == res.weights == best["weights"]  # the search's, not the refit's
    assert set(doc["refit"]) >= {"weights", "bias", "oof_miou", "oof_equal_miou", "note"}
    assert "refit" in str(res)


def test_tune_errors_are_clear(oof, tmp_path):
    root, specs, *_ = oof
    with pytest.raises(ValueError, match="needs the images"):
        segkit.tune(specs, root / "gt", tmp_path / "x", search="crf", log=None)
    with pytest.raises(ValueError, match="holdout must be a fraction"):
        segkit.tune(specs, root / "gt", tmp_path / "x", holdout=1.0, log=None)
    with pytest.raises(ValueError, match="search must name some of"):
        segkit.tune(specs, root / "gt", tmp_path / "x", search="weights,magic", log=None)
    with pytest.raises(ValueError, match="budget must be an integer >= 1"):
        segkit.tune(specs, root / "gt", tmp_path / "x", budget=0, log=None)
    with pytest.raises(ValueError, match="seed must be an integer >= 0; got -1"):
        segkit.tune(specs, root / "gt", tmp_path / "x", seed=-1, log=None)
    other = segkit.ConfidenceStore.create(tmp_path / "other", ["a", "b"])
    with pytest.raises(segkit.StoreError, match="same classes"):
        segkit.tune([specs[0], other.root], root / "gt", tmp_path / "x", log=None)


# ---- applying it -------------------------------------------------------------------------------
def test_ensemble_applies_tuned_weights_and_bias(oof, tmp_path):
    root, specs, labels, probs, stems = oof
    tuned = {"weights": [0.6, 0.3, 0.1], "bias": [0.5, -0.2, 0, 0.1, 0, -0.4], "crf": None,
             "classes": CLASSES}
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "tuned.json").write_text(json.dumps(tuned))
    # the "test stores": the OOF store sets themselves
    rep = segkit.ensemble(specs, None, tmp_path / "ens", tuned=tmp_path / "t" / "tuned.json",
                          workers=1, progress=False)
    assert rep.images == len(stems)
    stores = [segkit.io.store.open_store(s) for s in specs]
    factors = weight_factors(tuned["weights"], 3)
    scale = bias_scale(tuned["bias"], len(CLASSES))
    for s in stems:
        expected = biased_labels([st.read(s) for st in stores], factors, scale)
        np.testing.assert_array_equal(read_mask(tmp_path / "ens" / "labels" / f"{s}.png"),
                                      expected)
    with pytest.raises(ValueError, match="3 weights for 2 stores"):
        segkit.ensemble(specs[:2], None, tmp_path / "e2", tuned=tmp_path / "t", progress=False)
    with pytest.raises(ValueError, match="either tuned or weights"):
        segkit.ensemble(specs, [1, 1, 1], tmp_path / "e3", tuned=tmp_path / "t", progress=False)
    bad = dict(tuned, classes=["x"] * 6)
    with pytest.raises(segkit.StoreError, match="tuned was made for classes"):
        segkit.ensemble(specs, None, tmp_path / "e4", tuned=bad, progress=False)


def test_ensemble_applies_a_tuned_crf(oof, tmp_path):
    root, specs, labels, probs, stems = oof
    crf = preset_crf("convcrf", num_iter=2, blur=1, filter_size=3)
    tuned = {"weights": [0.5, 0.25, 0.25], "bias": [0.2, 0, 0, 0, 0, 0], "crf": crf,
             "classes": CLASSES}
    with pytest.raises(ValueError, match="pass images"):
        segkit.ensemble(specs, None, tmp_path / "e0", tuned=tuned, progress=False)
    segkit.ensemble(specs, None, tmp_path / "ens", tuned=tuned, images=root / "images",
                    workers=1, progress=False)
    stores = [segkit.io.store.open_store(s) for s in specs]
    from PIL import Image

    for s in stems[:3]:
        _, mean = segkit.soft_vote([st.read(s) for st in stores], tuned["weights"],
                                   return_probs=True)
        image = np.asarray(Image.open(root / "images" / f"{s}.png").convert("RGB"))
        scores = segkit.convcrf(mean, image, **crf) + np.float32(0.2) * \
            (np.arange(6) == 0).astype(np.float32)[:, None, None]
        np.testing.assert_array_equal(read_mask(tmp_path / "ens" / "labels" / f"{s}.png"),
                                      scores.argmax(0))


def test_cli_tune_then_ensemble(oof, tmp_path):
    root, specs, *_ = oof
    runner = CliRunner()
    res = runner.invoke(main, ["tune", *specs, "--gt", str(root / "gt"), "--out",
                               str(tmp_path / "t"), "--budget", "15", "--workers", "1",
                               "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "held-out mIoU" in res.output
    res = runner.invoke(main, ["ensemble", *specs, "--tuned", str(tmp_path / "t" / "tuned.json"),
                               "--out", str(tmp_path / "ens"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "ens" / "labels").glob("*.png"))) == 24
    res = runner.invoke(main, ["ensemble", specs[0], "--tuned", str(tmp_path / "t"),
                               "--out", str(tmp_path / "e1")])
    assert res.exit_code != 0 and "3 weights for 1 stores" in res.output
    res = runner.invoke(main, ["tune", *specs, "--gt", str(root / "gt"), "--out",
                               str(tmp_path / "t2"), "--search", "crf"])
    assert res.exit_code == 1 and "needs the images" in res.output


def test_load_tuned_checks_its_values(tmp_path):
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps({"weights": [1, -1], "classes": ["a", "b"]}))
    with pytest.raises(ValueError, match=r"weights\[1\] is -1"):
        st.load_tuned(path)
    path.write_text(json.dumps({"weights": [1], "classes": ["a", "b"], "bias": [0]}))
    with pytest.raises(ValueError, match="one number per class"):
        st.load_tuned(path)
    path.write_text(json.dumps({"weights": [1], "classes": ["a", "b"], "crf": {"size": 3}}))
    with pytest.raises(ValueError, match="unknown keys"):
        st.load_tuned(path)
    with pytest.raises(FileNotFoundError, match="segkit tune"):
        st.load_tuned(tmp_path / "nope.json")


def test_evaluate_takes_a_store_set(oof):
    """segkit.evaluate scores a model's OOF fold stores (argmax) as one prediction."""
    root, specs, labels, probs, stems = oof
    ev = segkit.evaluate(specs[0], root / "gt", len(CLASSES), workers=1, progress=False)
    assert ev.images == len(stems) and ev.class_names == CLASSES
    stores = segkit.io.store.open_store(specs[0])
    expected = sum(segkit.confusion_matrix(np.asarray(stores.read(s)).argmax(0),
                                           labels[i].astype(np.int64), len(CLASSES))
                   for i, s in enumerate(stems))
    np.testing.assert_array_equal(ev.confusion, expected)
    res = CliRunner().invoke(main, ["eval", specs[0], str(root / "gt"), "--num-classes", "6"])
    assert res.exit_code == 0, res.output
