"""The ConvCRF dataset job and `segkit crf`: store or .npy folder + images -> label PNGs,
resumable, optional refined store, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import segkit
from segkit.cli import main
from segkit.io.masks import read_mask
from segkit.io.store import ConfidenceStore
from segkit.jobs.crf import CrfJobError, crf_job, index_images
from segkit.jobs.settings import EnsembleSetting
from segkit.synthetic import crf_scene

N, C, H, W = 4, 5, 40, 52


def probs_of(logits):
    e = np.exp(logits - logits.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


@pytest.fixture
def dataset(tmp_path):
    """A confidence store of 4 images in nested folders (flattened stems) and a .npy folder of
    the same logits."""
    images, _, logits = crf_scene(N, H, W, C, scale=12, seed=21)
    store = ConfidenceStore.create(tmp_path / "store", [f"c{i}" for i in range(C)])
    (tmp_path / "npy").mkdir()
    for i in range(N):
        stem = f"batch_0{i % 2}+{i:04d}"
        store.write(stem, probs_of(logits[i]))
        np.save(tmp_path / "npy" / f"{stem}.npy", logits[i])
        folder = tmp_path / "images" / f"batch_0{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    return tmp_path, images, logits


def preset_crf(name, **overrides):
    """A CRF preset as tuned.json holds it."""
    return EnsembleSetting.preset(name, **overrides).to_dict()["crf"]


def expected_labels(store, stem, image, **kw):
    return segkit.convcrf_labels(np.asarray(store.read(stem)), image, **kw)


@pytest.mark.parametrize("workers", [1, 2])
def test_store_to_labels_and_refined_store(dataset, workers):
    root, images, _ = dataset
    report = crf_job(root / "store", root / "images", root / "out", store_out=root / "refined",
                     workers=workers, progress=False)
    assert (report["images"], report["refined"], report["skipped"]) == (N, N, 0)
    store = ConfidenceStore(root / "store")
    refined = ConfidenceStore(root / "refined")
    assert refined.classes == store.classes and len(refined) == N
    for i, stem in enumerate(store.stems()):
        labels, palette = read_mask(root / "out" / f"{stem}.png", with_palette=True)
        assert palette is not None
        # a confidence store holds probabilities: the job passes unary_kind="probs"
        np.testing.assert_array_equal(labels, expected_labels(store, stem, images[int(stem[-4:])],
                                                              unary_kind="probs"))
        p = np.asarray(refined.read(stem), np.float32)
        np.testing.assert_allclose(p.sum(0), 1, atol=5e-3)
        np.testing.assert_array_equal(p.argmax(0), labels)
    saved = json.loads((root / "out" / "crf_report.json").read_text())
    assert saved["refined"] == N and saved["setting"]["unary_kind"] == "probs"


def test_resume_checks_outputs(dataset):
    root, images, _ = dataset
    crf_job(root / "store", root / "images", root / "out", workers=1, progress=False)
    stems = ConfidenceStore(root / "store").stems()
    again = crf_job(root / "store", root / "images", root / "out", workers=1, progress=False)
    assert (again["refined"], again["skipped"]) == (0, N)
    (root / "out" / f"{stems[0]}.png").write_bytes(b"broken")  # a crash mid-write elsewhere
    (root / "out" / f"{stems[1]}.png").unlink()
    Image.fromarray(np.zeros((H, W + 1), np.uint8)).save(root / "out" / f"{stems[2]}.png")
    (root / "out" / f".{stems[3]}.tmp-1-abc.png").write_bytes(b"half")
    third = crf_job(root / "store", root / "images", root / "out", workers=1, progress=False)
    assert (third["refined"], third["skipped"]) == (3, 1)
    assert not list((root / "out").glob(".*tmp-*"))
    store = ConfidenceStore(root / "store")
    for stem in stems[:3]:
        np.testing.assert_array_equal(
            read_mask(root / "out" / f"{stem}.png"),
            expected_labels(store, stem, images[int(stem[-4:])], unary_kind="probs"))
    fresh = crf_job(root / "store", root / "images", root / "out", workers=1, progress=False,
                    resume=False)
    assert fresh["refined"] == N


def test_npy_logits_seed_preset_and_overrides(dataset):
    root, images, logits = dataset
    report = crf_job(root / "npy", root / "images", root / "out", preset="seed", num_iter=7,
                     workers=1, progress=False)
    assert report["setting"]["num_iter"] == 7 and report["setting"]["unary_kind"] == "logits"
    for i in range(N):
        stem = f"batch_0{i % 2}+{i:04d}"
        np.testing.assert_array_equal(
            read_mask(root / "out" / f"{stem}.png"),
            segkit.convcrf_labels(logits[i], images[i], preset="seed", num_iter=7))


def test_errors_name_the_problem(dataset, tmp_path):
    root, _, _ = dataset
    with pytest.raises(CrfJobError, match="unary folder not found"):
        crf_job(tmp_path / "nope", root / "images", tmp_path / "o", progress=False)
    (root / "images" / "batch_01" / "0001.png").unlink()
    with pytest.raises(CrfJobError, match=r"no image for batch_01\+0001"):
        crf_job(root / "store", root / "images", tmp_path / "o", progress=False)
    Image.fromarray(np.zeros((H, W + 3, 3), np.uint8)).save(root / "images" / "batch_01" /
                                                             "0001.png")
    with pytest.raises(Exception, match=r"0001.png: image is 55x40 but its unary"):
        crf_job(root / "store", root / "images", tmp_path / "o", workers=1, progress=False)
    with pytest.raises(ValueError, match="blur must be 1 or even"):
        crf_job(root / "store", root / "images", tmp_path / "o", blur=3, progress=False)


def test_ray_engine_missing_or_working(dataset):
    root, _, _ = dataset
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(CrfJobError, match="engine='ray' needs Ray"):
            crf_job(root / "store", root / "images", root / "o", engine="ray", progress=False)
        return
    report = crf_job(root / "store", root / "images", root / "o", engine="ray", workers=2,
                     progress=False)
    assert report["refined"] == N


def test_job_snaps_a_coarse_network_to_the_image(tmp_path):
    """What ConvCRF is for, through the job: a network that saw the scene at 1/8 resolution
    with noise; the refined labels agree with the truth more often than its argmax."""
    from segkit.io.masks import read_mask
    from segkit.io.store import ConfidenceStore
    from segkit.synthetic import crf_scene

    images, truth, logits = crf_scene(2, 64, 64, 11, seed=0)
    store = ConfidenceStore.create(tmp_path / "store", [str(k) for k in range(11)])
    for i in range(2):
        e = np.exp(logits[i] - logits[i].max(0, keepdims=True))
        store.write(f"{i:04d}", e / e.sum(0, keepdims=True))
        Image.fromarray(images[i]).save(tmp_path / f"{i:04d}.png")
    report = crf_job(tmp_path / "store", tmp_path, tmp_path / "labels", workers=1,
                     progress=False)
    assert report["refined"] == 2
    after = np.stack([read_mask(tmp_path / "labels" / f"{i:04d}.png") for i in range(2)])
    assert (after == truth).mean() > (logits.argmax(1) == truth).mean() + 0.02


def test_index_images_refuses_ambiguous_stems(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.jpg")
    with pytest.raises(CrfJobError, match="two images map to 'a'"):
        index_images(tmp_path)


def test_cli(dataset):
    root, _, _ = dataset
    runner = CliRunner()
    result = runner.invoke(main, ["crf", str(root / "store"), str(root / "images"), "--out",
                                  str(root / "cli"), "--workers", "1", "--filter-size", "5",
                                  "--backend", "cpp"])
    assert result.exit_code == 0, result.output
    assert "refined 4 images" in result.output
    assert len(list((root / "cli").glob("*.png"))) == N
    result = runner.invoke(main, ["crf", str(root / "store"), str(root / "images"), "--out",
                                  str(root / "cli"), "--blur", "3"])
    assert result.exit_code != 0 and "blur must be 1 or even" in result.output
    help_ = runner.invoke(main, ["crf", "--help"])
    assert "Examples:" in help_.output and "segkit crf stores/ensemble" in help_.output


def test_store_set_unaries(dataset):
    """A model's fold stores joined with a comma are one input (out-of-fold predictions)."""
    root, images, _ = dataset
    store = ConfidenceStore(root / "store")
    parts = [ConfidenceStore.create(root / f"fold{f}", store.classes) for f in range(2)]
    for i, stem in enumerate(store.stems()):
        parts[i % 2].write(stem, store.read(stem))
    spec = f"{parts[0].root},{parts[1].root}"
    report = crf_job(spec, root / "images", root / "out_set", workers=1, progress=False)
    assert report["images"] == N
    for stem in store.stems():
        np.testing.assert_array_equal(read_mask(root / "out_set" / f"{stem}.png"),
                                      expected_labels(store, stem, images[int(stem[-4:])],
                                                      unary_kind="probs"))
    with pytest.raises(CrfJobError, match="disjoint"):
        crf_job(f"{parts[0].root},{root / 'store'}", root / "images", root / "o2",
                progress=False)


