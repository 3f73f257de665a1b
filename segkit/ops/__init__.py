"""Public ops: validation, backend dispatch and documentation (one module per op; an op whose
arithmetic has its own seam keeps it in a sibling module, as ``label_issues_cutoff``). Modules
with a leading underscore are private to the ops.

Each op module declares its row of the one table of backends (``segkit._backend.OPS``: the
op's runner on each backend it has) with ``_backend.register``, and runs every call through
``Op.call`` (resolve, CUDA stream, conversions). The modules are imported here in the order of
the table's rows (``segkit info`` and the README show them in this order).
"""
from .. import _backend
from . import mode_filter, convcrf, soft_vote, confusion, label_issues, vote_confusion
from . import convcrf_grad, convcrf_grad_cuda

#: The trainable ConvCRF's forward on each backend (segkit.torch picks the backend from the
#: tensors' device, not through backend=).
_backend.register("conv_crf (trainable)", {"cpp": convcrf_grad.forward,
                                           "cuda": convcrf_grad_cuda.forward_steps},
                  note="cuda: its kernels are tested on the CPU in emulation only "
                       "(tests/cuda_emu.py), not yet on a GPU")

__all__ = ["confusion", "convcrf", "convcrf_grad", "label_issues", "mode_filter", "soft_vote",
           "vote_confusion"]
