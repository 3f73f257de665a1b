"""segkit.mmseg, the pieces: the mmcv._ext stand-in, weights-only checkpoints, datasets, the
ModeResample transform, the Albu pipeline, the TTA merge and config handling.

Training, inference and the hook run in test_mmseg_train.py.
"""
from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("mmseg") is None:  # checked without importing it (see below)
    pytest.skip("mmsegmentation is not installed: pip install 'segkit[mmseg]' (make test "
                "installs it)", allow_module_level=True)

import torch  # noqa: E402

import segkit  # noqa: E402
import segkit.mmseg as sm  # noqa: E402
from segkit.mmseg import _ext_stub, checkpoint  # noqa: E402
from segkit.palette import TRASH_CLASSES, TRASH_PALETTE  # noqa: E402

from .mmseg_data import make_dataset, make_sample, one_torch_thread  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
SWIN_B = ROOT / "configs" / "upernet_swin-b_trash.py"
TINY = ROOT / "configs" / "upernet_swin-tiny_cpu.py"
MMCV_HAS_OPS = any((Path(importlib.util.find_spec("mmcv").origin).parent).glob("_ext*.so"))


def _dist(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


#: the maintained OpenMMLab line (onedl-mmsegmentation 1.4, onedl-mmengine) instead of upstream's
ONEDL = _dist("onedl-mmsegmentation") is not None


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmseg_data")
    make_dataset(root, n=6, folds=3)
    return root


@pytest.fixture(autouse=True)
def _mmseg_scope():
    from mmengine.registry import init_default_scope

    init_default_scope("mmseg")


def build_transform(cfg):
    from mmseg.registry import TRANSFORMS

    return TRANSFORMS.build(cfg)


# ---- the mmcv._ext stand-in (GUIDE section 5) ----------------------------------------------
@pytest.mark.skipif(MMCV_HAS_OPS, reason="a full mmcv with compiled ops is installed: the "
                                         "stand-in is (rightly) not used")
def test_ext_stub_is_installed_with_mmcv_lite():
    from mmengine.utils.dl_utils import mmcv_full_available

    ext = sys.modules["mmcv._ext"]
    assert sm.EXT_STUB_INSTALLED and _ext_stub.is_stub(ext)
    assert isinstance(ext.__spec__, importlib.machinery.ModuleSpec)
    assert ext.__spec__.name == "mmcv._ext" and ext.__spec__.loader is None
    assert importlib.util.find_spec("mmcv._ext").loader is None
    # upstream mmengine asks pkgutil.find_loader (None for the stand-in): no compiled ops.
    # onedl-mmengine asks importlib.util.find_spec, which returns the stand-in's spec: it then
    # only imports mmcv.ops' Python classes for isinstance checks (SyncBatchNorm, DCN), which
    # the stand-in serves; revert_sync_batchnorm below is one of those paths.
    assert mmcv_full_available() is ONEDL
    from mmengine.model.utils import revert_sync_batchnorm

    model = revert_sync_batchnorm(torch.nn.Sequential(torch.nn.SyncBatchNorm(4)))
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    import mmcv
    import mmcv._ext as again
    assert again is ext and mmcv._ext is ext


def test_ext_stub_ops_raise_a_clear_error():
    stub = _ext_stub.make_stub()
    op = stub.nms
    assert callable(op) and op.__name__ == "nms" and stub.nms is op
    assert hasattr(stub, "ms_deform_attn_forward")  # mmcv.ops' load_ext only asks hasattr
    with pytest.raises(_ext_stub.MissingOpError, match=r"mmcv\._ext\.nms .*mmcv-lite.*"
                                                        r"mmcv==2\.1\.0"):
        op(torch.zeros(1, 4), torch.zeros(1), 0.5)


def test_ext_stub_hides_dunder_attributes():
    stub = _ext_stub.make_stub()
    for name in ("__path__", "__file__", "__all__", "__wrapped__"):
        assert not hasattr(stub, name), name
    assert stub.__loader__ is None and stub.__package__ == "mmcv"


def test_ext_stub_not_installed_over_a_real_module(monkeypatch):
    real = types.ModuleType("mmcv._ext")
    monkeypatch.setitem(sys.modules, "mmcv._ext", real)
    assert _ext_stub.real_ext_available() is True
    assert _ext_stub.install() is False
    assert sys.modules["mmcv._ext"] is real and not _ext_stub.is_stub()


def test_ext_stub_install_is_idempotent():
    if MMCV_HAS_OPS:
        pytest.skip("a full mmcv with compiled ops is installed")
    before = sys.modules["mmcv._ext"]
    assert _ext_stub.install() is True
    assert sys.modules["mmcv._ext"] is before


@pytest.mark.skipif(MMCV_HAS_OPS, reason="a full mmcv with compiled ops is installed")
def test_import_segkit_stays_light_and_mmseg_needs_the_stub():
    """`import segkit` imports neither torch nor mmseg; bare mmseg 1.2 fails on mmcv-lite (the
    gap that segkit.mmseg closes), onedl-mmsegmentation 1.4 guards its mmcv.ops imports."""
    code = ("import sys, segkit\n"
            "assert 'torch' not in sys.modules and 'mmseg' not in sys.modules, 'heavy import'\n"
            "try:\n    import mmseg.models\nexcept ModuleNotFoundError as e:\n"
            "    print('GAP', e.name)\nelse:\n    print('NO GAP')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert ("NO GAP" if ONEDL else "GAP mmcv._ext") in out.stdout


# ---- weights-only checkpoints ---------------------------------------------------------------
def test_mmengine_loads_local_files_weights_only():
    assert checkpoint.is_registered()


def test_allowlist_is_exactly_what_checkpoints_need():
    from mmengine.logging.history_buffer import HistoryBuffer

    allowed = checkpoint.safe_globals()
    assert HistoryBuffer in allowed and np.ndarray in allowed and np.dtype in allowed
    names = {name for g in allowed if isinstance(g, tuple) for name in [g[1]]}
    assert "builtins.getattr" in names
    assert getattr not in allowed  # the real getattr never is
    for g in allowed:
        assert g not in torch.serialization.get_safe_globals()  # scoped, not process-wide


def test_history_buffer_round_trips_weights_only(tmp_path):
    from mmengine.logging.history_buffer import HistoryBuffer

    buf = HistoryBuffer()
    for v in (1.0, 2.0, 4.0):
        buf.update(v)
    path = tmp_path / "hub.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "buf": buf, "arr": np.arange(3.0),
                "scalar": np.float32(2.5)}, path)
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        torch.load(path, weights_only=True)  # torch alone refuses it
    out = checkpoint.load(path)
    assert out["buf"].mean() == pytest.approx(7 / 3) and out["buf"].max() == 4.0
    np.testing.assert_array_equal(out["arr"], np.arange(3.0))
    assert out["scalar"] == np.float32(2.5)


