# A tiny UperNet + Swin with the structure of upernet_swin-b_trash.py (same heads, pipeline,
# Albu augmentations, schedule and hooks), small enough to train on a CPU: the tests and the
# demo use it. Embed 32, depths [1, 1, 1, 1], heads [1, 2, 4, 8], window 7, crop 128, random
# initial weights.
#
#   segkit train configs/upernet_swin-tiny_cpu.py --data-root DIR --work-dir work_dirs/tiny
_base_ = ['./upernet_swin-b_trash.py']

crop_size = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomChoiceResize', scales=[(s, s) for s in (128, 160, 192, 224, 256)],
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='Albu', transforms={{_base_.albu_train_transforms}},
         keymap=dict(img='image', gt_seg_map='mask')),
    dict(type='RandomFlip', prob=0.3),
    dict(type='PackSegInputs', meta_keys={{_base_.meta_keys}}),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs', meta_keys={{_base_.meta_keys}}),
]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (0.5, 1.0, 1.5)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs', meta_keys={{_base_.meta_keys}})],
    ]),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        pretrain_img_size=224,
        embed_dims=32,
        window_size=7,
        depths=[1, 1, 1, 1],
        num_heads=[1, 2, 4, 8],
        drop_path_rate=0.1,
        init_cfg=None),
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=32),
    auxiliary_head=dict(in_channels=128, channels=16))

max_epochs = 2
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
    dict(type='CosineAnnealingLR', eta_min_ratio=7e-6, by_epoch=True, begin=0,
         end=max_epochs, T_max=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(logger=dict(interval=1), visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