def test_tuned_setting_and_bias_are_applied(dataset):
    """crf_job(tuned=...) applies the tuned.json's CRF setting and bias: the labels are
    EnsembleSetting.labels of the store's probabilities."""
    from segkit.jobs import settings as st

    root, images, _ = dataset
    crf = dict(preset_crf("convcrf", blur=2, num_iter=3), weight=[0.1, 0.3, 0.2, 0.4, 0.25])
    bias = [0.5, 0, -0.5, 0, 0.2]
    classes = [f"c{i}" for i in range(C)]
    st.write_tuned(root / "t", {"weights": [1.0], "bias": bias, "crf": crf, "classes": classes})
    report = crf_job(root / "store", root / "images", root / "out", tuned=root / "t", workers=1,
                     progress=False)
    assert report["refined"] == N and report["setting"] == st.check_crf(crf)
    store = ConfidenceStore(root / "store")
    for stem in store.stems():
        want = EnsembleSetting.from_tuned({"weights": [1.0], "bias": bias, "crf": crf,
                                           "classes": classes}).labels(
            np.asarray(store.read(stem)), images[int(stem[-4:])])
        np.testing.assert_array_equal(read_mask(root / "out" / f"{stem}.png"), want)
        plain = segkit.convcrf_labels(np.asarray(store.read(stem)), images[int(stem[-4:])],
                                      unary_kind="probs", blur=2, num_iter=3)
        assert (want != plain).any()  # weights and bias change labels: the test sees them
    with pytest.raises(CrfJobError, match="tuned was made for classes"):
        crf_job(root / "store", root / "images", root / "x", progress=False,
                tuned={"weights": [1.0], "crf": crf, "classes": list("abcde")})
    res = CliRunner().invoke(main, ["crf", str(root / "store"), str(root / "images"), "--out",
                                    str(root / "y"), "--tuned", str(root / "t"), "--blur", "2"])
    assert res.exit_code != 0 and "either tuned or blur" in res.output


