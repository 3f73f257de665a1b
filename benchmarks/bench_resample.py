"""segkit.resample over 200 generated 512x512 PNG masks (11 classes, smooth blobs with 5% label
noise, palette PNGs): the job with 1 and 2 worker processes, where the time goes (PNG decode,
kernel, PNG encode, timed per file in one process), and the original recipe's loop as the
baseline (timed on one mask and projected to the 200).

The machine's load average is recorded with every entry (extra_info["load"]): on a shared
2-core machine the 2-worker speed-up is only meaningful when the load was low.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import segkit
from segkit.io.masks import read_mask, write_mask
from segkit.palette import palette_for
from segkit.reference.mode_filter import seed_mode_filter
from segkit.synthetic import blob_masks

N_MASKS = 200
SIDE = 512
GROUP = f"resample {N_MASKS} masks {SIDE}x{SIDE}"
SUMMARY: dict = {}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_resample")
    src = root / "masks"
    pal = palette_for(256)
    for i in range(0, N_MASKS, 20):  # generate in chunks: flat memory
        for j, m in enumerate(blob_masks(20, SIDE, SIDE, 11, noise=0.05, seed=i)):
            write_mask(src / f"batch_{(i + j) % 4:02d}" / f"{i + j:04d}.png", m, pal)
    yield root, src
    shutil.rmtree(root, ignore_errors=True)


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _job(benchmark, root, src, workers):
    dst = root / f"out{workers}"
    reports = []

    def clear():
        shutil.rmtree(dst, ignore_errors=True)

    def run():
        reports.append(segkit.resample(src, dst, workers=workers, resume=False,
                                       progress=False, log=None))

    benchmark.group = GROUP
    benchmark.extra_info["pixels"] = N_MASKS * SIDE * SIDE
    benchmark.extra_info["impl"] = f"segkit.resample, {workers} worker{'s' * (workers > 1)}"
    benchmark.extra_info["load_before"] = _load()
    benchmark.pedantic(run, setup=clear, rounds=3, iterations=1, warmup_rounds=0)
    benchmark.extra_info["load_after"] = _load()
    benchmark.extra_info["phase_share"] = reports[-1]["phase_share"]
    SUMMARY[f"job_{workers}"] = benchmark.stats.stats.median
    SUMMARY[f"load_{workers}"] = (benchmark.extra_info["load_before"],
                                  benchmark.extra_info["load_after"])
    return reports[-1]


def test_resample_1_worker(benchmark, dataset):
    root, src = dataset
    report = _job(benchmark, root, src, 1)
    assert report["files"] == N_MASKS and report["changed"] > 0


def test_resample_2_workers(benchmark, dataset):
    root, src = dataset
    report = _job(benchmark, root, src, 2)
    assert report["files"] == N_MASKS
    one = root / "out1"
    if one.exists():  # same outputs whatever the number of workers
        for p in list(sorted((root / "out2").rglob("*.png")))[:20]:
            assert p.read_bytes() == (one / p.relative_to(root / "out2")).read_bytes()


def test_phases_single_process(benchmark, dataset):
    """Decode, kernel and encode timed separately for every file, in this process with one
    kernel thread (as in a worker)."""
    root, src = dataset
    files = sorted(src.rglob("*.png"))
    dst = root / "phases"
    totals = {"decode": 0.0, "kernel": 0.0, "encode": 0.0}

    def run():
        for k in totals:
            totals[k] = 0.0
        for p in files:
            t0 = time.perf_counter()
            labels, pal = read_mask(p, with_palette=True)
            t1 = time.perf_counter()
            out = segkit.mode_filter(labels)
            t2 = time.perf_counter()
            write_mask(dst / p.name, out, pal)
            t3 = time.perf_counter()
            totals["decode"] += t1 - t0
            totals["kernel"] += t2 - t1
            totals["encode"] += t3 - t2

    segkit.set_num_threads(1)
    try:
        benchmark.group = GROUP
        benchmark.extra_info["pixels"] = N_MASKS * SIDE * SIDE
        benchmark.extra_info["impl"] = "per-file loop in one process (phases timed)"
        benchmark.extra_info["load_before"] = _load()
        benchmark.pedantic(run, rounds=2, iterations=1)
        benchmark.extra_info["load_after"] = _load()
    finally:
        segkit.set_num_threads(0)
    busy = sum(totals.values())
    share = {k: v / busy for k, v in totals.items()}
    benchmark.extra_info["phase_share"] = share
    benchmark.extra_info["per_file_ms"] = {k: 1e3 * v / len(files) for k, v in totals.items()}
    SUMMARY["phases"] = {"share": share, "per_file_ms": benchmark.extra_info["per_file_ms"]}


def test_seed_loop_one_mask(benchmark, dataset):
    """The original recipe's per-window Counter loop on one 512x512 mask (the job of 200 is
    projected from it)."""
    _, src = dataset
    mask = read_mask(sorted(src.rglob("*.png"))[0])
    benchmark.group = f"resample per mask {SIDE}x{SIDE} (kernel only)"
    benchmark.extra_info["pixels"] = SIDE * SIDE
    benchmark.extra_info["impl"] = "original recipe loop (Counter per window)"
    benchmark.extra_info["load_before"] = _load()
    out = benchmark.pedantic(seed_mode_filter, args=(mask,), rounds=2, iterations=1)
    benchmark.extra_info["load_after"] = _load()
    np.testing.assert_array_equal(out, segkit.mode_filter(mask, anchor="topleft", ties="first"))
    SUMMARY["seed_per_mask"] = benchmark.stats.stats.median


def test_segkit_kernel_one_mask(benchmark, dataset):
    _, src = dataset
    mask = read_mask(sorted(src.rglob("*.png"))[0])
    benchmark.group = f"resample per mask {SIDE}x{SIDE} (kernel only)"
    benchmark.extra_info["pixels"] = SIDE * SIDE
    benchmark.extra_info["impl"] = "segkit cpp, 1 thread (topleft, first)"
    segkit.set_num_threads(1)
    try:
        benchmark(lambda: segkit.mode_filter(mask, anchor="topleft", ties="first"))
    finally:
        segkit.set_num_threads(0)


def teardown_module(module):
    """Print (and save next to the JSON results) the figures RESULTS.md quotes."""
    s = SUMMARY
    if not {"job_1", "job_2"} <= s.keys():
        return
    lines = [f"resample of {N_MASKS} masks {SIDE}x{SIDE}: 1 worker {s['job_1']:.2f} s, "
             f"2 workers {s['job_2']:.2f} s, speed-up {s['job_1'] / s['job_2']:.2f}x "
             f"(load average before/after: 1 worker {s['load_1']}, 2 workers {s['load_2']})"]
    if "phases" in s:
        sh = s["phases"]["share"]
        ms = s["phases"]["per_file_ms"]
        lines.append("per file in one process: " + ", ".join(
            f"{k} {ms[k]:.2f} ms ({100 * sh[k]:.1f}%)" for k in ("decode", "kernel", "encode")))
        kernel_job = ms["kernel"] * N_MASKS / 1e3
        lines.append(f"kernel share of the 1-worker job time: {100 * kernel_job / s['job_1']:.1f}%"
                     f"; of the 2-worker job's CPU time (2 x wall): "
                     f"{100 * kernel_job / (2 * s['job_2']):.1f}%")
    if "seed_per_mask" in s and "phases" in s:
        io = (s["phases"]["per_file_ms"]["decode"] + s["phases"]["per_file_ms"]["encode"]) / 1e3
        projected = N_MASKS * (s["seed_per_mask"] + io)
        lines.append(f"original loop: {s['seed_per_mask']:.2f} s per mask -> projected "
                     f"{projected:.0f} s for {N_MASKS} masks (with the same PNG I/O), "
                     f"{projected / s['job_1']:.0f}x the 1-worker job, "
                     f"{projected / s['job_2']:.0f}x the 2-worker job")
    text = "\n".join(lines)
    print("\n" + text)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "resample_summary.json").write_text(json.dumps({**s, "text": text}, indent=1,
                                                          default=str))
