"""segkit.jobs.settings: the EnsembleSetting (presets, fitted CRFs, the bias), applying it
without torch (equal to segkit.torch.conv_crf), tuned.json read/write and their checks, and a
tuned.json written before EnsembleSetting existed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import segkit
from segkit.jobs import settings as st
from segkit.jobs.settings import EnsembleSetting
from segkit.ops.convcrf import CRF_PRESETS, convcrf_params

C, H, W = 5, 29, 38
#: A tuned.json that main's `segkit tune` wrote (commit 22c5379: weights, bias and the CRF
#: search with a short fit, seed 4 of the OOF data of tests/test_tune.py; it chose "seed").
MAIN_TUNED = Path(__file__).parent / "data" / "tuned_22c5379.json"


def preset_crf(name, **overrides):
    """A CRF preset as tuned.json holds it."""
    return EnsembleSetting.preset(name, **overrides).to_dict()["crf"]


def setting_of(crf, bias=None):
    """The setting of a CRF as tuned.json holds it (checked), with a bias."""
    return EnsembleSetting(bias=bias, crf=convcrf_params(None, **st.check_crf(crf)))


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
    crf = preset_crf("convcrf", blur=blur, num_iter=num_iter, filter_size=5,
                     pos_compat=2.2, col_compat=7.5, pos_sdims=2.5, col_schan=17.0)
    crf["weight"] = [float(v) for v in rng.uniform(-0.1, 0.6, C)]
    crf = st.check_crf(crf, C)
    got = setting_of(crf).scores(probs, image)
    np.testing.assert_array_equal(got, _torch_scores(probs, image, crf))  # the same computation
    # per-class weights matter: the same setting with equal weights differs
    same = setting_of(dict(crf, weight=[crf["weight"][0]] * C)).scores(probs, image)
    assert np.abs(same - got).max() > 1e-3


def test_equal_weights_take_the_inference_kernels_and_agree():
    _, probs, image = _case(3)
    crf = st.check_crf(dict(preset_crf("convcrf", blur=2, num_iter=4), weight=[0.35] * C), C)
    got = setting_of(crf).scores(probs, image)
    # the inference kernels against the trainable op's forward: two computations of the same
    # formula, which round differently (the fitted path above is one computation, to the bit)
    np.testing.assert_allclose(got, _torch_scores(probs, image, crf), atol=1e-4, rtol=0)
    ref = segkit.convcrf(probs, image, weight_init=0.35,
                         **{k: v for k, v in crf.items() if k != "weight"})
    np.testing.assert_array_equal(got, ref)


def test_presets_as_settings():
    conv, seed = preset_crf("convcrf"), preset_crf("seed")
    assert conv["unary_kind"] == "probs" and (conv["filter_size"], conv["blur"]) == (11, 4)
    assert seed == st.check_tuned({"weights": [1], "classes": ["a", "b"], "crf": "seed"})["crf"]
    assert (seed["unary_kind"], seed["num_iter"], seed["filter_size"], seed["blur"]) == \
        ("logits", 200, 5, 1)
    assert st.check_crf("seed") == seed and st.check_crf(None) is None
    assert setting_of(conv).crf.weight is None
    assert setting_of(dict(conv, weight=[0.25] * C)).crf.weight == (0.25,) * C
    with pytest.raises(ValueError, match="crf preset must be one of"):
        EnsembleSetting.preset("dense")


def test_a_preset_has_one_name_at_every_level():
    """A job's preset is the op's preset of that name; what the job adds is explicit in the
    record: the unary kind it takes averaged probabilities as (seed keeps the recipe's
    logits), and an override given replaces it."""
    assert set(st.PRESET_UNARY_KIND) == set(CRF_PRESETS)
    for name, kind in st.PRESET_UNARY_KIND.items():
        crf = EnsembleSetting.preset(name).crf
        assert crf == convcrf_params(name, unary_kind=kind) and crf.unary_kind == kind
    assert EnsembleSetting.preset("seed").crf == convcrf_params("seed")  # the op's, as it is
    assert EnsembleSetting.preset("convcrf").crf != convcrf_params("convcrf")  # logits there
    assert EnsembleSetting.preset("convcrf", unary_kind="logits", num_iter=None).crf == \
        convcrf_params("convcrf")


def test_setting_labels_with_and_without_a_crf():
    _, probs, image = _case(4)
    bias = np.array([0.4, 0, -0.3, 0, 0.1])
    scale = st.setting_scale(bias, C)
    plain = EnsembleSetting(bias=bias).labels(probs)  # the bias is passed once
    np.testing.assert_array_equal(plain, np.argmax(probs * scale.astype(np.float32)[:, None,
                                                                                    None], 0))
    np.testing.assert_array_equal(EnsembleSetting(bias=bias).scale(), scale)
    crf = preset_crf("convcrf", num_iter=2)
    with_crf = EnsembleSetting.preset("convcrf", bias=bias, num_iter=2).labels(probs, image)
    scores = segkit.convcrf(probs, image, **crf) + bias.astype(np.float32)[:, None, None]
    np.testing.assert_array_equal(with_crf, scores.argmax(0))


def test_bad_settings_are_named():
    conv = preset_crf("convcrf")
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
        setting_of(dict(conv, weight=[0.2, 0.3, 0.1])).scores(probs, image)
    with pytest.raises(ValueError, match="bias has 2 values for 5 classes"):
        EnsembleSetting(bias=[0.1, 0.2]).labels(probs)
    with pytest.raises(ValueError, match="a setting with a CRF needs the image"):
        EnsembleSetting.preset("seed").labels(probs)
    with pytest.raises(ValueError, match=r"weights\[1\] is -1"):
        EnsembleSetting(weights=[1, -1])
    with pytest.raises(TypeError, match="crf must be a ConvCrfParams record"):
        EnsembleSetting(crf=conv)


def test_tuned_json_round_trip_and_checks(tmp_path):
    crf = dict(preset_crf("convcrf"), weight=[0.1, 0.2, 0.3])
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
    assert out["crf"] == preset_crf("convcrf") and doc["crf"] == "convcrf"  # a copy
    assert out["weights"] == [1.0, 3.0] and out["bias"] == [0.1, 0.0, -0.2]
    assert out["note"] == "kept" and st.check_tuned(dict(doc, bias=None))["bias"] is None
    conv = preset_crf("convcrf")
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
    assert st.load_tuned(tmp_path)["crf"] == preset_crf("seed")


def test_vote_and_labels_are_the_soft_vote_without_bias_or_crf():
    rng = np.random.default_rng(8)
    models = [rng.dirichlet(np.ones(C), (H, W)).transpose(2, 0, 1).astype(np.float16)
              for _ in range(3)]
    setting = EnsembleSetting(weights=[1, 2, 0.5])
    labels, mean = setting.vote(models, return_probs=True)
    want = segkit.soft_vote(models, [1, 2, 0.5], return_probs=True)
    np.testing.assert_array_equal(labels, want[0])
    np.testing.assert_array_equal(mean, want[1])
    np.testing.assert_array_equal(setting.labels(mean), labels)
    np.testing.assert_array_equal(EnsembleSetting().vote(models), segkit.soft_vote(models))


def test_from_tuned_and_to_dict_round_trip(tmp_path):
    crf = dict(preset_crf("convcrf", blur=2), weight=[0.25, 0.5, 0.125],
               compat=[[0.0, 0.5, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.25]])
    doc = {"weights": [0.7, 0.3], "bias": [0.1, 0, -0.2], "crf": crf, "classes": list("abc")}
    setting = EnsembleSetting.from_tuned(doc)
    assert setting.weights == (0.7, 0.3) and setting.bias == (0.1, 0.0, -0.2)
    assert setting.crf.weight == (0.25, 0.5, 0.125) and setting.crf.unary_kind == "probs"
    assert setting.to_dict() == {k: doc[k] for k in ("weights", "bias", "crf")}
    st.write_tuned(tmp_path, {**setting.to_dict(), "classes": list("abc")})
    assert EnsembleSetting.from_tuned(st.load_tuned(tmp_path)) == setting
    assert EnsembleSetting.from_tuned(dict(doc, crf="seed")) == \
        EnsembleSetting.preset("seed", weights=[0.7, 0.3], bias=[0.1, 0, -0.2])
    with pytest.raises(ValueError, match="tuned: crf compat is 3 x 3 for 2 classes"):
        EnsembleSetting.from_tuned(dict(doc, classes=["a", "b"], bias=None))
    # what tuned.json cannot hold is refused, never dropped
    with pytest.raises(ValueError, match="this one also sets init"):
        EnsembleSetting.preset("convcrf", init="softmax").to_dict()


def test_a_tuned_json_written_by_main_loads_and_applies_as_it_did():
    """The tuned.json of main's `segkit tune` (before EnsembleSetting): it loads, its setting
    writes back the same weights, bias and CRF, and it labels an image as the code that wrote
    it applied a setting (the CRF keys as keyword arguments of segkit.convcrf, on the
    probabilities floored when the CRF is fitted, then the bias): its chosen CRF (the seed
    preset) and its fitted candidate (crf_fit: per-class weights learned, one of them 0)."""
    doc = st.load_tuned(MAIN_TUNED)
    assert doc["crf_name"] == "seed" and doc["bias"] is not None
    setting = EnsembleSetting.from_tuned(doc, str(MAIN_TUNED))
    assert setting.to_dict() == {k: doc[k] for k in ("weights", "bias", "crf")}
    assert setting == EnsembleSetting.preset("seed", weights=doc["weights"], bias=doc["bias"])
    fit = doc["crf_fit"]
    fitted_crf = st.check_crf({**fit["config"], **fit["learned"]}, len(doc["classes"]))
    fitted = EnsembleSetting.from_tuned(dict(doc, crf=fitted_crf))
    assert fitted.to_dict()["crf"] == fitted_crf  # learned as float32: written back exactly
    c = len(doc["classes"])
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.full(c, 0.5), (H, W)).transpose(2, 0, 1).astype(np.float32)
    probs[0, :3] = 0  # float16 stores round tiny probabilities to 0
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    bias = np.asarray(doc["bias"], np.float32)[:, None, None]
    for s, crf, unary in ((setting, doc["crf"], probs),
                          (fitted, fitted_crf, np.maximum(probs, np.float32(1e-7)))):
        then = segkit.convcrf(unary, image, **crf) + bias
        np.testing.assert_array_equal(s.scores(probs, image), then)
        np.testing.assert_array_equal(s.labels(probs, image), then.argmax(0))