# ---- the setting that made the labels (crf_settings.json) ---------------------------------------
def _tuned_labels(store, stem, image, crf, bias=None):
    setting = EnsembleSetting.from_tuned({"weights": [1.0], "classes": store.classes,
                                          "crf": crf, "bias": bias})
    return setting.labels(np.asarray(store.read(stem)), image)


def test_resume_refuses_labels_of_another_setting(dataset):
    """A rerun into an out folder made with another preset, override, bias or tuned setting is
    refused (it would skip every image and report a setting that made none of them); the same
    setting resumes; resume=False recomputes every image, equal to a fresh run."""
    from segkit.errors import InputError

    root, images, _ = dataset
    out, store = root / "out", ConfidenceStore(root / "store")
    first = crf_job(root / "store", root / "images", out, num_iter=2, workers=1, progress=False)
    saved = json.loads((out / "crf_settings.json").read_text())
    assert saved["setting"] == first["setting"] and saved["setting"]["num_iter"] == 2
    assert (saved["bias"], saved["unary_kind"], saved["tuned"]) == (None, "probs", None)
    pngs = {p.name: p.read_bytes() for p in out.glob("*.png")}
    report = (out / "crf_report.json").read_text()
    with pytest.raises(InputError, match=r"another CRF setting \(setting num_iter: 2, now 3\); "
                                         r".*another out folder \(--out\).*resume=False"):
        crf_job(root / "store", root / "images", out, num_iter=3, workers=1, progress=False)
    with pytest.raises(InputError, match=r"setting blur: 4, now 1; setting filter_size: 11, now "
                                         r"5; setting num_iter: 2, now 200; unary_kind: 'probs',"
                                         r" now 'logits'"):
        crf_job(root / "store", root / "images", out, preset="seed", workers=1, progress=False)
    # refused before anything was written
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == pngs
    assert (out / "crf_report.json").read_text() == report
    same = crf_job(root / "store", root / "images", out, num_iter=2, workers=1, progress=False)
    assert (same["refined"], same["skipped"]) == (0, N)
    with pytest.raises(InputError, match=r"\(setting num_iter: 2, now 5; tuned: none, now "
                                         r"\(dict\) \(sha256 \w+\)\)"):
        crf_job(root / "store", root / "images", out, workers=1, progress=False,
                tuned={"weights": [1.0], "classes": store.classes, "crf": "convcrf"})
    # a folder of an earlier version (no crf_settings.json): its report names the setting
    (out / "crf_settings.json").unlink()
    with pytest.raises(InputError, match="setting num_iter: 2, now 5"):
        crf_job(root / "store", root / "images", out, workers=1, progress=False)

    # tuned settings: a preset name in the dict, then the same with a bias
    classes = store.classes
    plain = {"weights": [1.0], "classes": classes, "crf": "convcrf"}
    biased = dict(plain, bias=[2.5, 0, 0, 0, -1])
    tuned_out = root / "tuned_out"
    rep = crf_job(root / "store", root / "images", tuned_out, tuned=plain, workers=1,
                  progress=False)
    assert rep["refined"] == N and plain["crf"] == "convcrf"  # the caller's dict is untouched
    for stem in store.stems():
        np.testing.assert_array_equal(read_mask(tuned_out / f"{stem}.png"), _tuned_labels(
            store, stem, images[int(stem[-4:])], "convcrf"))
    assert json.loads((tuned_out / "crf_settings.json").read_text())["tuned"]["path"] == "(dict)"
    with pytest.raises(InputError, match=r"bias: None, now \[2.5, 0.0, 0.0, 0.0, -1.0\]; tuned: "
                                         r"\(dict\) \(sha256 \w+\), now \(dict\)"):
        crf_job(root / "store", root / "images", tuned_out, tuned=biased, workers=1,
                progress=False)
    again = crf_job(root / "store", root / "images", tuned_out, tuned=plain, workers=1,
                    progress=False)
    assert (again["refined"], again["skipped"]) == (0, N)
    # resume=False: every image recomputed with the new setting, as a fresh run makes them
    redo = crf_job(root / "store", root / "images", tuned_out, tuned=biased, resume=False,
                   workers=1, progress=False)
    assert (redo["refined"], redo["skipped"]) == (N, 0) and redo["bias"] == biased["bias"]
    crf_job(root / "store", root / "images", root / "fresh", tuned=biased, workers=1,
            progress=False)
    changed = 0
    for stem in store.stems():
        got = read_mask(tuned_out / f"{stem}.png")
        np.testing.assert_array_equal(got, read_mask(root / "fresh" / f"{stem}.png"))
        np.testing.assert_array_equal(got, _tuned_labels(
            store, stem, images[int(stem[-4:])], "convcrf", biased["bias"]))
        changed += int((got != _tuned_labels(store, stem, images[int(stem[-4:])],
                                             "convcrf")).sum())
    assert changed > 0  # the bias changes labels: the test sees a recompute
    assert json.loads((tuned_out / "crf_settings.json").read_text())["bias"] == biased["bias"]
    resumed = crf_job(root / "store", root / "images", tuned_out, tuned=biased, workers=1,
                      progress=False)
    assert (resumed["refined"], resumed["skipped"]) == (0, N)


