"""Model configs for a user's dataset: one self-contained mmseg config per preset.

A child config that changes ``crop_size`` does not reach the pipelines its ``_base_`` already
built (mmengine evaluates the base file first), and a wheel does not ship the repository's
``configs/``: so the recipe writes the whole config as one file, with the crop written into
every place that depends on it (the training resizes and crop, the data preprocessor's pad
size, the test resize and the TTA resizes).

Presets (:data:`MODEL_PRESETS`):

- ``"cpu"``: the demo's tiny Swin-UperNet (embed 32, depths [1, 1, 1, 1], window 4, the FCN
  auxiliary head, AdamW with warm-up and cosine) with light augmentation (scale jitter, flips),
  random initial weights: about 100 photos at a reduced size train in minutes on 2 cores.
- ``"gpu"``: the original Swin-B recipe (GUIDE section 6): its schedule (AdamW 1e-4, 300
  warm-up iterations, cosine to 7e-6), the Albu augmentation, the multi-scale resize (1 to 2
  times the crop), batch 8, the best checkpoint by mIoU, and the user's pretrained
  ImageNet-22K Swin-B file.

The dataset's location, class table, mask folders, fold and ignore value are placeholders in
the file; :func:`segkit.recipe.trainings.run_trainings` fills them at train time through
``cfg_options``, so that a user's own mmseg config is driven the same way.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError, InputTypeError
from ..io.atomic import write_text

MODEL_PRESETS = ("cpu", "gpu")

#: The smallest crop: Swin's four stages divide it by 32 (the crop must be a multiple of 32).
MIN_CROP = 32
#: Training scales of the gpu preset, as multiples of the crop (the original: 512..1024 at 512).
GPU_SCALES = (1.0, 1.25, 1.5, 1.75, 2.0)
#: TTA views (scale multiples of the crop) of each preset; both flipped and not.
TTA_SCALES = {"cpu": (1.0,), "gpu": (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)}
DEFAULT_BATCH = {"cpu": 8, "gpu": 8}

_HEADER = """\
# mmseg config for a user's dataset, preset {preset!r}: written by segkit's
# segkit.recipe.configs.write_model_config (num_classes={num_classes}, crop={crop},
# epochs={epochs}, batch_size={batch}). Self-contained: no _base_, so crop_size below reaches
# every pipeline, the data preprocessor and the test resize; edit crop_size here, or write the
# file again with another crop.
#
# The dataset (data_root, classes_file, the mask folders, fold, ignore_index) is filled at
# train time by segkit.recipe.trainings.run_trainings (cfg_options), e.g.
#   segkit train THIS.py --data-root DIR --fold K --cfg-options \\
#       train_dataloader.dataset.classes_file=classes.json ...
{preset_note}
custom_imports = dict(imports=['segkit.mmseg'], allow_failed_imports=False)
default_scope = 'mmseg'

# ---- data -------------------------------------------------------------------------------
dataset_type = 'CocoMaskDataset'
data_root = 'data'
classes_file = None  # a json class table (segkit.mmseg.read_class_table); set at train time
fold = 0  # fills {{fold}} in the split paths
num_classes = {num_classes}
ignore_index = 255  # the void label: not learned, not scored, and the pad value of the masks
crop_size = ({crop}, {crop})
meta_keys = ('img_path', 'seg_map_path', 'stem', 'ori_shape', 'img_shape', 'pad_shape',
             'scale_factor', 'flip', 'flip_direction', 'reduce_zero_label')
