# UperNet + Swin-B on the recycling-trash data: the original recipe (mmseg 0.18) on mmseg 1.x.
#
#   segkit train configs/upernet_swin-b_trash.py --fold 0 --pretrained PATH [--amp]
#   python tools/train.py configs/upernet_swin-b_trash.py \
#       --cfg-options train_dataloader.dataset.fold=0 val_dataloader.dataset.fold=0 \
#                     test_dataloader.dataset.fold=0 model.backbone.init_cfg.checkpoint=PATH
#
# Data layout (README, "Training with mmsegmentation"): data_root/images (the photos),
# data_root/masks (label PNGs from `segkit masks`), data_root/masks_resampled (from
# `segkit resample`, used for training as in the original), data_root/splits/fold{K}/train.txt
# and val.txt (image stems from `segkit kfold`).

# segkit.mmseg installs the mmcv-lite stand-in for mmcv._ext and registers TrashDataset,
# ModeResample, SegkitTTAModel, SaveProbabilitiesHook and weights-only checkpoint loading.
custom_imports = dict(imports=['segkit.mmseg'], allow_failed_imports=False)
default_scope = 'mmseg'

# ---- data -------------------------------------------------------------------------------
dataset_type = 'TrashDataset'
data_root = 'data/trash'
fold = 0  # the datasets' `fold` fills {fold} in the split paths (segkit train --fold K)
num_classes = 11
crop_size = (512, 512)
# Pretrained ImageNet-22K Swin-B 384 in mmseg's key format (OpenMMLab's converted file, or the
# original converted with mmseg's tools/model_converters/swin2mmseg.py). Nothing is downloaded.
pretrained = 'pretrained/swin_base_patch4_window12_384_22k.pth'

# The original's albumentations pipeline (segkit.mmseg.transforms.ALBU_RECIPE; a test checks
# they agree). albumentations 1.x defaults spelled out: border_mode 4 = REFLECT_101.
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

meta_keys = ('img_path', 'seg_map_path', 'stem', 'ori_shape', 'img_shape', 'pad_shape',
             'scale_factor', 'flip', 'flip_direction', 'reduce_zero_label')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    # dict(type='ModeResample', size=3),  # online alternative to the offline masks_resampled
    dict(type='RandomChoiceResize', scales=[(s, s) for s in (512, 640, 768, 896, 1024)],
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='Albu', transforms=albu_train_transforms,
         keymap=dict(img='image', gt_seg_map='mask')),
    dict(type='RandomFlip', prob=0.3),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 512), keep_ratio=True),
    # after Resize: the masks are compared at their original size
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
tta_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in tta_ratios],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs', meta_keys=meta_keys)],
    ]),
]

train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type, data_root=data_root, fold=fold,
        ann_file='splits/fold{fold}/train.txt',
        # mode-resampled masks for training, as in the original (segkit resample)
        data_prefix=dict(img_path='images', seg_map_path='masks_resampled'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type, data_root=data_root, fold=fold,
        ann_file='splits/fold{fold}/val.txt',
        # the original masks for validation
        data_prefix=dict(img_path='images', seg_map_path='masks'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# ---- model ------------------------------------------------------------------------------
norm_cfg = dict(type='SyncBN', requires_grad=True)  # the Runner turns it into BN off-cluster
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[117.551, 112.259, 106.825],
    std=[59.866, 58.944, 62.162],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='SwinTransformer',
        pretrain_img_size=384,
        embed_dims=128,
        patch_size=4,
        window_size=12,
        mlp_ratio=4,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        strides=(4, 2, 2, 2),
        out_indices=(0, 1, 2, 3),
        qkv_bias=True,
        qk_scale=None,
        patch_norm=True,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.3,
        use_abs_pos_embed=False,
        act_cfg=dict(type='GELU'),
        norm_cfg=dict(type='LN', requires_grad=True),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(
        type='UPerHead',
        in_channels=[128, 256, 512, 1024],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=512,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
tta_model = dict(type='SegkitTTAModel')

# ---- schedule -----------------------------------------------------------------------------
max_epochs = 60
optim_wrapper = dict(
    type='OptimWrapper',  # segkit train --amp switches to AmpOptimWrapper
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=dict(max_norm=10, norm_type=2),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)}))
param_scheduler = [
    # 300 linear warm-up iterations from 0.1 x lr ...
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=300),
    # ... under a cosine over the whole run down to 7e-6 x lr, stepped every iteration
    dict(type='CosineAnnealingLR', eta_min_ratio=7e-6, by_epoch=True, begin=0,
         end=max_epochs, T_max=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# ---- runtime ------------------------------------------------------------------------------
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=True),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # mIoU every epoch; keep the best checkpoint (and the latest, for resuming)
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=1, max_keep_ckpts=1,
                    save_best='mIoU', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
