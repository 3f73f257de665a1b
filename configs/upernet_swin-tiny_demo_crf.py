# The demo's tiny model (upernet_swin-tiny_demo.py) with the trainable ConvCRF of
# upernet_swin-b_trash_crf.py (the same CRF lines: keep them in step); `segkit demo`'s
# crf_train stage trains it against the plain model of the same fold, seed and schedule.
_base_ = ['./upernet_swin-tiny_demo.py']

model = dict(
    type='CRFEncoderDecoder',
    crf=dict(preset='convcrf', weight_init=0.02, init='softmax'),
    crf_loss_weight=1.0,
    unary_loss_weight=0.5,
    crf_test=True)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'crf.': dict(lr_mult=10., decay_mult=0.),
    'crf.weight': dict(lr_mult=0.01, decay_mult=0.)}))