"""

_CPU_NOTE = """\
# cpu: the demo's tiny Swin-UperNet (embed 32, depths [1, 1, 1, 1], window 4, random initial
# weights) with scale jitter and flips.
{timing}"""

#: What the cpu preset took here: 100 generated photos of 480x360 (scripts/measure_recipe.py;
#: the whole recipe's stage times are in docs/guide/recipe.md, "Measured").
CPU_TIMING = """\
# Measured on 2 shared CPU cores (2026-12-07, 14:36-15:22 UTC), 100 generated photos of
# 480x360 (resized to 128x96 before the crop), batch 4: a training step took 0.12 s (idle
# cores) to 0.17 s (load 4-7) with torch on 1 thread (OMP_NUM_THREADS=1); on torch's default
# 2 threads 0.09 s on idle cores but 1.6-3.6 s while other jobs used them. A training of 30
# epochs (67 images, 33 validated) took 105-151 s on 1 thread (109 s on 2 idle threads), the
# whole recipe (3 folds; docs/guide/recipe.md, "Measured") 6-9 min."""

_GPU_NOTE = """\
# gpu: the original Swin-B recipe (GUIDE section 6): UperNet + Swin-B (window 12, ImageNet-22K
# 384 weights from the user's file), Albu augmentation, resize to 1-2x the crop, AdamW 1e-4 with
# 300 warm-up iterations and a cosine to 7e-6, batch 8, mIoU every epoch, best checkpoint kept."""

_CPU_DATA = """
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
"""

_GPU_DATA = """
# the original's albumentations pipeline (segkit.mmseg.transforms.ALBU_RECIPE; a test checks
# they agree); albumentations 1.x defaults spelled out: border_mode 4 = REFLECT_101.
albu_train_transforms = [
    dict(type='VerticalFlip', p=0.3),
    dict(type='HorizontalFlip', p=0.3),
    dict(type='OneOf', p=0.3, transforms=[
        dict(type='ShiftScaleRotate', border_mode=4, p=1.0),
        dict(type='RandomRotate90', p=1.0),
        dict(type='PiecewiseAffine', p=1.0),
        dict(type='CoarseDropout', num_holes_range=(8, 8), hole_height_range=(8, 8),
             hole_width_range=(8, 8), p=1.0),
        dict(type='ElasticTransform', border_mode=4, p=1.0),
        dict(type='GridDistortion', border_mode=4, p=1.0),
        dict(type='OpticalDistortion', distort_limit=0.5, border_mode=4, p=1.0),
        dict(type='RandomGridShuffle', p=1.0),
    ]),
    dict(type='OneOf', p=0.3, transforms=[
        dict(type='GaussianBlur', blur_limit=(3, 7), p=1.0),
        dict(type='Blur', p=1.0),
    ]),
    dict(type='OneOf', p=0.3, transforms=[
        dict(type='RandomGamma', p=1.0),
        dict(type='ChannelDropout', p=1.0),
        dict(type='ChannelShuffle', p=1.0),
        dict(type='RGBShift', p=1.0),
    ]),
]
# resize to one of 1, 1.25, ..., 2 times the crop (the original: 512..1024 for crop 512)
train_scales = [(int(crop_size[0] * r), int(crop_size[1] * r)) for r in {scales}]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomChoiceResize', scales=train_scales, keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='Albu', transforms=albu_train_transforms,
         keymap=dict(img='image', gt_seg_map='mask')),
    dict(type='RandomFlip', prob=0.3),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
"""