def test_resume_false_drops_the_other_settings_labels_first(dataset, monkeypatch):
    """An interrupted resume=False run over another setting's labels leaves none of them for
    a resumed run to trust."""
    import segkit.jobs.crf as crf_mod

    root, images, _ = dataset
    out = root / "out"
    crf_job(root / "store", root / "images", out, num_iter=2, workers=1, progress=False)
    stems = ConfidenceStore(root / "store").stems()
    real = crf_mod.run_one

    def crash_after_first(task):
        if task.stem != stems[0]:
            raise RuntimeError("interrupted")
        return real(task)

    monkeypatch.setattr(crf_mod, "run_one", crash_after_first)
    with pytest.raises(Exception, match="interrupted"):
        crf_job(root / "store", root / "images", out, num_iter=3, resume=False, workers=1,
                progress=False)
    monkeypatch.setattr(crf_mod, "run_one", real)
    assert sorted(p.stem for p in out.glob("*.png")) == stems[:1]
    resumed = crf_job(root / "store", root / "images", out, num_iter=3, workers=1,
                      progress=False)
    assert (resumed["refined"], resumed["skipped"]) == (N - 1, 1)


def test_a_bad_tuned_dict_is_refused_before_any_image(dataset):
    from segkit.errors import InputError

    root, _, _ = dataset
    good = {"weights": [1.0], "classes": [f"c{i}" for i in range(C)], "crf": "seed"}
    cases = [(dict(good, crf="dense"), r"tuned \(dict\): crf preset must be one of .*'dense'"),
             (dict(good, bias=[0.1, 0.2]), r"tuned \(dict\): bias must hold one number per "
                                           r"class \(5\)"),
             (dict(good, crf=dict(preset_crf("convcrf"), weight=[0.2, 0.3])),
              r"tuned \(dict\): crf weight has 2 values for 5 classes"),
             (dict(good, crf={"size": 3}), r"tuned \(dict\): crf has unknown keys \['size'\]"),
             (dict(good, weights=[-1.0]), r"tuned \(dict\): weights\[0\] is -1"),
             ({"crf": "seed"}, r"tuned \(dict\): not a segkit tuned setting")]
    for doc, message in cases:
        with pytest.raises(InputError, match=message):
            crf_job(root / "store", root / "images", root / "bad", tuned=doc, workers=1,
                    progress=False)
        assert not (root / "bad").exists()


