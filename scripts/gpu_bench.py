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


def make_train_data(root: str, n: int, size: int, seed: int = 0) -> None:
    """`n` generated size x size photos-with-blobs and their masks in segkit's dataset layout
    (images/, masks/, masks_resampled/, splits/fold0/train.txt)."""
    from PIL import Image

    from segkit.palette import TRASH_PALETTE
    from segkit.synthetic import blob_masks

    rng = np.random.default_rng(seed)
    masks = blob_masks(n, size, size, 11, seed=seed)
    for sub in ("images", "masks", "masks_resampled", "splits/fold0"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    stems = []
    for i, mask in enumerate(masks):
        stem = f"{i:04d}"
        noise = rng.integers(-25, 25, (size, size, 3))
        img = np.clip(TRASH_PALETTE[mask].astype(int) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(root, "images", stem + ".jpg"), quality=90)
        for sub in ("masks", "masks_resampled"):
            Image.fromarray(mask).save(os.path.join(root, sub, stem + ".png"))
        stems.append(stem)
    with open(os.path.join(root, "splits/fold0/train.txt"), "w") as f:
        f.write("\n".join(stems) + "\n")


def train_speed(config: str, *, amp: bool, iters: int = 20, warmup: int = 5, batch: int = 8,
                n_images: int = 32, image_size: int = 512, workers: int = 8,
                device: str = "cuda") -> dict:
    """Train `warmup + iters` iterations of `config` (random weights, generated data, the
    config's own pipeline and optimizer, no validation or checkpoints) with mmengine's Runner;
    time the last `iters`. Returns iterations/s, seconds per iteration, the share spent waiting
    for data, and peak GPU memory."""
    import tempfile

    import torch
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from segkit.mmseg.runner import load_config

    class Timer(Hook):
        def __init__(self):
            self.t, self.data, self.marks = None, [], []

        def _sync(self):
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self._sync()
            now = time.perf_counter()
            if self.t is not None:
                self.data.append(now - self.t)
            self.marks.append(now)

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self._sync()
            self.t = time.perf_counter()
            self.marks.append(self.t)

    total = warmup + iters
    with tempfile.TemporaryDirectory() as root:
        make_train_data(root, n_images, image_size)
        repeats = -(-total * batch // n_images)
        cfg = load_config(config, data_root=root, fold=0, pretrained="none", amp=amp,
                          work_dir=os.path.join(root, "work"))
        loader = cfg.train_dataloader
        loader.batch_size = batch
        loader.num_workers = workers
        loader.persistent_workers = workers > 0
        loader.dataset = dict(type="RepeatDataset", times=repeats, dataset=loader.dataset)
        cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=total, val_interval=10 ** 9)
        cfg.param_scheduler = [dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0,
                                    end=total)]
        cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
        cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
        cfg.default_hooks.checkpoint = None
        cfg.default_hooks.logger = dict(type="LoggerHook", interval=10 ** 6)
        cfg.log_processor = dict(by_epoch=False)
        cfg.launcher = "none"
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        runner = Runner.from_cfg(cfg)
        timer = Timer()
        runner.register_hook(timer, priority="VERY_LOW")
        runner.train()
    marks = timer.marks  # before/after pairs per iteration
    starts, ends = marks[0::2], marks[1::2]
    timed = ends[-1] - ends[warmup - 1] if warmup else ends[-1] - starts[0]
    waits = sum(timer.data[warmup - 1:]) if warmup else sum(timer.data)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.startswith("cuda") else 0.0
    return {"iters": iters, "s_per_iter": timed / iters, "it_per_s": iters / timed,
            "data_wait_share": waits / timed, "peak_GiB": peak, "batch": batch}


def bench_train(peak: float) -> None:
    try:
        import segkit.mmseg  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("the mmseg stack is missing here: run scripts/fetch_gpu_wheels.sh "
                           "on the development machine first (wheels into .whl/), and carry "
                           f".whl ({exc})") from exc
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "upernet_swin-b_trash.py")
    for amp in (False, True):
        r = train_speed(config, amp=amp)
        record("train UperNet+Swin-B b8 crop512", "AMP fp16" if amp else "fp32",
               r["s_per_iter"], it_per_s=round(r["it_per_s"], 3),
               peak_GiB=round(r["peak_GiB"], 2), data_wait=round(r["data_wait_share"], 3))


def bench_soft_vote(peak: float) -> None:
    """CUDA soft vote of 5 float16 models on device arrays vs torch (float32 weighted add +
    argmax) on the same GPU; equality with the C++ backend on the first image. GB/s counts the
    bytes read (inputs) plus written (labels); the goal is >= 70% of the copy bandwidth."""
