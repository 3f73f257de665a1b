"""A compact progress bar for training runs (the demo uses it with mmengine's logging at
WARNING): iterations with rate and ETA, the last loss and the latest validation mIoU."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmseg.registry import HOOKS
from tqdm import tqdm


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """tqdm bar over the training iterations."""

    priority = "VERY_LOW"

    def __init__(self, desc: str = "train"):
        self.desc = desc
        self.bar = None
        self.postfix: dict[str, str] = {}

    def before_train(self, runner) -> None:
        self.bar = tqdm(total=runner.max_iters, initial=runner.iter, desc=self.desc, unit="it",
                        dynamic_ncols=True)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.bar is None:
            return
        loss = (outputs or {}).get("loss")
        if loss is not None:
            loss = loss.detach() if hasattr(loss, "detach") else loss
            self.postfix["loss"] = f"{float(loss):.3f}"
            self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update()

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self.bar is not None and metrics and "mIoU" in metrics:
            self.postfix["val mIoU"] = f"{float(metrics['mIoU']):.1f}"
            self.bar.set_postfix(self.postfix)

    def after_train(self, runner) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
