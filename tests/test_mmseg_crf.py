"""segkit.mmseg.CRFEncoderDecoder: a trainable ConvCRF after the decode head, end to end.

Fast checks on the untrained tiny model (losses, masking of padded pixels, gradients, every
inference path seeing the CRF, checkpoints both ways), then the tiny CRF config trained some
iterations on the CPU through `segkit train` and through mmseg's own tools/train.py (the loss
goes down, the CRF parameters move and are logged), and `segkit infer` on the result."""
from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
import subprocess
import sys
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
from segkit.errors import InputError, InputTypeError  # noqa: E402
from segkit.io.store import ConfidenceStore  # noqa: E402
from segkit.mmseg.crf_segmentor import valid_mask  # noqa: E402

from .mmseg_data import make_dataset, one_torch_thread  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "upernet_swin-tiny_cpu.py"
TINY_CRF = ROOT / "configs" / "upernet_swin-tiny_cpu_crf.py"
SWIN_B_CRF = ROOT / "configs" / "upernet_swin-b_trash_crf.py"
CRF_PARAMS = ("crf.weight", "crf.log_pos_compat", "crf.log_col_compat", "crf.log_pos_sdims",
              "crf.log_col_schan")
#: the training runs: 16 iterations (4 images at batch 2, 8 epochs), one validation at the end,
#: on the tiny CRF config without its random augmentations (so that the loss can only go down
#: by learning)
NO_AUGMENTATION = f"""_base_ = [{str(TINY_CRF)!r}]
train_dataloader = dict(dataset=dict(pipeline={{{{_base_.test_pipeline}}}}))
"""
TRAIN_OPTS = {"train_cfg.max_epochs": 8, "train_cfg.val_interval": 8,
              "param_scheduler.1.end": 8, "param_scheduler.1.T_max": 8,
              "optim_wrapper.optimizer.lr": 1e-3, "default_hooks.logger.interval": 1,
              "randomness.seed": 1}


class Messages(logging.Handler):
    """Collects what mmengine's current logger says."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def mm_log():
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    handler = Messages()
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def build(config=TINY_CRF, **model_overrides):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    cfg = Config.fromfile(str(config))
    cfg.model.update(model_overrides)
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmseg_crf_data")
    make_dataset(root, n=6, folds=3)
    return root


def batch(model, n=2, size=128, img_shapes=None, seed=0):
    """A preprocessed training batch of random images with random labels (padded at the
    bottom right where `img_shapes` says, as the data preprocessor does)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(seed)
    inputs = (torch.rand((n, 3, size, size), generator=g) - 0.5) * 3
    samples = []
    for i in range(n):
        h, w = (img_shapes or [(size, size)] * n)[i]
        label = torch.randint(0, 11, (1, size, size), generator=g)
        label[:, h:, :] = 255
        label[:, :, w:] = 255
        s = SegDataSample(metainfo=dict(img_shape=(h, w), pad_shape=(size, size)))
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    return inputs, samples


# ---- construction ------------------------------------------------------------------------
def test_registered_and_built_from_the_tiny_config():
    model = build()
    assert type(model).__name__ == "CRFEncoderDecoder"
    assert model.crf.trainable and model.crf.weight.shape == (11,)
    assert model.crf.mean == pytest.approx([117.551, 112.259, 106.825])
    assert model.crf.std == pytest.approx([59.866, 58.944, 62.162])
    assert (model.crf.setting.filter_size, model.crf.setting.blur,
            model.crf.setting.num_iter) == (11, 4, 5)
    assert sorted(k for k, _ in model.named_parameters() if k.startswith("crf.")) \
        == sorted(CRF_PARAMS)


