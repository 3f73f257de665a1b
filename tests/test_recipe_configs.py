"""segkit.recipe.configs.write_model_config: each preset's self-contained config loads with
segkit's load_config, the crop reaches every pipeline, the preprocessor and the test and TTA
resizes, the gpu preset is the original Swin-B recipe, the cpu one trains an iteration, and bad
arguments are named."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from segkit.errors import InputError, InputTypeError
from segkit.recipe.configs import MODEL_PRESETS, config_text, write_model_config

needs_mmseg = pytest.mark.skipif(
    importlib.util.find_spec("mmseg") is None,
    reason="mmsegmentation is not installed: pip install 'segkit[mmseg]' (make test installs it)")


def _write(tmp_path, preset, **kw):
    args = dict(num_classes=7, crop=96, epochs=3) | kw
    return write_model_config(tmp_path / f"{preset}.py", preset, **args)


def _load(path, **kw):
    from segkit.mmseg.runner import load_config

    return load_config(path, **kw)


def _crop_sizes(cfg) -> dict[str, object]:
    """Every place a crop-dependent size appears in a loaded config."""
    train = {t["type"]: t for t in cfg.train_dataloader.dataset.pipeline}
    test = {t["type"]: t for t in cfg.test_pipeline}
    val = {t["type"]: t for t in cfg.val_dataloader.dataset.pipeline}
    tta = cfg.tta_pipeline[1]["transforms"][0]
    out = {"RandomCrop": tuple(train["RandomCrop"]["crop_size"]),
           "preprocessor": tuple(cfg.model.data_preprocessor["size"]),
           "test Resize": tuple(test["Resize"]["scale"]),
           "val Resize": tuple(val["Resize"]["scale"]),
           "TTA": [tuple(t["scale"]) for t in tta]}
    if "RandomResize" in train:
        out["train resize"] = [tuple(train["RandomResize"]["scale"])]
    else:
        out["train resize"] = [tuple(s) for s in train["RandomChoiceResize"]["scales"]]
    return out


@needs_mmseg
@pytest.mark.parametrize("preset", MODEL_PRESETS)
@pytest.mark.parametrize("crop", [64, 160])
def test_crop_reaches_every_pipeline(tmp_path, preset, crop):
    path = _write(tmp_path, preset, crop=crop)
    assert "_base_ =" not in path.read_text()  # self-contained: nothing of configs/ needed
    sizes = _crop_sizes(_load(path))
    c = (crop, crop)
    assert sizes["RandomCrop"] == c and sizes["preprocessor"] == c
    assert sizes["test Resize"] == c and sizes["val Resize"] == c
    if preset == "cpu":
        assert sizes["train resize"] == [c] and sizes["TTA"] == [c]
    else:  # 1 to 2 times the crop (the original: 512..1024 at 512), TTA 0.5..1.75
        assert sizes["train resize"] == [(int(crop * r),) * 2 for r in (1, 1.25, 1.5, 1.75, 2)]
        assert sizes["TTA"] == [(int(crop * r),) * 2 for r in (0.5, 0.75, 1, 1.25, 1.5, 1.75)]


@needs_mmseg
def test_gpu_preset_is_the_original_recipe(tmp_path):
    from segkit.mmseg.transforms import ALBU_RECIPE

    weights = tmp_path / "swin_base_22k.pth"
    cfg = _load(_write(tmp_path, "gpu", crop=512, epochs=60, pretrained=str(weights)))
    albu = next(t for t in cfg.train_dataloader.dataset.pipeline if t["type"] == "Albu")
    assert json.loads(json.dumps(albu["transforms"])) == json.loads(json.dumps(ALBU_RECIPE))
    scales = next(t for t in cfg.train_dataloader.dataset.pipeline
                  if t["type"] == "RandomChoiceResize")["scales"]
    assert [s[0] for s in scales] == [512, 640, 768, 896, 1024]
    b = cfg.model.backbone
    assert (b.embed_dims, b.depths, b.num_heads, b.window_size, b.pretrain_img_size,
            b.drop_path_rate) == (128, [2, 2, 18, 2], [4, 8, 16, 32], 12, 384, 0.3)
    assert b.init_cfg == dict(type="Pretrained", checkpoint=str(weights))
    assert cfg.model.decode_head.channels == 512 and cfg.model.auxiliary_head.channels == 256
    assert cfg.model.decode_head.num_classes == cfg.model.auxiliary_head.num_classes == 7
    assert cfg.train_dataloader.batch_size == 8
    opt = cfg.optim_wrapper
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay,
            opt.clip_grad.max_norm) == ("AdamW", 1e-4, 0.01, 10)
    warm, cosine = cfg.param_scheduler
    assert (warm.end, warm.by_epoch) == (300, False)
    assert (cosine.eta_min_ratio, cosine.end, cosine.T_max) == (7e-6, 60, 60)
    assert cfg.train_cfg.max_epochs == 60 and cfg.train_cfg.val_interval == 1
    assert cfg.default_hooks.checkpoint.save_best == "mIoU"
    for split in ("train", "val"):
        ds = cfg[f"{split}_dataloader"].dataset
        assert ds.type == "CocoMaskDataset" and ds.ann_file == f"splits/fold{{fold}}/{split}.txt"
    assert cfg.custom_imports.imports == ["segkit.mmseg"]


@needs_mmseg
def test_gpu_preset_without_weights_starts_from_random(tmp_path):
    path = _write(tmp_path, "gpu")
    assert "No pretrained file was given" in path.read_text()
    assert _load(path).model.backbone.init_cfg is None


@needs_mmseg
def test_gpu_model_builds(tmp_path):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    cfg = _load(_write(tmp_path, "gpu", num_classes=5))
    init_default_scope("mmseg")
    cfg.model.decode_head.norm_cfg = cfg.model.auxiliary_head.norm_cfg = dict(type="BN")
    model = MODELS.build(cfg.model)
    assert model.decode_head.conv_seg.out_channels == 5
    assert sum(p.numel() for p in model.backbone.parameters()) > 80e6  # Swin-B


@needs_mmseg
def test_cpu_config_trains_one_iteration(tmp_path):
    from .mmseg_data import make_dataset
    from segkit.mmseg.runner import train

    data = tmp_path / "data"
    make_dataset(data, n=6, size=96, folds=3)  # fold 0: 4 training images
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps([f"c{i}" for i in range(11)]))
    path = _write(tmp_path, "cpu", num_classes=11, crop=64, epochs=1, batch_size=4)
    opts = {f"{dl}.dataset.classes_file": str(classes)
            for dl in ("train_dataloader", "val_dataloader", "test_dataloader")}
    opts["log_level"] = "ERROR"
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = train(path, work_dir=tmp_path / "work", data_root=data, fold=0, cfg_options=opts)
    finally:
        torch.set_num_threads(threads)
    from segkit.mmseg.checkpoint import load

    meta = load(res.last_checkpoint)["meta"]
    assert (meta["iter"], meta["epoch"]) == (1, 1)
    assert list(meta["dataset_meta"]["classes"]) == [f"c{i}" for i in range(11)]
    assert 0 <= res.metrics["mIoU"] <= 100 and res.best_checkpoint is not None


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"preset": "tpu"}, InputError, "preset must be one of 'cpu', 'gpu'; got 'tpu'"),
    ({"crop": 100}, InputError, "crop must be a multiple of 32.*got 100: use 96"),
    ({"crop": 16}, InputError, "crop must be at least 32; got 16"),
    ({"crop": 128.0}, InputTypeError, "crop must be an int; got 128.0"),
    ({"num_classes": 1}, InputError, "num_classes must be at least 2; got 1"),
    ({"num_classes": True}, InputTypeError, "num_classes must be an int; got True"),
    ({"epochs": 0}, InputError, "epochs must be at least 1; got 0"),
    ({"batch_size": 0}, InputError, "batch_size must be at least 1; got 0"),
    ({"pretrained": 3}, InputTypeError, "pretrained must be a path or None; got 3"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, exc, message):
    args = dict(preset="cpu", num_classes=4, crop=128, epochs=2) | kwargs
    with pytest.raises(exc, match=message):
        write_model_config(tmp_path / "m.py", args.pop("preset"), **args)
    assert not (tmp_path / "m.py").exists()


def test_path_must_be_a_python_file(tmp_path):
    with pytest.raises(InputError, match=r"path must name a \.py file"):
        write_model_config(tmp_path / "m.toml", "cpu", num_classes=4, crop=128, epochs=2)


def test_text_is_valid_python_without_mmseg():
    """The text compiles (a config is Python), and writing it needs no mmseg."""
    for preset in MODEL_PRESETS:
        text = config_text(preset, num_classes=3, crop=256, epochs=5, batch_size=2)
        compile(text, f"{preset}.py", "exec")
        assert "crop_size = (256, 256)" in text and "batch_size=2," in text
        assert "max_epochs = 5" in text and "num_classes = 3" in text


def test_written_atomically_where_asked(tmp_path):
    path = write_model_config(tmp_path / "deep" / "models" / "m.py", "cpu", num_classes=4,
                              crop=128, epochs=2)
    assert path == tmp_path / "deep" / "models" / "m.py" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["m.py"]
    assert isinstance(path, Path)
