"""segkit.jobs.settings: CRF settings (presets, fitted), applying a setting without torch
(equal to segkit.torch.conv_crf), tuned.json read/write and their checks."""
from __future__ import annotations

import json

import numpy as np
import pytest

import segkit
from segkit.jobs import settings as st

C, H, W = 5, 29, 38


def _case(seed: int):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(C, 0.7), (H, W)).transpose(2, 0, 1).astype(np.float32)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return rng, probs, image


def _torch_scores(probs, image, crf):
    torch = pytest.importorskip("torch")
    from segkit.torch import conv_crf

    weight = crf.get("weight", 0.2)
    probs = np.maximum(probs, np.float32(st.PROB_FLOOR))  # what a fitted setting takes
    out = conv_crf(torch.from_numpy(probs), torch.from_numpy(image.transpose(2, 0, 1).copy()),
                   weight=torch.tensor(weight) if isinstance(weight, list) else weight,
                   pos_compat=crf["pos_compat"], col_compat=crf["col_compat"],
                   pos_sdims=crf["pos_sdims"], col_schan=crf["col_schan"],
                   filter_size=crf["filter_size"], blur=crf["blur"], num_iter=crf["num_iter"],
                   unary_kind=crf["unary_kind"])
    return out.detach().numpy()


@pytest.mark.parametrize("blur,num_iter", [(1, 3), (2, 5), (4, 2)])
def test_a_fitted_setting_equals_the_torch_op(blur, num_iter):
    rng, probs, image = _case(blur * 10 + num_iter)
    crf = st.crf_setting("convcrf", blur=blur, num_iter=num_iter, filter_size=5,
                         pos_compat=2.2, col_compat=7.5, pos_sdims=2.5, col_schan=17.0)
    crf["weight"] = [float(v) for v in rng.uniform(-0.1, 0.6, C)]
    crf = st.check_crf(crf, C)
    got = st.crf_scores(probs, image, crf)
    np.testing.assert_array_equal(got, _torch_scores(probs, image, crf))  # the same computation
    # per-class weights matter: the same setting with equal weights differs
    same = st.crf_scores(probs, image, dict(crf, weight=[crf["weight"][0]] * C))
    assert np.abs(same - got).max() > 1e-3


def test_equal_weights_take_the_inference_kernels_and_agree():
    _, probs, image = _case(3)
    crf = st.check_crf(dict(st.crf_setting("convcrf", blur=2, num_iter=4), weight=[0.35] * C), C)
    got = st.crf_scores(probs, image, crf)
    # the inference kernels against the trainable op's forward: two computations of the same
    # formula, which round differently (the fitted path above is one computation, to the bit)
    np.testing.assert_allclose(got, _torch_scores(probs, image, crf), atol=1e-4, rtol=0)
    ref = segkit.convcrf(probs, image, weight_init=0.35,
                         **{k: v for k, v in crf.items() if k != "weight"})
    np.testing.assert_array_equal(got, ref)


def test_presets_as_settings():
    conv, seed = st.crf_setting("convcrf"), st.recipe_crf()
    assert conv["unary_kind"] == "probs" and (conv["filter_size"], conv["blur"]) == (11, 4)
    assert seed == st.crf_setting("seed")
    assert (seed["unary_kind"], seed["num_iter"], seed["filter_size"], seed["blur"]) == \
        ("logits", 200, 5, 1)
    assert st.check_crf("seed") == seed and st.check_crf(None) is None
    assert not st.is_fitted(conv) and st.is_fitted(dict(conv, weight=[0.2] * C))
    with pytest.raises(ValueError, match="crf preset must be one of"):
        st.crf_setting("dense")


def test_setting_labels_with_and_without_a_crf():
    _, probs, image = _case(4)
    bias = np.array([0.4, 0, -0.3, 0, 0.1])
    scale = st.setting_scale(bias, C)
    plain = st.setting_labels(probs, scale, None, None)
    np.testing.assert_array_equal(plain, np.argmax(probs * scale.astype(np.float32)[:, None,
                                                                                    None], 0))
    crf = st.crf_setting("convcrf", num_iter=2)
    with_crf = st.setting_labels(probs, scale, crf, image, bias)
    scores = segkit.convcrf(probs, image, **crf) + bias.astype(np.float32)[:, None, None]
    np.testing.assert_array_equal(with_crf, scores.argmax(0))


