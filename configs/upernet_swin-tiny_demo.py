# The tiny CPU model of `segkit demo`, chosen to learn the generated trash scenes from scratch
# in under a minute per model on 2 cores: the recipe's structure (UperNet + Swin, FCN auxiliary
# head, AdamW, warm-up + cosine, mIoU validation keeping the best checkpoint) at 64x64 px,
# Swin embed 32 with window 4 (stages of 16, 8, 4, 2 cells), a higher learning rate, batch 8
# and light augmentation (scale jitter, flips; the recipe's elastic and piecewise-affine warps
# would cost most of a CPU iteration). `segkit demo` sets max_epochs from its size preset.
_base_ = ['./upernet_swin-tiny_cpu.py']

crop_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
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
        [dict(type='Resize', scale_factor=1.0, keep_ratio=True)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs', meta_keys={{_base_.meta_keys}})],
    ]),
]
train_dataloader = dict(batch_size=8, dataset=dict(pipeline=train_pipeline))
# validation against the clean truth the generator kept (the demo's curves)
val_dataloader = dict(batch_size=8, dataset=dict(data_prefix=dict(img_path='images',
                                                    seg_map_path='masks_clean'),
                                   pipeline=test_pipeline))
test_dataloader = val_dataloader

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(pretrain_img_size=64, embed_dims=32, window_size=4, depths=[1, 1, 1, 1],
                  num_heads=[1, 2, 4, 8], drop_path_rate=0.05),
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=32, dropout_ratio=0.0),
    auxiliary_head=dict(in_channels=128, channels=16))

max_epochs = 30
optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', eta_min_ratio=0.02, by_epoch=True, begin=0,
         end=max_epochs, T_max=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
default_hooks = dict(logger=dict(interval=50))
