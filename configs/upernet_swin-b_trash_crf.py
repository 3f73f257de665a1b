# The recipe (upernet_swin-b_trash.py) with a trainable ConvCRF after the decode head, learned
# end to end (segkit.mmseg.CRFEncoderDecoder; docs/mmseg.md, "The CRF segmentor"). The decode
# head's logits are upsampled to the crop and refined by ConvCRF's default setting (11x11
# filter on a 4x blurred grid, 5 mean-field iterations) with the input image; the loss is on
# the CRF's output plus half the usual loss on the head's own logits (and the auxiliary head's).
# The learned CRF parameters are logged with the losses (crf.weight_mean, crf.pos_compat, ...).
#
#   segkit train configs/upernet_swin-b_trash_crf.py --fold 0 --pretrained PATH
#   segkit train configs/upernet_swin-b_trash_crf.py --fold 0 --pretrained none \
#       --cfg-options load_from=work_dirs/swin-b_fold0/best_mIoU_epoch_41.pth   # fine-tune a plain model
#   python tools/train.py configs/upernet_swin-b_trash_crf.py --cfg-options ...   (as the recipe)
_base_ = ['./upernet_swin-b_trash.py']

model = dict(
    type='CRFEncoderDecoder',
    # ConvCRF's kernels (11x11 on a 4x blurred grid, 5 iterations), started gently: message
    # weight 0.02 (ConvCRF's 0.2 makes the unnormalised messages ~30x the logits at the start)
    # and the textbook first step Q0 = softmax(unary) instead of ConvCRF's log-softmax quirk
    crf=dict(preset='convcrf', weight_init=0.02, init='softmax'),
    crf_loss_weight=1.0,          # loss on the CRF's output
    unary_loss_weight=0.5,        # auxiliary loss on the decode head's logits (0: none)
    crf_test=True)                # predict with the CRF (False: the unary alone)
# the CRF's few parameters learn without weight decay (it would pull the log-parameters towards
# 0): the log-bandwidths and log-compatibilities 10x faster than the network, the class weights
# 100x slower (the messages are unnormalised, ~1000 at ConvCRF's 11x11 window: a step of the
# weight moves the scores 1000x as much; at 10x, Adam's first steps made the CRF's loss climb)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'crf.': dict(lr_mult=10., decay_mult=0.),
    'crf.weight': dict(lr_mult=0.01, decay_mult=0.)}))