def test_bad_settings_are_named():
    conv = st.crf_setting("convcrf")
    with pytest.raises(ValueError, match="unknown keys"):
        st.check_crf(dict(conv, size=3))
    with pytest.raises(ValueError, match="filter_size must be odd"):
        st.check_crf(dict(conv, filter_size=4))
    with pytest.raises(ValueError, match="weight must be a list of finite numbers"):
        st.check_crf(dict(conv, weight=[0.2, float("nan")]))
    with pytest.raises(ValueError, match="weight has 2 values for 5 classes"):
        st.check_crf(dict(conv, weight=[0.2, 0.3]), C)
    with pytest.raises(ValueError, match="pos_compat must be >= 0"):
        st.check_crf(dict(conv, weight=[0.2] * C, pos_compat=-1.0))
    with pytest.raises(ValueError, match="crf must be a CRF setting"):
        st.check_crf(3)
    _, probs, image = _case(5)
    with pytest.raises(ValueError, match="weight has 3 values for 5 classes"):
        st.crf_scores(probs, image, dict(conv, weight=[0.2, 0.3, 0.1]))


def test_tuned_json_round_trip_and_checks(tmp_path):
    crf = dict(st.crf_setting("convcrf"), weight=[0.1, 0.2, 0.3])
    path = st.write_tuned(tmp_path / "t", {"weights": [0.7, 0.3], "bias": [0.1, 0, -0.2],
                                           "crf": crf, "classes": ["a", "b", "c"]})
    doc = st.load_tuned(tmp_path / "t")
    assert path.name == st.TUNED and doc["crf"] == crf and doc["format"] == st.FORMAT
    assert json.loads(path.read_text())["version"] == st.VERSION
    with pytest.raises(ValueError, match="weight has 3 values for 2 classes"):
        st.write_tuned(tmp_path / "u", {"weights": [1.0], "crf": crf, "classes": ["a", "b"]})
    path.write_text(json.dumps({"weights": [1], "classes": ["a", "b"], "crf": dict(crf)}))
    with pytest.raises(ValueError, match="weight has 3 values for 2 classes"):
        st.load_tuned(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="unreadable"):
        st.load_tuned(path)


def test_check_tuned_is_the_one_check_of_a_tuned_setting(tmp_path):
    """check_tuned: what load_tuned does to a file's contents, for a dict a caller gives."""
    from segkit.errors import InputError

    doc = {"weights": [1, 3], "classes": ["a", "b", "c"], "bias": np.array([0.1, 0, -0.2]),
           "crf": "convcrf", "note": "kept"}
    out = st.check_tuned(doc)
    assert out["crf"] == st.crf_setting("convcrf") and doc["crf"] == "convcrf"  # a copy
    assert out["weights"] == [1.0, 3.0] and out["bias"] == [0.1, 0.0, -0.2]
    assert out["note"] == "kept" and st.check_tuned(dict(doc, bias=None))["bias"] is None
    conv = st.crf_setting("convcrf")
    for bad, message in [
            (dict(doc, weights=[1, -1]), r"where: weights\[1\] is -1"),
            (dict(doc, weights=3), "where: weights must be a list of numbers"),
            (dict(doc, bias=[0.1, 0]), r"where: bias must hold one number per class \(3\)"),
            (dict(doc, crf="dense"), "where: crf preset must be one of"),
            (dict(doc, crf=dict(conv, weight=[0.2, 0.3])),
             "where: crf weight has 2 values for 3 classes"),
            (dict(doc, crf=dict(conv, blur=3)), "where: .*blur must be 1 or even"),
            (dict(doc, classes=["a"]), "where: classes must be a list of at least 2"),
            ({"weights": [1]}, "where: not a segkit tuned setting"),
            ([1, 2], "where: not a segkit tuned setting")]:
        with pytest.raises(InputError, match=message):
            st.check_tuned(bad, "where")
    # load_tuned runs it on the file: the message names the file
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps({"weights": [1], "classes": ["a", "b"], "crf": "seed",
                                "bias": [0, 1, 2]}))
    with pytest.raises(InputError, match=rf"{path}: bias must hold one number per class \(2\)"):
        st.load_tuned(tmp_path)
    path.write_text(json.dumps({"weights": [1], "classes": ["a", "b"], "crf": "seed"}))
    assert st.load_tuned(tmp_path)["crf"] == st.recipe_crf()