class _Sneaky:
    """Pickles as getattr(HistoryBuffer, '__init__'): outside the restricted getattr."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer

        return getattr, (HistoryBuffer, "__init__")


class _Evil:
    def __reduce__(self):
        return print, ("pwned",)


def test_restricted_getattr_and_foreign_globals_are_refused(tmp_path):
    torch.save({"x": _Sneaky()}, tmp_path / "sneaky.pth")
    with pytest.raises(Exception, match=r"getattr\(.*HistoryBuffer.*'__init__'\)"):
        checkpoint.load(tmp_path / "sneaky.pth")
    torch.save({"x": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(checkpoint.CheckpointError, match=r"builtins\.print.*add_safe_globals"):
        checkpoint.load(tmp_path / "evil.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        checkpoint.load(tmp_path / "nope.pth")


# ---- datasets ---------------------------------------------------------------------------------
def _dataset(data_root, **kw):
    from mmseg.registry import DATASETS

    cfg = dict(type="TrashDataset", data_root=str(data_root), ann_file="splits/fold{fold}/val.txt",
               fold=0, data_prefix=dict(img_path="images", seg_map_path="masks"), pipeline=[])
    cfg.update(kw)
    return DATASETS.build(cfg)


def test_trash_dataset_reads_folds_and_flattened_names(data_root):
    ds = _dataset(data_root)
    assert ds.metainfo["classes"] == TRASH_CLASSES
    assert [list(c) for c in ds.metainfo["palette"]] == TRASH_PALETTE.tolist()
    stems = (data_root / "splits/fold0/val.txt").read_text().split()
    assert [d["stem"] for d in ds] == stems and len(ds) == 2
    nested = [d for d in ds if "+" in d["stem"]]
    assert nested, "the generated split should hold a flattened stem"
    for d in ds:
        assert Path(d["img_path"]).is_file() and Path(d["seg_map_path"]).is_file()
        assert Path(d["seg_map_path"]).name == d["stem"] + ".png"
    assert nested[0]["img_path"].endswith("images/batch_01/" + nested[0]["stem"][9:] + ".jpg")
    other = _dataset(data_root, fold=1)
    assert not {d["stem"] for d in ds} & {d["stem"] for d in other}


def test_dataset_without_split_lists_every_image(data_root):
    ds = _dataset(data_root, ann_file="")
    assert len(ds) == 6 and sorted(d["stem"] for d in ds) == [d["stem"] for d in ds]


def test_dataset_errors_name_the_problem(data_root, tmp_path):
    from segkit.mmseg.datasets import DatasetError

    with pytest.raises(DatasetError, match=r"\{fold\} placeholder but fold is None"):
        _dataset(data_root, fold=None)
    with pytest.raises(DatasetError, match="fold must be a non-negative int; got -1"):
        _dataset(data_root, fold=-1)
    with pytest.raises(DatasetError, match=r"split file .*fold7/val.txt' does not exist"):
        _dataset(data_root, fold=7)
    with pytest.raises(DatasetError, match=r"mask for stem '0002' not found"):
        _dataset(data_root, ann_file="splits/fold0/train.txt",
                 data_prefix=dict(img_path="images", seg_map_path="nowhere"))
    split = tmp_path / "split.txt"
    split.write_text("ghost\n")
    with pytest.raises(DatasetError, match=r"image for stem 'ghost' not found"):
        _dataset(data_root, ann_file=str(split))


def test_coco_mask_dataset_class_tables(data_root, tmp_path):
    from segkit.mmseg.datasets import DatasetError, read_class_table

    lst = tmp_path / "list.json"
    lst.write_text(json.dumps(["bg", "can", "bottle"]))
    table = read_class_table(lst)
    assert table["classes"] == ["bg", "can", "bottle"] and len(table["palette"]) == 3
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"categories": [{"id": 2, "name": "b"}, {"id": 1, "name": "a"}]}))
    assert read_class_table(coco)["classes"] == ["Background", "a", "b"]
    coco.write_text(json.dumps({"categories": [{"id": 1, "name": "a"}, {"id": 5, "name": "e"}]}))
    with pytest.raises(DatasetError, match=r"ids \[1, 5\] do not run 1..2"):
        read_class_table(coco)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"classes": ["a", "b"], "palette": [[0, 0, 0]]}))
    with pytest.raises(DatasetError, match="palette has 1 entries for 2 classes"):
        read_class_table(bad)
    ds = _dataset(data_root, type="CocoMaskDataset", classes_file=str(lst))
    assert ds.metainfo["classes"] == ("bg", "can", "bottle") or \
        list(ds.metainfo["classes"]) == ["bg", "can", "bottle"]
    with pytest.raises(DatasetError, match="no classes given"):
        _dataset(data_root, type="CocoMaskDataset")


# ---- ModeResample ----------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(), dict(size=5, ties="smallest"),
                                dict(anchor="topleft", ties="first"),
                                dict(ignore_index=255, backend="numpy")])
def test_mode_resample_equals_mode_filter(kw):
    rng = np.random.default_rng(3)
    mask = rng.integers(0, 5, (37, 29)).astype(np.uint8)
    mask[rng.random(mask.shape) < 0.1] = 255
    t = build_transform(dict(type="ModeResample", **kw))
    out = t(dict(gt_seg_map=mask.copy(), seg_fields=["gt_seg_map"]))["gt_seg_map"]
    expected = segkit.mode_filter(mask, kw.get("size", 3), anchor=kw.get("anchor", "center"),
                                  ties=kw.get("ties", "keep"),
                                  ignore_index=kw.get("ignore_index"), backend="numpy")
    assert out.dtype == mask.dtype
    np.testing.assert_array_equal(out, expected)
    assert (out != mask).any()


def test_mode_resample_in_a_loading_pipeline(data_root):
    from mmengine.dataset import Compose

    from segkit.io.masks import read_mask

    mask_path = data_root / "masks" / "0000.png"
    pipe = Compose([dict(type="LoadAnnotations"), dict(type="ModeResample", size=3)])
    out = pipe(dict(seg_map_path=str(mask_path), reduce_zero_label=False, seg_fields=[]))
    np.testing.assert_array_equal(out["gt_seg_map"], segkit.mode_filter(read_mask(mask_path)))


def test_mode_resample_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        build_transform(dict(type="ModeResample", size=2))
    with pytest.raises(ValueError, match="ties"):
        build_transform(dict(type="ModeResample", ties="most"))
    t = build_transform(dict(type="ModeResample"))
    with pytest.raises(KeyError, match="after LoadAnnotations"):
        t(dict(img=np.zeros((2, 2, 3), np.uint8)))


# ---- the Albu pipeline -------------------------------------------------------------------------
def _albu(transforms):
    return build_transform(dict(type="Albu", transforms=transforms, keymap=sm.ALBU_KEYMAP))


def test_albu_flip_moves_the_mask_with_the_image():
    mask = np.zeros((6, 8), np.uint8)
    mask[1, 0:3] = 4        # an asymmetric mark, top-left
    mask[4, 6] = 7
    img = np.zeros((6, 8, 3), np.uint8)
    img[..., 1] = mask * 30
    for flip, ref in (("HorizontalFlip", np.fliplr), ("VerticalFlip", np.flipud)):
        out = _albu([dict(type=flip, p=1.0)])(dict(img=img.copy(), gt_seg_map=mask.copy(),
                                                   seg_fields=["gt_seg_map"]))
        np.testing.assert_array_equal(out["gt_seg_map"], ref(mask))
        np.testing.assert_array_equal(out["img"], ref(img))


GEOMETRIC = ("VerticalFlip", "HorizontalFlip", "ShiftScaleRotate", "RandomRotate90",
             "PiecewiseAffine", "ElasticTransform", "GridDistortion", "OpticalDistortion",
             "RandomGridShuffle")


@pytest.mark.parametrize("name", GEOMETRIC)
def test_albu_recipe_geometry_keeps_image_and_mask_aligned(name):
    """Every geometric transform of the recipe, on an image that encodes its own labels (nearest
    interpolation for the image too): after the transform the image still encodes the mask."""
    import inspect

    import albumentations

    recipe = {t["type"]: t for t in sm.ALBU_RECIPE[:2]}
    recipe.update({t["type"]: t for t in sm.ALBU_RECIPE[2]["transforms"]})
    cfg = dict(recipe[name], p=1.0)
    if "interpolation" in inspect.signature(getattr(albumentations, name)).parameters:
        cfg["interpolation"] = 0
    _, mask = make_sample(np.random.default_rng(1), 96)
    img = np.repeat((mask * 20)[..., None], 3, axis=2).astype(np.uint8)
    albu = _albu([cfg])
    moved = False
    for _ in range(10):  # RandomRotate90 keeps the mask with probability 1/4 per call
        out = albu(dict(img=img.copy(), gt_seg_map=mask.copy(), seg_fields=["gt_seg_map"]))
        assert out["gt_seg_map"].shape == mask.shape and out["gt_seg_map"].dtype == mask.dtype
        np.testing.assert_array_equal(out["img"][..., 0], out["gt_seg_map"] * 20)
        assert set(np.unique(out["gt_seg_map"])) <= set(np.unique(mask))  # no blended labels
        moved |= bool((out["gt_seg_map"] != mask).any())
    if name != "ElasticTransform":  # alpha=1 (the 1.x default) barely moves a 96-pixel image
        assert moved, f"{name} never changed the mask"


def test_config_albu_list_is_the_recipe():
    from mmengine.config import Config

    cfg = Config.fromfile(str(SWIN_B))
    as_plain = json.loads(json.dumps(cfg.albu_train_transforms))
    assert as_plain == json.loads(json.dumps(sm.albu_transforms()))
    step = [t for t in cfg.train_pipeline if t["type"] == "Albu"][0]
    assert dict(step["keymap"]) == sm.ALBU_KEYMAP
    assert sm.albu_pipeline_step()["keymap"] == {"img": "image", "gt_seg_map": "mask"}


def test_full_albu_recipe_runs():
    img, mask = make_sample(np.random.default_rng(2), 128)
    albu = build_transform(sm.albu_pipeline_step())
    for _ in range(8):
        out = albu(dict(img=img.copy(), gt_seg_map=mask.copy(), seg_fields=["gt_seg_map"]))
        assert out["img"].shape == img.shape and out["gt_seg_map"].shape == mask.shape
        assert set(np.unique(out["gt_seg_map"])) <= set(np.unique(mask))


# ---- the TTA merge -------------------------------------------------------------------------------
def test_tta_merge_averages_probabilities_once():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from segkit.mmseg.probabilities import SegkitTTAModel, sample_probabilities

    rng = np.random.default_rng(0)
    views = []
    for _ in range(3):
        s = SegDataSample(metainfo=dict(img_path="a/b.jpg", stem="b", ori_shape=(4, 5)))
        s.seg_logits = PixelData(data=torch.as_tensor(rng.standard_normal((3, 4, 5)) * 3,
                                                      dtype=torch.float32))
        views.append(s)
    merged = SegkitTTAModel.merge_preds(None, [views])[0]
    expected = torch.stack([v.seg_logits.data.softmax(0) for v in views]).mean(0)
    torch.testing.assert_close(merged.seg_probs.data, expected)
    torch.testing.assert_close(sample_probabilities(merged), expected)
    torch.testing.assert_close(merged.seg_logits.data.softmax(0), expected)
    assert torch.equal(merged.pred_sem_seg.data[0], expected.argmax(0))
    assert merged.metainfo["stem"] == "b"
    # mmseg's own merge keeps only the last view's logits: the reason for SegkitTTAModel
    assert not torch.allclose(views[-1].seg_logits.data.softmax(0), expected)


def test_single_channel_output_is_refused():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from segkit.mmseg.probabilities import sample_probabilities

    s = SegDataSample()
    s.seg_logits = PixelData(data=torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="single-channel"):
        sample_probabilities(s)


# ---- configs and overrides -------------------------------------------------------------------------
def test_load_config_overrides():
    from segkit.mmseg.runner import load_config, parse_cfg_options

    cfg = load_config(SWIN_B, fold=3, data_root="/d", pretrained="none", amp=True,
                      cfg_options=["train_dataloader.batch_size=2", "model.test_cfg.mode=slide"])
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert cfg[key].dataset.fold == 3 and cfg[key].dataset.data_root == "/d"
    assert cfg.model.backbone.init_cfg is None and cfg.optim_wrapper.type == "AmpOptimWrapper"
    assert cfg.train_dataloader.batch_size == 2 and cfg.model.test_cfg.mode == "slide"
    cfg = load_config(SWIN_B, pretrained="/w/swin.pth")
    assert cfg.model.backbone.init_cfg == dict(type="Pretrained", checkpoint="/w/swin.pth")
    assert parse_cfg_options(["a.b=1", "c=[1,2]", "d=x"]) == {"a.b": 1, "c": [1, 2], "d": "x"}
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        parse_cfg_options(["novalue"])
    with pytest.raises(ValueError, match="fold must be a non-negative int; got -2"):
        load_config(SWIN_B, fold=-2)


def test_swin_b_config_is_the_recipe():
    from mmengine.config import Config

    cfg = Config.fromfile(str(SWIN_B))
    b = cfg.model.backbone
    assert (b.embed_dims, list(b.depths), list(b.num_heads), b.window_size,
            b.pretrain_img_size, b.drop_path_rate, b.use_abs_pos_embed) == \
        (128, [2, 2, 18, 2], [4, 8, 16, 32], 12, 384, 0.3, False)
    h, a = cfg.model.decode_head, cfg.model.auxiliary_head
    assert (h.type, h.channels, tuple(h.pool_scales), h.dropout_ratio, h.num_classes) == \
        ("UPerHead", 512, (1, 2, 3, 6), 0.1, 11)
    assert (a.type, a.in_index, a.channels, a.loss_decode.loss_weight) == ("FCNHead", 2, 256, 0.4)
    assert cfg.model.data_preprocessor.mean == [117.551, 112.259, 106.825]
    assert cfg.model.data_preprocessor.std == [59.866, 58.944, 62.162]
    assert cfg.train_dataloader.batch_size == 8 and cfg.train_cfg.max_epochs == 60
    opt = cfg.optim_wrapper
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay,
            opt.clip_grad.max_norm) == ("AdamW", 1e-4, 0.01, 10)
    warm, cos = cfg.param_scheduler
    assert (warm.type, warm.start_factor, warm.end, warm.by_epoch) == ("LinearLR", 0.1, 300, False)
    assert (cos.type, cos.eta_min_ratio) == ("CosineAnnealingLR", 7e-6)
    assert cfg.default_hooks.checkpoint.save_best == "mIoU"
    assert cfg.val_evaluator.iou_metrics == ["mIoU"] and cfg.train_cfg.val_interval == 1
    tta = cfg.tta_pipeline[1].transforms
    assert [t.scale_factor for t in tta[0]] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert [t.prob for t in tta[1]] == [0.0, 1.0]
    assert cfg.custom_imports.imports == ["segkit.mmseg"]
