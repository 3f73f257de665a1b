"""segkit.mmseg end to end on generated data (CPU): the tiny config trains 2 iterations and
validates, its checkpoint reloads weights-only (also to resume), `segkit infer` writes a store
that agrees with mmseg's own prediction, the probability hook works in a tools/test.py-style run,
and the Swin-B config builds. One training run is shared by the module."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("mmseg") is None:
    pytest.skip("mmsegmentation is not installed: pip install 'segkit[mmseg]' (make test "
                "installs it)", allow_module_level=True)

import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import segkit.mmseg as sm  # noqa: E402
from segkit.cli import main  # noqa: E402
from segkit.io.store import ConfidenceStore  # noqa: E402

from .mmseg_data import make_dataset, one_torch_thread  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
SWIN_B = ROOT / "configs" / "upernet_swin-b_trash.py"
TINY = ROOT / "configs" / "upernet_swin-tiny_cpu.py"
#: float16 keeps ~3 significant digits: argmax may differ where the top two are this close
FP16_GAP = 2e-3


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmseg_train_data")
    make_dataset(root, n=6, folds=3)
    return root


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """`segkit train` on the tiny config: fold 0 (4 training images, batch 2), one epoch."""
    work = tmp_path_factory.mktemp("work")
    result = CliRunner().invoke(main, [
        "train", str(TINY), "--data-root", str(data_root), "--work-dir", str(work),
        "--fold", "0", "--cfg-options", "train_cfg.max_epochs=1", "randomness.seed=1"])
    assert result.exit_code == 0, (result.output, result.exception)
    return work, result.output


def test_tiny_config_trains_two_iterations_and_validates(trained):
    work, output = trained
    assert "last validation: aAcc" in output and "mIoU" in output
    line = output.split("last validation: ")[1].splitlines()[0]
    metrics = dict(item.split(" ") for item in line.split(", "))
    miou = float(metrics["mIoU"])
    assert 0.0 <= miou <= 100.0
    best = next(work.glob("best_mIoU_epoch_1.pth"))
    assert f"best checkpoint: {best}" in output
    meta = sm.checkpoint.load(best)["meta"]
    assert meta["iter"] == 2 and meta["epoch"] == 1  # 4 images at batch 2
    assert list(meta["dataset_meta"]["classes"]) == list(sm.TrashDataset.METAINFO["classes"])


def test_each_training_in_a_process_logs_into_its_own_folder(trained, data_root, tmp_path):
    """mmengine hands back an existing visualizer of the same name, and mmseg's configs all
    call it 'visualizer': without a name per run, this second training's loss log would go
    into the first run's folder (the fixture's, trained earlier in this process)."""
    work, _ = trained
    before = sorted(work.glob("*/vis_data/scalars.json"))
    second = tmp_path / "second"
    sm.train(TINY, work_dir=second, data_root=data_root, fold=0,
             cfg_options={"train_cfg.max_epochs": 1, "default_hooks.logger.interval": 1})
    assert len(list(second.glob("*/vis_data/scalars.json"))) == 1
    assert sorted(work.glob("*/vis_data/scalars.json")) == before
    for path in before:
        assert str(second) not in path.read_text()


def test_checkpoint_reloads_weights_only(trained):
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint
    from mmseg.registry import MODELS

    work, _ = trained
    path = work / "epoch_1.pth"
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        torch.load(path, weights_only=True)  # without segkit's allowlist
    cfg = Config.fromfile(str(TINY))
    model = MODELS.build(cfg.model)
    state = load_checkpoint(model, str(path), map_location="cpu")  # mmengine -> segkit loader
    saved = sm.checkpoint.load(path)["state_dict"]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, saved[name])
    assert "message_hub" in state


def test_resume_continues_from_the_checkpoint(trained, data_root, tmp_path):
    import shutil

    work, _ = trained
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    (copy / "last_checkpoint").write_text(str(copy / "epoch_1.pth"))
    result = sm.train(TINY, work_dir=copy, data_root=data_root, fold=0, resume=True,
                      cfg_options={"train_cfg.max_epochs": 2})
    assert len(result.history) == 1  # only epoch 2 ran
    assert result.last_checkpoint == copy / "epoch_2.pth"
    assert sm.checkpoint.load(result.last_checkpoint)["meta"]["iter"] == 4


@pytest.fixture(scope="module")
def inferred(trained, data_root, tmp_path_factory):
    work, _ = trained
    out = tmp_path_factory.mktemp("stores") / "tiny"
    result = CliRunner().invoke(main, [
        "infer", str(TINY), str(work / "epoch_1.pth"), "--images", str(data_root / "images"),
        "--out", str(out), "--batch", "2", "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    return out


def test_infer_store_holds_probabilities(inferred, data_root):
    store = ConfidenceStore(inferred)
    stems = sorted(p.stem for p in (data_root / "masks").glob("*.png"))
    assert store.stems() == stems and store.classes == list(sm.TrashDataset.METAINFO["classes"])
    assert store.meta["tta"] is None and store.meta["model"] == "upernet_swin-tiny_cpu"
    for stem in stems:
        p = store.read(stem)
        assert p.dtype == np.float16 and p.shape == (11, 128, 128)
        p32 = p.astype(np.float32)
        assert p32.min() >= 0
        np.testing.assert_allclose(p32.sum(0), 1.0, atol=5e-3)


def test_infer_argmax_equals_mmseg_prediction(trained, inferred, data_root):
    from mmseg.apis import inference_model, init_model

    work, _ = trained
    model = init_model(str(TINY), str(work / "epoch_1.pth"), device="cpu")
    store = ConfidenceStore(inferred)
    checked = 0
    for img in sorted((data_root / "images").rglob("*.jpg")):
        stem = str(img.relative_to(data_root / "images").with_suffix("")).replace("/", "+")
        result = inference_model(model, str(img))
        pred = result.pred_sem_seg.data[0].numpy()
        probs = result.seg_logits.data.softmax(0).numpy()
        stored = store.read(stem).astype(np.float32)
        np.testing.assert_allclose(stored, probs, atol=1e-3)  # one softmax, float16
        top2 = np.sort(probs, axis=0)[-2:]
        clear = (top2[1] - top2[0]) > FP16_GAP
        assert clear.mean() > 0.5, "the model's predictions are too close to call"
        np.testing.assert_array_equal(stored.argmax(0)[clear], pred[clear])
        checked += 1
    assert checked == 6


def test_infer_resumes_without_rewriting(trained, inferred, data_root):
    work, _ = trained
    store = ConfidenceStore(inferred)
    before = {s: store.path(s).stat().st_mtime_ns for s in store.stems()}
    store.path("0002").unlink()
    sm.infer(TINY, work / "epoch_1.pth", data_root / "images", inferred, workers=0,
             device="cpu", progress=False)
    after = {s: store.path(s).stat().st_mtime_ns for s in store.stems()}
    assert set(after) == set(before)
    assert all(after[s] == before[s] for s in before if s != "0002")


def test_infer_tta_averages_views(trained, data_root, tmp_path):
    work, _ = trained
    store = sm.infer(TINY, work / "epoch_1.pth", data_root / "images", tmp_path / "tta",
                     tta=True, batch_size=3, workers=0, device="cpu", progress=False)
    plain = sm.infer(TINY, work / "epoch_1.pth", data_root / "images", tmp_path / "plain",
                     workers=0, device="cpu", progress=False)
    assert store.meta["tta"][1]["type"] == "TestTimeAug"
    assert len(store) == 6
    for stem in store.stems():
        p = store.read(stem).astype(np.float32)
        np.testing.assert_allclose(p.sum(0), 1.0, atol=5e-3)
        assert np.abs(p - plain.read(stem).astype(np.float32)).max() > 1e-3  # views differ


def test_infer_bad_input(trained, tmp_path):
    work, _ = trained
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["infer", str(TINY), str(work / "epoch_1.pth"),
                                       "--images", str(tmp_path / "empty"), "--out",
                                       str(tmp_path / "s")])
    assert result.exit_code != 0 and "no image" in result.output
    with pytest.raises(ValueError, match="batch_size must be a positive int; got 0"):
        sm.infer(TINY, work / "epoch_1.pth", tmp_path, tmp_path / "s", batch_size=0)


def test_infer_refuses_to_mix_models_in_a_store(trained, inferred, data_root, tmp_path):
    import shutil

    work, _ = trained
    other = tmp_path / "other.pth"
    shutil.copy(work / "epoch_1.pth", other)
    with pytest.raises(ValueError, match=r"holds probabilities of checkpoint .*tta off.*"
                                         r"tta on.*another --out"):
        sm.infer(TINY, work / "epoch_1.pth", data_root / "images", inferred, tta=True,
                 workers=0, device="cpu", progress=False)
    with pytest.raises(ValueError, match="other.pth"):
        sm.infer(TINY, other, data_root / "images", inferred,
                 workers=0, device="cpu", progress=False)


@pytest.mark.parametrize("tta", [False, True])
def test_probability_hook_in_a_test_run(trained, data_root, tmp_path, tta):
    """tools/test.py-style: Runner.test() with SaveProbabilitiesHook in custom_hooks (with
    --tta's config changes when `tta`) writes what `segkit infer` writes."""
    from mmengine.runner import Runner

    from segkit.mmseg.runner import load_config

    work, _ = trained
    out = tmp_path / "hook_store"
    cfg = load_config(TINY, data_root=data_root, fold=0, work_dir=tmp_path / "test_run",
                      cfg_options={"load_from": str(work / "epoch_1.pth")})
    cfg.custom_hooks = [dict(type="SaveProbabilitiesHook", out_dir=str(out))]
    if tta:  # what tools/test.py --tta does
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert "mIoU" in metrics
    store = ConfidenceStore(out)
    val = (data_root / "splits/fold0/val.txt").read_text().split()
    assert store.stems() == sorted(val)
    assert (store.meta["tta"] is not None) == tta
    ref = sm.infer(TINY, work / "epoch_1.pth", data_root / "images", tmp_path / "infer",
                   tta=tta, workers=0, device="cpu", progress=False)
    for stem in val:
        np.testing.assert_allclose(store.read(stem).astype(np.float32),
                                   ref.read(stem).astype(np.float32), atol=2e-3)


def test_pretrained_weights_are_checked(trained, tmp_path):
    from mmengine.config import Config
    from mmseg.registry import MODELS

    from segkit.mmseg.runner import check_pretrained, load_config

    cfg = Config.fromfile(str(TINY))
    backbone = MODELS.build(cfg.model.backbone)
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}},
               good)
    assert check_pretrained(load_config(TINY, pretrained=str(good))) == str(good)
    original = tmp_path / "original.pth"  # the original repository's names (layers.0...)
    torch.save({"model": {k.replace("stages", "layers").replace("ffn.layers.0.0", "mlp.fc1"): v
                          for k, v in backbone.state_dict().items()}}, original)
    with pytest.raises(ValueError, match=r"match only \d+% .*swin2mmseg"):
        check_pretrained(load_config(TINY, pretrained=str(original)))
    with pytest.raises(FileNotFoundError, match="--pretrained none"):
        check_pretrained(load_config(TINY, pretrained=str(tmp_path / "absent.pth")))
    assert check_pretrained(load_config(TINY, pretrained="none")) is None
    with pytest.raises(FileNotFoundError, match="swin_base_patch4_window12_384_22k"):
        check_pretrained(load_config(SWIN_B))  # the recipe's default path is not here