def test_swin_b_crf_config_is_the_recipe_plus_the_crf():
    from mmengine.config import Config

    plain = Config.fromfile(str(ROOT / "configs" / "upernet_swin-b_trash.py"))
    crf = Config.fromfile(str(SWIN_B_CRF))
    assert crf.model.type == "CRFEncoderDecoder" and plain.model.type == "EncoderDecoder"
    assert crf.model.backbone == plain.model.backbone
    assert crf.model.decode_head == plain.model.decode_head
    assert crf.train_pipeline == plain.train_pipeline
    keys = crf.optim_wrapper.paramwise_cfg.custom_keys
    assert keys["crf."] == dict(lr_mult=10.0, decay_mult=0.0)
    assert keys["crf.weight"] == dict(lr_mult=0.01, decay_mult=0.0)
    assert set(plain.optim_wrapper.paramwise_cfg.custom_keys) < set(keys)
    for name in ("upernet_swin-tiny_cpu_crf.py", "upernet_swin-tiny_demo_crf.py"):
        tiny = Config.fromfile(str(ROOT / "configs" / name))
        for key in ("crf", "crf_loss_weight", "unary_loss_weight", "crf_test"):
            assert tiny.model[key] == crf.model[key], (name, key)
        assert tiny.optim_wrapper.paramwise_cfg.custom_keys == keys


@pytest.mark.parametrize("overrides, error, match", [
    (dict(crf_loss_weight=-1), InputError, r"crf_loss_weight must be a number >= 0; got -1"),
    (dict(crf_loss_weight=0), InputError, r"crf_loss_weight must be > 0"),
    (dict(unary_loss_weight="half"), InputError, r"unary_loss_weight .* got 'half'"),
    (dict(crf_test="yes"), InputTypeError, r"crf_test must be True or False; got 'yes'"),
    (dict(crf=dict(num_classes=5)), InputError, r"num_classes are set by the segmentor"),
    (dict(crf=dict(filter_size=4)), InputError, r"filter_size must be odd; got 4"),
    (dict(crf=dict(nonsense=1)), InputTypeError, r"unknown ConvCRF parameter\(s\): nonsense"),
])
def test_bad_settings_name_the_argument(overrides, error, match):
    with pytest.raises(error, match=match):
        build(**overrides)


# ---- padding -------------------------------------------------------------------------------
def test_valid_mask_from_img_shape():
    metas = [dict(img_shape=(4, 6)), dict(img_shape=(3, 5)), dict()]
    mask = valid_mask(metas, (4, 6), torch.device("cpu"))
    expected = np.ones((3, 4, 6), bool)
    expected[1, 3:, :] = False
    expected[1, :, 5:] = False
    np.testing.assert_array_equal(mask.numpy(), expected)
    assert valid_mask([dict(img_shape=(4, 6))] * 2, (4, 6), torch.device("cpu")) is None
    assert valid_mask([dict(img_shape=(9, 9))], (4, 6), torch.device("cpu")) is None


def test_padded_pixels_neither_send_nor_receive():
    """What the padding holds does not change the CRF's output on the image's pixels."""
    model = build().eval()
    inputs, samples = batch(model, img_shapes=[(80, 96), (128, 128)])
    mask = valid_mask([s.metainfo for s in samples], inputs.shape[2:], inputs.device)
    logits = torch.randn(2, 11, 32, 32, generator=torch.Generator().manual_seed(1))
    other = inputs.clone()
    other[0, :, 80:, :] = 5.0  # a bright colour in the padding, close in colour to nothing
    other[0, :, :, 96:] = -5.0
    a = model.refine(logits, inputs, mask)
    b = model.refine(logits, other, mask)
    torch.testing.assert_close(a[0, :, :80, :96], b[0, :, :80, :96])
    torch.testing.assert_close(a[1], b[1])
    c = model.refine(logits, other, None)  # unmasked, the padding's colour leaks in
    assert (a[0, :, :80, :96] - c[0, :, :80, :96]).abs().max() > 1e-3


def test_loss_hands_the_valid_mask_to_the_crf():
    model = build().eval()
    inputs, samples = batch(model, img_shapes=[(100, 128), (128, 64)])
    seen = []
    forward = model.crf.forward
    model.crf.forward = lambda u, img, mask=None: seen.append(mask) or forward(u, img, mask)
    model.loss(inputs, samples)
    (mask,) = seen
    assert mask.shape == (2, 128, 128)
    assert mask[0, :100].all() and not mask[0, 100:].any()
    assert mask[1, :, :64].all() and not mask[1, :, 64:].any()