_COMMON_DATA = """\
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    # after Resize: the masks are compared at their original size
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
tta_scales = {tta}  # multiples of the crop
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(int(crop_size[0] * r), int(crop_size[1] * r)),
              keep_ratio=True) for r in tta_scales],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs', meta_keys=meta_keys)],
    ]),
]
train_dataloader = dict(
    batch_size={batch},
    num_workers={workers},
    persistent_workers={persistent},
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type, data_root=data_root, fold=fold, classes_file=classes_file,
        ignore_index=ignore_index, ann_file='splits/fold{{fold}}/train.txt',
        data_prefix=dict(img_path='images', seg_map_path='masks'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers={workers},
    persistent_workers={persistent},
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type, data_root=data_root, fold=fold, classes_file=classes_file,
        ignore_index=ignore_index, ann_file='splits/fold{{fold}}/val.txt',
        data_prefix=dict(img_path='images', seg_map_path='masks'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'], ignore_index=ignore_index)
test_evaluator = val_evaluator

# ---- model ------------------------------------------------------------------------------
norm_cfg = dict(type='SyncBN', requires_grad=True)  # the Runner turns it into BN off-cluster
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[117.551, 112.259, 106.825],
    std=[59.866, 58.944, 62.162],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=ignore_index,
    size=crop_size)
pretrained = {pretrained!r}
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='SwinTransformer',
        pretrain_img_size={pretrain_size},
        embed_dims={embed},
        patch_size=4,
        window_size={window},
        mlp_ratio=4,
        depths={depths},
        num_heads={heads},
        strides=(4, 2, 2, 2),
        out_indices=(0, 1, 2, 3),
        qkv_bias=True,
        qk_scale=None,
        patch_norm=True,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate={drop_path},
        use_abs_pos_embed=False,
        act_cfg=dict(type='GELU'),
        norm_cfg=dict(type='LN', requires_grad=True),
        init_cfg={init_cfg}),
    decode_head=dict(
        type='UPerHead',
        in_channels={in_channels},
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels={channels},
        dropout_ratio={dropout},
        num_classes=num_classes,
        ignore_index=ignore_index,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels={aux_in},
        in_index=2,
        channels={aux_channels},
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        ignore_index=ignore_index,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
tta_model = dict(type='SegkitTTAModel')

# ---- schedule -----------------------------------------------------------------------------
max_epochs = {epochs}
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr={lr}, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=dict(max_norm=10, norm_type=2),
    paramwise_cfg=dict(custom_keys={{
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)}}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end={warmup}),
    # run_trainings sets end and T_max with max_epochs
    dict(type='CosineAnnealingLR', eta_min_ratio={eta_min}, by_epoch=True, begin=0,
         end=max_epochs, T_max=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# ---- runtime ------------------------------------------------------------------------------
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval={log_interval}, log_metric_by_epoch=True),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # mIoU every epoch; keep the best checkpoint (and the latest, for resuming)
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=1, max_keep_ckpts=1,
                    save_best='mIoU', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(
    cudnn_benchmark={cudnn},
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend={dist!r}))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
"""