def test_swin_b_config_builds(capsys):
    """The full recipe's model, built with random weights (no pretrained file)."""
    from mmengine.config import Config
    from mmengine.model.utils import revert_sync_batchnorm
    from mmseg.registry import MODELS

    cfg = Config.fromfile(str(SWIN_B))
    cfg.model.backbone.init_cfg = None
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    n = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for p in model.backbone.parameters())
    with capsys.disabled():
        print(f"\nUperNet + Swin-B: {n / 1e6:.1f} M parameters (backbone {backbone / 1e6:.1f} M)")
    assert 80e6 < backbone < 95e6  # Swin-B is about 87 M
    assert 115e6 < n < 130e6  # UperNet Swin-B: about 121 M
    assert len(model.backbone.stages) == 4 and len(model.backbone.stages[2].blocks) == 18
    model.eval()
    with torch.no_grad():
        out = model.predict(torch.zeros(1, 3, 96, 96))
    assert out[0].seg_logits.data.shape == (11, 96, 96)


def test_train_cli_errors_are_clear(data_root, tmp_path):
    result = CliRunner().invoke(main, ["train", str(SWIN_B), "--data-root", str(data_root),
                                       "--work-dir", str(tmp_path / "w")])
    assert result.exit_code != 0 and "--pretrained none" in result.output
    result = CliRunner().invoke(main, ["train", str(TINY), "--amp", "--work-dir",
                                       str(tmp_path / "w")])
    if not torch.cuda.is_available():
        assert result.exit_code != 0 and "needs a CUDA GPU" in result.output