# ---- training losses -----------------------------------------------------------------------
def test_loss_terms_weights_and_logged_parameters():
    model = build().eval()  # eval: no dropout, the same numbers twice
    inputs, samples = batch(model)
    losses = model.loss(inputs, samples)
    assert {"decode.loss_ce", "crf.loss_ce", "aux.loss_ce", "crf.acc_seg"} <= set(losses)
    logged = {"crf.weight_mean": 0.02, "crf.weight_min": 0.02, "crf.weight_max": 0.02,
              "crf.pos_compat": 3.0, "crf.col_compat": 10.0, "crf.pos_sdims": 3.0,
              "crf.col_schan": 13.0}
    for key, value in logged.items():
        assert float(losses[key]) == pytest.approx(value, rel=1e-6), key
        assert not losses[key].requires_grad and "loss" not in key
    loss, log_vars = model.parse_losses(losses)  # mmengine sums only the loss_* terms
    torch.testing.assert_close(loss, losses["decode.loss_ce"] + losses["crf.loss_ce"]
                               + losses["aux.loss_ce"])
    assert "crf.pos_compat" in log_vars

    plain_head = model.decode_head.loss_by_feat(
        model.decode_head.forward(model.extract_feat(inputs)), samples)["loss_ce"]
    torch.testing.assert_close(losses["decode.loss_ce"], 0.5 * plain_head)  # unary_loss_weight
    model.crf_loss_weight, model.unary_loss_weight = 2.0, 0.0
    doubled = model.loss(inputs, samples)
    assert "decode.loss_ce" not in doubled
    torch.testing.assert_close(doubled["crf.loss_ce"], 2.0 * losses["crf.loss_ce"])


def test_gradients_reach_the_crf_and_the_network():
    model = build().eval()
    inputs, samples = batch(model)
    model.unary_loss_weight = 0.0  # only the CRF's loss reaches the decode head
    model.auxiliary_head = None
    losses = model.loss(inputs, samples)
    model.parse_losses(losses)[0].backward()
    for name in CRF_PARAMS:
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.decode_head.conv_seg.weight.grad.abs().sum() > 0
    assert model.backbone.patch_embed.projection.weight.grad.abs().sum() > 0


def test_unary_kind_probs_feeds_the_softmax():
    """unary_kind='probs': the CRF gets the decode head's softmax (its log inside), so the same
    CRF on logits (log_softmax inside) gives the same scores."""
    model = build(crf=dict(preset="convcrf", unary_kind="probs", init="softmax")).eval()
    logits = torch.randn(1, 11, 32, 32, generator=torch.Generator().manual_seed(3))
    inputs = torch.rand((1, 3, 128, 128), generator=torch.Generator().manual_seed(4))
    got = model.refine(logits, inputs)
    on_logits = build(crf=dict(preset="convcrf", init="softmax")).eval()
    torch.testing.assert_close(got, on_logits.refine(logits, inputs), rtol=1e-4, atol=1e-4)
    inputs, samples = batch(model)
    assert torch.isfinite(model.parse_losses(model.loss(inputs, samples))[0])


# ---- inference -----------------------------------------------------------------------------
def _plain_copy(model):
    """The plain EncoderDecoder of the tiny config with `model`'s weights."""
    plain = build(TINY).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.startswith("crf.")})
    return plain


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_predict_returns_the_crf_scores(mode):
    from mmengine.config import ConfigDict

    model = build(crf=dict(preset="convcrf")).eval()  # ConvCRF's weight 0.2: labels change
    if mode == "slide":
        model.test_cfg = ConfigDict(mode="slide", crop_size=(96, 96), stride=(64, 64))
    plain = _plain_copy(model)
    plain.test_cfg = model.test_cfg
    inputs = (torch.rand((1, 3, 128, 128), generator=torch.Generator().manual_seed(2)) - .5) * 3
    with torch.no_grad():
        got = model.predict(inputs)[0].seg_logits.data
        unary = plain.predict(inputs)[0].seg_logits.data
        model.crf_test = False
        torch.testing.assert_close(model.predict(inputs)[0].seg_logits.data, unary)
    with torch.no_grad():
        expected = (model.crf(unary[None], inputs)[0] if mode == "whole"
                    else _slide_expected(model, inputs, 96, 64))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    if mode == "slide":  # not the CRF of the whole image: each window's, then averaged
        with torch.no_grad():
            whole = model.crf(unary[None], inputs)[0]
        assert (whole - got).abs().max() > 1e-2
    assert (got.argmax(0) != unary.argmax(0)).float().mean() > 0.01  # the CRF changed labels


