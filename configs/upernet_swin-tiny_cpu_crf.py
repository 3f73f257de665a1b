# The tiny CPU config (upernet_swin-tiny_cpu.py) with the trainable ConvCRF of
# upernet_swin-b_trash_crf.py (the same CRF lines: keep them in step): trains on a CPU in
# seconds, for the tests.
#
#   segkit train configs/upernet_swin-tiny_cpu_crf.py --data-root data/toy --work-dir work_dirs/toy_crf
_base_ = ['./upernet_swin-tiny_cpu.py']

model = dict(
    type='CRFEncoderDecoder',
    crf=dict(preset='convcrf', weight_init=0.02, init='softmax'),
    crf_loss_weight=1.0,
    unary_loss_weight=0.5,
    crf_test=True)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'crf.': dict(lr_mult=10., decay_mult=0.),
    'crf.weight': dict(lr_mult=0.01, decay_mult=0.)}))