def bench_convcrf(peak: float) -> None:
    """CUDA ConvCRF against the torch unfold reference on the same GPU: 512x512 and 1024x1024,
    batch 1 and 8, 11 classes, the three benchmark settings. The torch reference runs the seed
    setting (200 iterations) for 20 iterations and its time is scaled by 10. Peak memory: the
    growth of CuPy's memory pool (emptied before) for segkit, torch.cuda.max_memory_allocated
    for the reference, both above the inputs."""
    import cupy
    import torch

    import segkit
    from segkit.synthetic import model_probs

    weights = [0.3, 0.2, 0.2, 0.15, 0.15]
    for n, side in ((32, 512), (8, 1024)):
        section = f"soft_vote 5 x ({n}, 11, {side}, {side}) f16"
        one = model_probs(5, 11, side, side, seed=0).astype(np.float16)  # (M, C, H, W)
        x = [cupy.ascontiguousarray(cupy.broadcast_to(cupy.asarray(one[m]), (n, *one.shape[1:])))
             for m in range(5)]
        nbytes = sum(a.nbytes for a in x) + n * side * side
        labels = segkit.soft_vote(x, weights)
        ref = segkit.soft_vote(list(one), weights, backend="cpp")
        t = cuda_time(lambda: segkit.soft_vote(x, weights), repeat=10)
        record(section, "segkit cuda", t, nbytes, peak, bool((labels[0].get() == ref).all()))
        t_p = cuda_time(lambda: segkit.soft_vote(x, weights, return_probs=True), repeat=10)
        record(section, "segkit cuda (+ float32 mean)", t_p,
               nbytes + 4 * sum(a.size for a in x) // 5, peak)
        xt = [torch.as_tensor(a, device="cuda") for a in x]
        wt = [float(w) / sum(weights) for w in weights]

        def torch_vote():
            acc = xt[0].float() * wt[0]
            for w, a in zip(wt[1:], xt[1:]):
                acc += a.float() * w
            return acc.argmax(1).to(torch.uint8)

        peer = torch_vote()
        t_t = cuda_time(torch_vote, repeat=10)
        record(section, "torch float32 add + argmax", t_t, nbytes, peak,
               bool((peer.cpu().numpy() == labels.get()).mean() > 0.999),
               speedup_vs_segkit=t_t / t)
        t_in = cuda_time(lambda: segkit.soft_vote(xt, weights), repeat=10)
        record(section, "segkit cuda (torch tensors in)", t_in, nbytes, peak)
        del x, xt, labels, peer
        cupy.get_default_memory_pool().free_all_blocks()


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


def bench_convcrf_grad(peak: float) -> None:
    """Trainable ConvCRF forward + backward on torch CUDA tensors (segkit.torch.conv_crf, the
    CUDA kernels of csrc/cuda/convcrf_grad.cu) against autograd through the unfold reference
    (segkit.reference.convcrf_grad) on the same GPU: batch 2 and 8, 21 classes, 256x256 and
    512x512, (a) k=7 blur 1, (b) k=11 blur 4, 5 iterations; gradients compared (5e-4 of the
    largest); peak memory: torch.cuda.max_memory_allocated above the inputs (segkit's CuPy
    pool growth added)."""
    import cupy
    import torch

    from segkit.reference.convcrf_grad import conv_crf_torch
    from segkit.synthetic import crf_scene
    from segkit.torch import conv_crf

    pool = cupy.get_default_memory_pool()
    for batch, side in ((2, 256), (8, 512)):
        image, _, logits = crf_scene(batch, side, side, 21, seed=0)
        u0 = torch.from_numpy(logits).cuda()
        img = torch.from_numpy(image.transpose(0, 3, 1, 2).copy()).cuda().float()
        g = torch.randn_like(u0)
        for name, kw in (("k7-blur1", dict(filter_size=7, blur=1, num_iter=5)),
                         ("k11-blur4", dict(filter_size=11, blur=4, num_iter=5))):
            section = f"convcrf_grad {batch} x 21 x {side}x{side} {name}"

            def run(fused):
                u = u0.clone().requires_grad_(True)
                w = torch.full((21,), 0.2, device="cuda", requires_grad=True)
                s = [torch.tensor(v, device="cuda", requires_grad=True)
                     for v in (3.0, 10.0, 1 / 3, 1 / 13)]
                if fused:
                    out = conv_crf(u, img, weight=w, pos_compat=s[0], col_compat=s[1],
                                   pos_sdims=1 / s[2], col_schan=1 / s[3], **kw)
                else:
                    out = conv_crf_torch(u, img, weight=w, pos_compat=s[0], col_compat=s[1],
                                         pos_inv=s[2], col_inv=s[3], **kw)
                (out * g).sum().backward()
                return [u.grad, w.grad] + [x.grad for x in s]

            mems, times, grads = {}, {}, {}
            for fused in (True, False):
                try:
                    pool.free_all_blocks()
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    base, pbase = torch.cuda.memory_allocated(), pool.total_bytes()
                    grads[fused] = run(fused)
                    torch.cuda.synchronize()
                    mems[fused] = (torch.cuda.max_memory_allocated() - base
                                   + pool.total_bytes() - pbase) / 2 ** 20
                    times[fused] = cuda_time(lambda: run(fused), repeat=3, warmup=1)
                except torch.cuda.OutOfMemoryError:
                    record(section, "unfold autograd: out of memory", float("nan"))
            if False in grads:
                err = max(float((a - b).abs().max() / b.abs().max())
                          for a, b in zip(grads[True], grads[False]))
                record(section, "segkit conv_crf (cuda)", times[True], equal=err <= 5e-4,
                       rel_err=err, peak_MB=round(mems[True], 1),
                       speedup=times[False] / times[True], memory_ratio=mems[False] / mems[True])
                record(section, "unfold autograd (torch)", times[False],
                       peak_MB=round(mems[False], 1))
            else:
                record(section, "segkit conv_crf (cuda)", times[True],
                       peak_MB=round(mems[True], 1))
            torch.cuda.empty_cache()


SECTIONS = {"mode_filter": bench_mode_filter, "soft_vote": bench_soft_vote,
            "convcrf": bench_convcrf, "convcrf_grad": bench_convcrf_grad, "train": bench_train}


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
