"""On a GPU: every op called on torch CUDA tensors under ``torch.cuda.stream(side)`` runs on
`side` (segkit._cuda.op_stream). Run by scripts/gpu_check.sh; exits 1 on a failure.

For each op: `side` first spins (``torch.cuda._sleep``) and only then writes the op's inputs;
the op is called right after, without any synchronisation. An op on `side` waits for the
write and returns the reference's answer; an op launched on any other stream (CuPy's, the
legacy default stream, which does not wait for torch's non-blocking streams) reads the inputs
before they are written and returns something else. Also checked: the outputs come back as
CUDA tensors, and CuPy's current stream is the same before and after the call.
"""
from __future__ import annotations

import sys

import cupy
import numpy as np
import torch

import segkit
from segkit.synthetic import blob_masks

SPIN = 200_000_000  # GPU cycles of torch.cuda._sleep: about 0.1 s
rng = np.random.default_rng(0)
masks = blob_masks(2, 257, 311, 7, noise=0.2, seed=1)
probs = [rng.dirichlet(np.ones(5), (2, 64, 96)).transpose(0, 3, 1, 2).astype(np.float16)
         for _ in range(3)]
unary = rng.standard_normal((1, 4, 64, 96)).astype(np.float32)
image = rng.integers(0, 256, (1, 64, 96, 3)).astype(np.uint8)

CASES = {  # op -> (host inputs, call on device inputs)
    "mode_filter": ([masks], lambda m: segkit.mode_filter(m, ties="first")),
    "confusion_matrix": ([masks, masks[::-1].copy()],
                         lambda a, b: segkit.confusion_matrix(a, b, 7)),
    "soft_vote": (probs, lambda *p: segkit.soft_vote(list(p), [1, 2, 3], return_probs=True)),
    "convcrf_labels": ([unary, image], lambda u, i: segkit.convcrf_labels(u, i, num_iter=3)),
}


def host(x):
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def check(name: str, inputs: list, call) -> str | None:
    expected = call(*inputs)  # the host run (cpp backend) is the answer
    expected = expected if isinstance(expected, tuple) else (expected,)
    sources = [torch.from_numpy(np.ascontiguousarray(a)).cuda() for a in inputs]
    targets = [torch.zeros_like(s) for s in sources]
    call(*sources)  # compile the kernels first: the timed call must only launch them
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    before = cupy.cuda.get_current_stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(SPIN)
        for t, s in zip(targets, sources):
            t.copy_(s)
        out = call(*targets)
    if cupy.cuda.get_current_stream() != before:
        return "CuPy's current stream changed"
    side.synchronize()
    out = out if isinstance(out, tuple) else (out,)
    for o, e in zip(out, expected):
        if name != "confusion_matrix" and not (isinstance(o, torch.Tensor) and o.is_cuda):
            return f"returned {type(o).__name__}, not a CUDA tensor"
        o = host(o)
        if o.dtype != e.dtype or o.shape != e.shape:
            return f"returned {o.dtype} {o.shape}, expected {e.dtype} {e.shape}"
        differ = int((o != e).sum())
        # labels after ConvCRF may differ at near-ties (scores agree to 1e-5, not bit for bit)
        if differ > (o.size // 1000 if name == "convcrf_labels" else 0):
            return f"{differ} of {o.size} values differ from the host run"
    return None


def main() -> int:
    failed = 0
    for name, (inputs, call) in CASES.items():
        problem = check(name, inputs, call)
        print(f"   {name:17s} {'ok: ran on torch current stream' if problem is None else problem}")
        failed += problem is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