def _slide_expected(model, inputs, crop: int, stride: int):
    """Slide inference written out: every crop x crop window (stride `stride`, the last one
    flush with the border) gets the plain logits, then the CRF on that window and its image;
    the windows' CRF scores are averaged where they overlap."""
    h, w = inputs.shape[2:]
    total = torch.zeros((model.decode_head.out_channels, h, w))
    count = torch.zeros((1, h, w))
    starts = [min(i * stride, s - crop) for s in (h, w)
              for i in range(max(s - crop + stride - 1, 0) // stride + 1)]
    ys, xs = starts[:len(starts) // 2], starts[len(starts) // 2:]
    model.crf_test = False
    try:
        for y in ys:
            for x in xs:
                window = inputs[:, :, y:y + crop, x:x + crop]
                meta = dict(ori_shape=(crop, crop), img_shape=(crop, crop),
                            pad_shape=(crop, crop), padding_size=[0, 0, 0, 0])
                logits = model.encode_decode(window, [meta])
                total[:, y:y + crop, x:x + crop] += model.refine(logits, window, None)[0]
                count[:, y:y + crop, x:x + crop] += 1
    finally:
        model.crf_test = True
    return total / count


def _save(model, path, meta=True):
    state = {"state_dict": model.state_dict()}
    if meta:
        state["meta"] = {"dataset_meta": {"classes": list(sm.TrashDataset.METAINFO["classes"])}}
    torch.save(state, path)
    return path


def test_tta_averages_the_softmax_of_the_crf_views(data_root, tmp_path):
    """`segkit infer --tta` (SegkitTTAModel): the mean over the views of softmax(CRF scores):
    one softmax per view, the CRF in each view."""
    from mmengine.config import Config
    from mmengine.dataset import Compose

    from segkit.mmseg.inference import _without_annotations, build_model

    model = build()
    with torch.no_grad():
        model.crf.weight.fill_(0.2)  # a CRF that changes the probabilities clearly
    ckpt = _save(model, tmp_path / "crf.pth")
    store = sm.infer(TINY_CRF, ckpt, data_root / "images", tmp_path / "tta", tta=True,
                     workers=0, device="cpu", progress=False, stems=["0000"])
    cfg = Config.fromfile(str(TINY_CRF))
    model = build_model(cfg, ckpt, "cpu")
    data = Compose(_without_annotations(cfg.tta_pipeline))(
        dict(img_path=str(data_root / "images" / "0000.jpg")))
    views = []
    for crf_test in (True, False):
        model.crf_test = crf_test
        with torch.no_grad():
            views.append(torch.stack([
                model.test_step(dict(inputs=[x], data_samples=[s]))[0].seg_logits.data
                .softmax(0) for x, s in zip(data["inputs"], data["data_samples"])]).mean(0))
    stored = store.read("0000").astype(np.float32)
    np.testing.assert_allclose(stored, views[0].numpy(), atol=2e-3)
    assert np.abs(stored - views[1].numpy()).max() > 0.05  # not the unary's
    np.testing.assert_allclose(stored.sum(0), 1.0, atol=5e-3)


# ---- checkpoints both ways -----------------------------------------------------------------
def test_plain_checkpoint_loads_into_the_crf_model(tmp_path, mm_log):
    from mmengine.runner import load_checkpoint

    plain = build(TINY)
    path = _save(plain, tmp_path / "plain.pth")
    model = build()
    with torch.no_grad():
        model.crf.weight.fill_(0.7)  # must stay: CRF parameters keep their values
    torch.manual_seed(5)
    load_checkpoint(model, str(path), map_location="cpu", logger="current")
    got = model.state_dict()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(got[key], value)
    assert float(model.crf.weight.detach()[0]) == pytest.approx(0.7)
    text = "\n".join(mm_log)
    assert "the checkpoint has no CRF layer" in text
    assert "crf.weight" not in text  # not listed as missing keys


def test_crf_checkpoint_loads_into_the_plain_model_with_a_message(tmp_path, mm_log):
    from mmengine.runner import load_checkpoint

    model = build()
    with torch.no_grad():
        model.crf.log_pos_compat.fill_(0.25)
    path = _save(model, tmp_path / "crf.pth")
    plain = build(TINY)
    load_checkpoint(plain, str(path), map_location="cpu", logger="current")
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[key])
    text = "\n".join(mm_log)
    assert f"checkpoint {str(path)!r} has a ConvCRF layer (5 tensors: " in text
    assert "a model without a CRF layer (a plain EncoderDecoder config) ignores them" in text
    # and into a CRF model, the CRF's values come back
    again = build()
    load_checkpoint(again, str(path), map_location="cpu", logger="current")
    assert float(again.crf.log_pos_compat.detach()) == pytest.approx(0.25)


def test_infer_with_a_plain_config_predicts_with_the_unary(data_root, tmp_path):
    model = build()
    with torch.no_grad():
        model.crf.weight.fill_(0.2)
    ckpt = _save(model, tmp_path / "crf.pth")
    kw = dict(workers=0, device="cpu", progress=False, stems=["0000", "batch_01+0001"])
    plain = sm.infer(TINY, ckpt, data_root / "images", tmp_path / "plain", **kw)
    unary = sm.infer(TINY_CRF, ckpt, data_root / "images", tmp_path / "unary",
                     cfg_options={"model.crf_test": False}, **kw)
    crf = sm.infer(TINY_CRF, ckpt, data_root / "images", tmp_path / "crf", **kw)
    for stem in kw["stems"]:
        a, b, c = (s.read(stem).astype(np.float32) for s in (plain, unary, crf))
        np.testing.assert_allclose(a, b, atol=1e-3)
        assert np.abs(a - c).max() > 0.05


# ---- training through both entry points ----------------------------------------------------
def scalars(work: Path) -> list[dict]:
    files = sorted(glob.glob(str(work / "*" / "vis_data" / "scalars.json")))
    assert files, f"no scalars.json under {work}"
    return [json.loads(line) for line in Path(files[-1]).read_text().splitlines()
            if '"loss"' in line]


def check_training(work: Path) -> None:
    """The loss goes down, the CRF parameters move, and both are in the training log."""
    rows = scalars(work)
    assert [r["iter"] for r in rows] == list(range(1, 17))
    loss = np.array([r["loss"] for r in rows])
    first, last = loss[:4].mean(), loss[-4:].mean()
    assert last < 0.8 * first, loss.round(3).tolist()
    for key, init in (("crf.pos_compat", 3.0), ("crf.col_compat", 10.0),
                      ("crf.pos_sdims", 3.0), ("crf.col_schan", 13.0),
                      ("crf.weight_mean", 0.02)):
        assert rows[0][key] == pytest.approx(init, rel=1e-3), key
        assert abs(rows[-1][key] - init) > 1e-3 * init, (key, rows[-1][key])
    state = sm.checkpoint.load(work / "epoch_8.pth")["state_dict"]
    assert all(key in state for key in CRF_PARAMS)
    assert float(state["crf.log_pos_compat"].exp()) == pytest.approx(rows[-1]["crf.pos_compat"],
                                                                     rel=1e-4)
    log = "\n".join(Path(p).read_text() for p in glob.glob(str(work / "*" / "*.log")))
    assert "crf.pos_compat:" in log and "crf.loss_ce:" in log


@pytest.fixture(scope="module")
def train_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("crf_config") / "tiny_crf_fixed_data.py"
    path.write_text(NO_AUGMENTATION)
    return path


@pytest.fixture(scope="module")
def trained(data_root, train_config, tmp_path_factory):
    work = tmp_path_factory.mktemp("crf_work")
    opts = [f"{k}={v}" for k, v in TRAIN_OPTS.items()]
    result = CliRunner().invoke(main, [
        "train", str(train_config), "--data-root", str(data_root), "--work-dir", str(work),
        "--fold", "0", "--cfg-options", *opts])
    assert result.exit_code == 0, (result.output, result.exception)
    return work, result.output


def test_segkit_train_learns_the_crf(trained):
    work, output = trained
    check_training(work)
    state = sm.checkpoint.load(work / "epoch_8.pth")["state_dict"]
    w = state["crf.weight"]
    line = next(x for x in output.splitlines() if x.startswith("learned CRF: "))
    assert f"class weights {float(w.min()):.4f}-{float(w.max()):.4f}, " in line
    assert f"pos_compat {float(state['crf.log_pos_compat'].exp()):.3f}" in line


def test_mmseg_tools_train_learns_the_crf(data_root, train_config, tmp_path):
    import mmseg

    script = Path(mmseg.__file__).parent / ".mim" / "tools" / "train.py"
    if not script.is_file():
        pytest.skip(f"this mmseg install has no tools/train.py ({script})")
    opts = [f"{k}={v}" for k, v in TRAIN_OPTS.items()]
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        opts += [f"{loader}.dataset.data_root={data_root}", f"{loader}.dataset.fold=0"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(script), str(train_config), "--work-dir",
                          str(tmp_path / "work"), "--cfg-options", *opts], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    check_training(tmp_path / "work")


def test_segkit_infer_writes_crf_probabilities(trained, data_root, tmp_path):
    from mmseg.apis import inference_model, init_model

    ckpt = trained[0] / "epoch_8.pth"
    result = CliRunner().invoke(main, [
        "infer", str(TINY_CRF), str(ckpt), "--images", str(data_root / "images"), "--out",
        str(tmp_path / "store"), "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    store = ConfidenceStore(tmp_path / "store")
    assert len(store) == 6
    model = init_model(str(TINY_CRF), str(ckpt), device="cpu")
    for stem in store.stems():
        p = store.read(stem).astype(np.float32)
        assert p.shape == (11, 128, 128) and p.min() >= 0
        np.testing.assert_allclose(p.sum(0), 1.0, atol=5e-3)
    img = data_root / "images" / "0000.jpg"
    expected = inference_model(model, str(img)).seg_logits.data.softmax(0).numpy()
    np.testing.assert_allclose(store.read("0000").astype(np.float32), expected, atol=2e-3)


def test_probability_hook_stores_the_crf_probabilities(trained, data_root, tmp_path):
    """tools/test.py-style (Runner.test with SaveProbabilitiesHook): what `segkit infer` writes
    for the CRF model, one softmax of the CRF's scores."""
    from mmengine.runner import Runner

    from segkit.mmseg.runner import load_config

    ckpt = trained[0] / "epoch_8.pth"
    cfg = load_config(TINY_CRF, data_root=data_root, fold=0, work_dir=tmp_path / "test_run",
                      cfg_options={"load_from": str(ckpt)})
    cfg.custom_hooks = [dict(type="SaveProbabilitiesHook", out_dir=str(tmp_path / "hook"))]
    assert "mIoU" in Runner.from_cfg(cfg).test()
    hook = ConfidenceStore(tmp_path / "hook")
    ref = sm.infer(TINY_CRF, ckpt, data_root / "images", tmp_path / "infer",
                   stems=hook.stems(), workers=0, device="cpu", progress=False)
    unary = sm.infer(TINY_CRF, ckpt, data_root / "images", tmp_path / "unary",
                     stems=hook.stems(), workers=0, device="cpu", progress=False,
                     cfg_options={"model.crf_test": False})
    assert len(hook) == 2
    for stem in hook.stems():
        got = hook.read(stem).astype(np.float32)
        np.testing.assert_allclose(got, ref.read(stem).astype(np.float32), atol=2e-3)
        assert np.abs(got - unary.read(stem).astype(np.float32)).max() > 1e-2


def test_swin_b_crf_model_builds_and_predicts():
    """The recipe's CRF model, random weights: the CRF refines Swin-B's logits at the input
    size."""
    from mmengine.config import Config
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    cfg = Config.fromfile(str(SWIN_B_CRF))
    cfg.model.backbone.init_cfg = None  # no pretrained file here
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).eval()
    assert model.crf.weight.shape == (11,) and model.crf.setting.filter_size == 11
    with torch.no_grad():
        out = model.predict(torch.zeros(1, 3, 96, 96))
    assert out[0].seg_logits.data.shape == (11, 96, 96)
