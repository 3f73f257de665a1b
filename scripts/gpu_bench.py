"""GPU timings for scripts/gpu_check.sh: each CUDA kernel against a torch peer on the same GPU,
with equality checks, printed as one table and written to $OUT/gpu_results.json.

Sections register themselves in SECTIONS; run all with `python3 scripts/gpu_bench.py`.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

ROWS: list[dict] = []


def cuda_time(fn, repeat: int = 20, warmup: int = 3) -> float:
    """Median seconds per call, timed with CUDA events on the current stream."""
    import cupy

    for _ in range(warmup):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    times = []
    for _ in range(repeat):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    return float(np.median(times))


def copy_bandwidth() -> float:
    """Device-to-device copy rate (bytes read + written per second): the practical peak."""
    import cupy

    a = cupy.empty(1 << 30, cupy.uint8)
    b = cupy.empty_like(a)
    t = cuda_time(lambda: b.__setitem__(Ellipsis, a), repeat=10)
    return 2 * a.nbytes / t


def record(section: str, impl: str, seconds: float, nbytes: int | None = None,
           peak: float | None = None, equal: bool | None = None, **extra) -> None:
    row = {"section": section, "impl": impl, "ms": seconds * 1e3, **extra}
    if nbytes:
        row["GB/s"] = nbytes / seconds / 1e9
        if peak:
            row["% peak"] = 100 * nbytes / seconds / peak
    if equal is not None:
        row["equal"] = equal
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def bench_mode_filter(peak: float) -> None:
    import cupy
    import torch
    import torch.nn.functional as F

    import segkit
    from segkit.synthetic import blob_masks

    n, side, classes = 256, 512, 11
    host = np.concatenate([blob_masks(16, side, side, classes, seed=s) for s in range(n // 16)])
    x = cupy.asarray(host)
    out = segkit.mode_filter(x, ties="smallest")
    nbytes = 2 * x.nbytes  # read once, write once
    t = cuda_time(lambda: segkit.mode_filter(x, ties="smallest"))
    ref = segkit.mode_filter(host[:4], ties="smallest", backend="cpp")
    record("mode_filter 256x512x512 u8", "segkit cuda", t, nbytes, peak,
           bool((out[:4].get() == ref).all()))
    xt = torch.as_tensor(x, device="cuda")

    def torch_mode():
        onehot = F.one_hot(xt.long(), classes).permute(0, 3, 1, 2).float()
        counts = F.avg_pool2d(onehot, 3, stride=1, padding=1)
        return counts.argmax(1).to(torch.uint8)

    peer = torch_mode()
    t_peer = cuda_time(torch_mode)
    record("mode_filter 256x512x512 u8", "torch one-hot + avg_pool2d", t_peer, nbytes, peak,
           bool((peer.cpu().numpy() == out.get()).all()), speedup_vs_segkit=t_peer / t)
    tt = torch.as_tensor(x, device="cuda")
    t_torch_in = cuda_time(lambda: segkit.mode_filter(tt, ties="smallest"))
    record("mode_filter 256x512x512 u8", "segkit cuda (torch tensor in)", t_torch_in, nbytes,
           peak)


def bench_convcrf(peak: float) -> None:
    """CUDA ConvCRF against the torch unfold reference on the same GPU: 512x512 and 1024x1024,
    batch 1 and 8, 11 classes, the three benchmark settings. The torch reference runs the seed
    setting (200 iterations) for 20 iterations and its time is scaled by 10. Peak memory: the
    growth of CuPy's memory pool (emptied before) for segkit, torch.cuda.max_memory_allocated
    for the reference, both above the inputs."""
    import cupy
    import torch

    import segkit
    from segkit.reference.convcrf import convcrf_torch
    from segkit.synthetic import crf_scene

    settings = {"default": dict(filter_size=11, blur=4, num_iter=5),
                "k7-blur1": dict(filter_size=7, blur=1, num_iter=5),
                "seed": dict(filter_size=5, blur=1, num_iter=200)}
    pool = cupy.get_default_memory_pool()
    image1, _, logits1 = crf_scene(1, 1024, 1024, 11, seed=0)
    for side in (512, 1024):
        for batch in (1, 8):
            img = np.ascontiguousarray(np.repeat(image1[:, :side, :side], batch, 0))
            lg = np.ascontiguousarray(np.repeat(logits1[:, :, :side, :side], batch, 0))
            u_t = torch.from_numpy(lg).cuda()
            i_t = torch.from_numpy(img.transpose(0, 3, 1, 2).copy()).cuda().float()
            u_c, i_c = cupy.asarray(lg), cupy.asarray(img)
            for name, kw in settings.items():
                section = f"convcrf {side}x{side} x{batch} {name}"
                pool.free_all_blocks()
                before = pool.used_bytes()
                out = segkit.convcrf(u_c, i_c, **kw)
                cupy.cuda.get_current_stream().synchronize()
                mem = (pool.total_bytes() - before) / 2 ** 20
                t = cuda_time(lambda: segkit.convcrf(u_c, i_c, **kw), repeat=5, warmup=1)
                tkw = dict(kw, num_iter=20) if name == "seed" else kw
                scale = kw["num_iter"] / tkw["num_iter"]
                ours = out if name != "seed" else segkit.convcrf(u_c, i_c, **tkw)
                try:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    ref = convcrf_torch(u_t, i_t, **tkw)
                    torch.cuda.synchronize()
                    tmem = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
                    t_ref = cuda_time(lambda: convcrf_torch(u_t, i_t, **tkw), repeat=3,
                                      warmup=0) * scale
                    r = cupy.asarray(ref)
                    err = float(cupy.abs(ours - r).max() / cupy.abs(r).max())
                    same = float((ours.argmax(1) == r.argmax(1)).mean())
                    record(section, "segkit cuda", t, equal=err <= 1e-4, peak_MB=round(mem, 1),
                           rel_err=err, argmax_agree=same, speedup=t_ref / t)
                    record(section, "torch unfold reference" +
                           (" [20 it. x10]" if name == "seed" else ""), t_ref,
                           peak_MB=round(tmem, 1))
                    del ref, r
                except torch.cuda.OutOfMemoryError:
                    record(section, "segkit cuda", t, peak_MB=round(mem, 1))
                    record(section, "torch unfold reference: out of memory", float("nan"))
                del out, ours
                torch.cuda.empty_cache()


SECTIONS = {"mode_filter": bench_mode_filter, "convcrf": bench_convcrf}


def main(argv: list[str]) -> int:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    peak = copy_bandwidth()
    print(f"GPU: {name}; device-to-device copy {peak / 1e9:.0f} GB/s (read + write)")
    chosen = argv or list(SECTIONS)
    failed = []
    for key in chosen:
        t0 = time.time()
        try:
            SECTIONS[key](peak)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other sections
            failed.append(key)
            print(f"SECTION {key} FAILED: {type(exc).__name__}: {exc}", flush=True)
        print(f"[{key}: {time.time() - t0:.1f} s]", flush=True)
    print("\n| section | implementation | ms | GB/s | % peak | equal | peak MB | speedup |"
          "\n|---|---|---:|---:|---:|---|---:|---:|")
    for r in ROWS:
        print(f"| {r['section']} | {r['impl']} | {r['ms']:.3f} | {r.get('GB/s', 0):.0f} | "
              f"{r.get('% peak', 0):.0f} | {r.get('equal', '')} | {r.get('peak_MB', '')} | "
              f"{r.get('speedup', 0):.1f} |")
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "gpu_results.json"), "w") as f:
            json.dump({"gpu": name, "copy_bandwidth": peak, "rows": ROWS}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