def test_store_meta_is_json(inferred):
    meta = json.loads((Path(inferred) / "meta.json").read_text())
    assert meta["checkpoint"].endswith("epoch_1.pth") and meta["dtype"] == "float16"


def test_gpu_bench_train_section_runs_on_cpu():
    """scripts/gpu_bench.py's `train` section, shrunk to the tiny config on the CPU, so that a
    session with a GPU finds it working."""
    import importlib.util as iu

    spec = iu.spec_from_file_location("gpu_bench", ROOT / "scripts" / "gpu_bench.py")
    bench = iu.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert "train" in bench.SECTIONS
    r = bench.train_speed(str(TINY), amp=False, iters=2, warmup=1, batch=2, n_images=3,
                          image_size=128, workers=0, device="cpu")
    assert r["iters"] == 2 and r["it_per_s"] > 0 and 0 <= r["data_wait_share"] < 1


def test_infer_split_writes_only_its_stems(trained, inferred, data_root, tmp_path):
    """Out-of-fold inference: `--split splits/fold1/val.txt` infers exactly that fold's
    validation images, with the probabilities a whole-folder run gives them (to float16
    rounding)."""
    work, _ = trained
    split = data_root / "splits" / "fold1" / "val.txt"
    wanted = sorted(split.read_text().split())
    result = CliRunner().invoke(main, [
        "infer", str(TINY), str(work / "epoch_1.pth"), "--images", str(data_root / "images"),
        "--out", str(tmp_path / "oof1"), "--split", str(split), "--workers", "0",
        "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    store = ConfidenceStore(tmp_path / "oof1")
    assert store.stems() == wanted
    whole = ConfidenceStore(inferred)
    for stem in wanted:  # the whole-folder run used batches of 2: float rounding differs
        np.testing.assert_allclose(store.read(stem).astype(np.float32),
                                   whole.read(stem).astype(np.float32), atol=1e-3)
    store = sm.infer(TINY, work / "epoch_1.pth", data_root / "images", tmp_path / "one",
                     stems=[wanted[0]], workers=0, device="cpu", progress=False)
    assert store.stems() == [wanted[0]]
    with pytest.raises(ValueError, match="have no image"):
        sm.infer(TINY, work / "epoch_1.pth", data_root / "images", tmp_path / "x",
                 stems=["nope"], workers=0, device="cpu", progress=False)
    with pytest.raises(ValueError, match="stems or split, not both"):
        sm.infer(TINY, work / "epoch_1.pth", data_root / "images", tmp_path / "x",
                 stems=wanted, split=split, workers=0, device="cpu", progress=False)
