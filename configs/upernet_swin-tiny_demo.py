# The tiny CPU model tuned to learn something in a couple of minutes on 2 cores, for
# `segkit demo`: the recipe's structure (UperNet + Swin, FCN auxiliary head, AdamW, warm-up +
# cosine, mIoU validation keeping the best checkpoint) without the heavy albumentations
# (elastic and piecewise-affine warps cost most of a CPU iteration), a higher learning rate and
# batch 4. `segkit demo` sets max_epochs from its size preset.
_base_ = ['./upernet_swin-tiny_cpu.py']

crop_size = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomChoiceResize', scales=[(s, s) for s in (112, 128, 144)], keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs', meta_keys={{_base_.meta_keys}}),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))

max_epochs = 12
optim_wrapper = dict(optimizer=dict(lr=3e-3, weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', eta_min_ratio=0.05, by_epoch=True, begin=0,
         end=max_epochs, T_max=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=4)
default_hooks = dict(logger=dict(interval=20))

# Generated scenes are mostly background: a Dice term beside cross-entropy lets a short CPU run
# learn the objects rather than the background prior. (mmseg 1.2.2's CrossEntropyLoss cannot
# take class_weight when a batch holds ignored pixels.)
losses = [dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
          dict(type='DiceLoss', loss_weight=1.0)]
model = dict(decode_head=dict(loss_decode=losses),
             auxiliary_head=dict(loss_decode=[dict(type='CrossEntropyLoss', use_sigmoid=False,
                                                   loss_weight=0.4)]))