#: Per preset: the model and schedule values of the template.
_PRESET_VALUES = {
    "cpu": dict(workers=0, persistent=False, pretrain_size=224, embed=32, window=4,
                depths=[1, 1, 1, 1], heads=[1, 2, 4, 8], drop_path=0.05,
                in_channels=[32, 64, 128, 256], channels=32, dropout=0.0, aux_in=128,
                aux_channels=16, lr=2e-3, warmup=30, eta_min=0.02, log_interval=10,
                cudnn=False, dist="gloo"),
    "gpu": dict(workers=4, persistent=True, pretrain_size=384, embed=128, window=12,
                depths=[2, 2, 18, 2], heads=[4, 8, 16, 32], drop_path=0.3,
                in_channels=[128, 256, 512, 1024], channels=512, dropout=0.1, aux_in=512,
                aux_channels=256, lr=1e-4, warmup=300, eta_min=7e-6, log_interval=50,
                cudnn=True, dist="nccl"),
}


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputTypeError(f"{name} must be an int; got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise InputError(f"{name} must be at least {minimum}; got {value}")
    return value


def config_text(preset: str, *, num_classes: int, crop: int, epochs: int,
                batch_size: int | None = None, pretrained: str | None = None) -> str:
    """The text :func:`write_model_config` writes (arguments checked the same way)."""
    if preset not in MODEL_PRESETS:
        raise InputError(f"preset must be one of {', '.join(map(repr, MODEL_PRESETS))}; got "
                         f"{preset!r}")
    num_classes = _positive_int("num_classes", num_classes, 2)
    crop = _positive_int("crop", crop, MIN_CROP)
    if crop % 32:
        raise InputError(f"crop must be a multiple of 32 (Swin's four stages halve it down to "
                         f"1/32); got {crop}: use {32 * max(1, round(crop / 32))}")
    epochs = _positive_int("epochs", epochs)
    batch = DEFAULT_BATCH[preset] if batch_size is None else _positive_int("batch_size",
                                                                           batch_size)
    if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
        raise InputTypeError(f"pretrained must be a path or None; got {pretrained!r}")
    pretrained = None if pretrained is None or str(pretrained).lower() in ("", "none") \
        else os.fspath(pretrained)
    values = dict(_PRESET_VALUES[preset])
    values["init_cfg"] = ("None" if pretrained is None
                          else "dict(type='Pretrained', checkpoint=pretrained)")
    note = (_CPU_NOTE.format(timing=CPU_TIMING) if preset == "cpu" else _GPU_NOTE)
    if preset == "gpu" and pretrained is None:
        note += ("\n# No pretrained file was given: the backbone starts from random weights "
                 "(set\n# `pretrained` below and init_cfg=dict(type='Pretrained', "
                 "checkpoint=pretrained)).")
    text = _HEADER.format(preset=preset, num_classes=num_classes, crop=crop, epochs=epochs,
                          batch=batch, preset_note=note)
    text += (_CPU_DATA if preset == "cpu" else _GPU_DATA.format(scales=GPU_SCALES))
    text += _COMMON_DATA.format(tta=TTA_SCALES[preset], batch=batch, epochs=epochs,
                                pretrained=pretrained, **values)
    return text


def write_model_config(path, preset: str, *, num_classes: int, crop: int, epochs: int,
                       batch_size: int | None = None, pretrained: str | None = None) -> Path:
    """Write a self-contained mmseg config for a user's dataset.

    Parameters
    ----------
    path : path
        The config file to write (``.py``; written atomically, parent folders created).
    preset : {"cpu", "gpu"}
        ``"cpu"``: a tiny Swin-UperNet that trains in minutes on 2 CPU cores (random initial
        weights unless `pretrained`); ``"gpu"``: the original Swin-B recipe, its schedule and
        Albu augmentation (module docstring).
    num_classes : int >= 2
        Classes the heads predict (label values 0..num_classes-1; the ignore value aside).
    crop : int
        Side of the training crop, a multiple of 32 (>= 32): it sets the training resizes
        (cpu: the crop with scale jitter 0.8-1.25; gpu: 1 to 2 times the crop), the random
        crop, the data preprocessor's pad size, the test resize (longer side to the crop,
        keeping the ratio) and the TTA resizes.
    epochs : int >= 1
        ``max_epochs`` and the cosine schedule's length (run_trainings can change both).
    batch_size : int, optional
        Training batch (default 8 for both presets).
    pretrained : path, optional
        Backbone weights in mmseg's key format (a local file; nothing is downloaded): the
        user's ImageNet-22K Swin-B file for ``"gpu"``. None or ``"none"``: random weights.

    Returns
    -------
    Path
        `path`.

    Raises
    ------
    InputError, InputTypeError
        A preset that is not in :data:`MODEL_PRESETS`, a crop that is not a multiple of 32,
        fewer than 2 classes, a non-positive epoch count or batch size.

    Examples
    --------
    >>> write_model_config("recipe/models/swin_cpu.py", "cpu", num_classes=12, crop=128,
    ...                    epochs=20)  # doctest: +SKIP
    """
    text = config_text(preset, num_classes=num_classes, crop=crop, epochs=epochs,
                       batch_size=batch_size, pretrained=pretrained)
    path = Path(path)
    if path.suffix != ".py":
        raise InputError(f"path must name a .py file (mmseg reads the config as Python); got "
                         f"{os.fspath(path)!r}")
    write_text(path, text)
    return path