# ---- issue 27 -----------------------------------------------------------------------------
@pytest.mark.parametrize("fitted", [True, False], ids=["fitted", "preset"])
def test_a_tuned_crf_refuses_logits(dataset, fitted):
    """A tuned CRF (fitted: per-class weights; or a preset) on a folder of logits is refused
    with the file named, as the preset's own probability check refuses them; the same setting
    on the store's probabilities runs."""
    from segkit.jobs import settings as st
    from segkit.jobs.engine import JobError

    root, _, _ = dataset
    crf = preset_crf("convcrf", blur=2, num_iter=2)
    if fitted:
        crf["weight"] = [0.1, 0.3, 0.2, 0.4, 0.25]
    st.write_tuned(root / "t", {"weights": [1.0], "crf": crf,
                                "classes": [f"c{i}" for i in range(C)]})
    with pytest.raises(JobError, match=r"batch_0\d\+000\d\.npy: a tuned CRF setting takes "
                                       r"probabilities .* got values from -"):
        crf_job(root / "npy", root / "images", root / "out", tuned=root / "t", workers=1,
                progress=False)
    res = CliRunner().invoke(main, ["crf", str(root / "npy"), str(root / "images"), "--out",
                                    str(root / "cli"), "--tuned", str(root / "t"),
                                    "--workers", "1"])
    assert res.exit_code == 1 and "takes probabilities" in res.output, res.output
    assert "Traceback" not in res.output
    # values in [0, 1] that are not probabilities (each pixel sums to 1/2) are refused too
    (root / "pos").mkdir()
    for p in (root / "npy").glob("*.npy"):
        np.save(root / "pos" / p.name, (probs_of(np.load(p)) / 2).astype(np.float32))
    with pytest.raises(JobError, match="pixel sums over the 5 classes"):
        crf_job(root / "pos", root / "images", root / "out2", tuned=root / "t", workers=1,
                progress=False)
    assert crf_job(root / "store", root / "images", root / "ok", tuned=root / "t", workers=1,
                   progress=False)["refined"] == N
