"""`segkit.resample` / `segkit resample`: equality with mode_filter per file, resumption after
an interrupted run (in-process crash and a killed subprocess), reports, bad inputs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import segkit
from segkit.jobs.engine import JobError
from segkit.cli import main
from segkit.io import masks as masks_io
from segkit.io.coco import CocoIndex
from segkit.io.masks import read_mask
from segkit.jobs import DatasetError
from segkit.jobs.resample import list_masks
from segkit.palette import palette_for
from segkit.reference.coco import pycocotools_coco, rasterize_reference
from segkit.synthetic import blob_masks

from ._jobs_data import coco_dataset, noisy_mask_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("masks")
    return root, noisy_mask_folder(root)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return coco_dataset(tmp_path_factory.mktemp("coco"), n_images=6)


def _stat(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def _tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


SETTINGS = [
    dict(),
    dict(size=5, anchor="topleft", ties="first", ignore_index=None),
    dict(ties="smallest", ignore_index=255),
    dict(ignore_index="none"),
]


def _auto(before, kwargs):
    """The mode_filter arguments of a resample call: ignore_index "auto" (the default) is 255
    in a mask that holds it, None in the others; "none" is None."""
    kw = dict(kwargs)
    ignore = kw.get("ignore_index", "auto")
    if ignore == "auto":
        kw["ignore_index"] = 255 if (before == 255).any() else None
    elif ignore == "none":
        kw["ignore_index"] = None
    return kw


@pytest.mark.parametrize("kwargs", SETTINGS, ids=["default", "seed-recipe", "ignore255",
                                                  "ignore-none"])
def test_folder_equals_mode_filter_per_file(folder, tmp_path, kwargs):
    src, files = folder
    dst = tmp_path / "out"
    report = segkit.resample(src, dst, workers=2, progress=False, log=None, **kwargs)
    assert sorted(files) == [p for p in _tree(dst) if p.endswith(".png")]
    left = np.zeros(65536, np.int64)
    for rel, before in files.items():
        expected = segkit.mode_filter(before, **_auto(before, kwargs))
        got, pal = read_mask(dst / rel, with_palette=True)
        np.testing.assert_array_equal(got, expected, err_msg=rel)
        _, src_pal = read_mask(src / rel, with_palette=True)
        assert (pal is None) == (src_pal is None)
        if pal is not None:
            np.testing.assert_array_equal(pal, src_pal)
        diff = before != expected
        left += np.bincount(before[diff].astype(np.int64), minlength=65536)
    assert report["files"] == len(files)
    assert report["status_counts"] == {"written": len(files)}
    assert report["changed"] == int(left.sum()) > 0
    assert {r["label"]: r["left"] for r in report["changed_per_class"]} == \
        {k: int(v) for k, v in enumerate(left) if v}
    assert report["pixels"] == sum(m.size for m in files.values())
    on_disk = json.loads((dst / "resample_report.json").read_text())
    assert on_disk["changed"] == report["changed"] and on_disk["params"]["backend"] == "cpp"
    assert set(report["phase_share"]) == {"read", "kernel", "write"}


def test_coco_source_equals_mode_filter_of_reference_masks(dataset, tmp_path):
    report = segkit.resample(dataset.ann_file, tmp_path / "o", flatten=True, workers=2,
                             progress=False, log=None)
    coco = pycocotools_coco(dataset.ann_file)
    table = CocoIndex.open(dataset.ann_file).table
    for img in coco.dataset["images"]:
        ref = rasterize_reference(coco, img["id"], dict(table.category_to_label))
        stem = img["file_name"][:-4].replace("/", "+")
        got, pal = read_mask(tmp_path / "o" / f"{stem}.png", with_palette=True)
        np.testing.assert_array_equal(got, segkit.mode_filter(ref))
        np.testing.assert_array_equal(pal, palette_for(256))
    assert report["files"] == len(coco.dataset["images"])
    assert json.loads((tmp_path / "o" / "labels.json").read_text())["classes"][10] == "Clothing"
    # a folder written by coco_to_masks gives the same result
    segkit.coco_to_masks(dataset.ann_file, tmp_path / "m", flatten=True, workers=1,
                         progress=False, log=None)
    r2 = segkit.resample(tmp_path / "m", tmp_path / "o2", workers=1, progress=False, log=None)
    for p in (tmp_path / "o").glob("*.png"):
        np.testing.assert_array_equal(read_mask(p), read_mask(tmp_path / "o2" / p.name))
    assert r2["changed_per_class"] == report["changed_per_class"]
    assert report["changed_per_class"][0]["class"] == "Background"


def test_one_and_two_workers_agree_and_backends_agree(folder, tmp_path):
    src, _ = folder
    segkit.resample(src, tmp_path / "a", workers=1, progress=False, log=None)
    segkit.resample(src, tmp_path / "b", workers=2, backend="numba", progress=False, log=None)
    for rel in list_masks(src):
        np.testing.assert_array_equal(read_mask(tmp_path / "a" / rel),
                                      read_mask(tmp_path / "b" / rel))


# ----------------------------------------------------------------------------- resumption

class Crash(RuntimeError):
    pass


def test_resume_after_crash_mid_write(folder, tmp_path, monkeypatch):
    """The writer dies while writing the 4th file (a temporary file stays behind); the rerun
    gives identical outputs and does not touch the 3 finished files."""
    src, files = folder
    dst = tmp_path / "out"
    real_write = masks_io.write_mask
    calls = []

    def dying_write(path, mask, palette=None):
        calls.append(path)
        if len(calls) == 4:
            with masks_io.atomic_path(path) as tmp:
                tmp.write_bytes(b"\x89PNG half")
                os.link(tmp, tmp.with_name(tmp.name + ".keep"))  # survives the cleanup
                raise Crash("killed mid-write")
        return real_write(path, mask, palette)

    monkeypatch.setattr(masks_io, "write_mask", dying_write)
    # not an input error: the crash comes back as the failed item's JobError, its type kept
    with pytest.raises(JobError, match="Crash: killed mid-write") as info:
        segkit.resample(src, dst, workers=1, progress=False, log=None)
    assert isinstance(info.value.exception, Crash)
    monkeypatch.setattr(masks_io, "write_mask", real_write)
    leftover = [p for p in dst.rglob(".*") if p.is_file()]
    assert len(leftover) == 1  # the half-written temporary file
    finished = {p: _stat(p) for p in dst.rglob("*.png") if not p.name.startswith(".")}
    assert len(finished) == 3

    report = segkit.resample(src, dst, workers=2, progress=False, log=None)
    assert report["status_counts"] == {"skipped": 3, "written": len(files) - 3}
    assert report["temporaries_removed"] == 1
    assert not [p for p in dst.rglob(".*") if p.is_file()]
    for p, st in finished.items():
        assert _stat(p) == st, f"{p} was rewritten"
    reference = tmp_path / "ref"
    segkit.resample(src, reference, workers=1, progress=False, log=None)
    for rel in files:
        assert (dst / rel).read_bytes() == (reference / rel).read_bytes(), rel
    # a third run skips everything and reports the same changes
    again = segkit.resample(src, dst, workers=1, progress=False, log=None)
    assert again["status_counts"] == {"skipped": len(files)}
    assert again["changed_per_class"] == report["changed_per_class"]


_SLOW_RUN = """
import sys, time
import segkit.io.masks as m
real = m.write_mask
def slow(*a, **k):
    time.sleep(0.15)
    return real(*a, **k)
m.write_mask = slow
from segkit.cli import main
sys.argv = ["segkit", "resample", sys.argv[1], sys.argv[2], "--workers", "1", "--no-progress"]
main()
"""


def test_resume_after_killed_process(tmp_path):
    """SIGKILL a real `segkit resample` process mid-run; the rerun completes the job with
    identical outputs and leaves the files finished before the kill untouched."""
    src = tmp_path / "src"
    files = {}
    for i in range(30):
        m = blob_masks(1, 24, 24, 5, noise=0.2, seed=i)[0]
        masks_io.write_mask(src / f"{i:02d}.png", m)
        files[f"{i:02d}.png"] = m
    dst = tmp_path / "dst"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_RUN, str(src), str(dst)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = list(dst.glob("[0-9]*.png")) if dst.exists() else []
        if len(done) >= 5 or proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    finished = {p.name: _stat(p) for p in dst.glob("[0-9]*.png")}
    assert 5 <= len(finished) < len(files), "the kill should land mid-run"

    report = segkit.resample(src, dst, workers=2, progress=False, log=None)
    assert report["status_counts"]["skipped"] == len(finished)
    assert report["status_counts"]["written"] == len(files) - len(finished)
    for name, st in finished.items():
        assert _stat(dst / name) == st
    for name, m in files.items():
        np.testing.assert_array_equal(read_mask(dst / name), segkit.mode_filter(m))
    assert not [p for p in dst.iterdir() if p.name.startswith(".")]


def test_resume_rewrites_outputs_of_other_settings(folder, tmp_path):
    src, files = folder
    segkit.resample(src, tmp_path / "o", size=5, workers=1, progress=False, log=None)
    report = segkit.resample(src, tmp_path / "o", size=3, workers=1, progress=False, log=None)
    changed = report["status_counts"].get("replaced", 0)
    assert changed >= 1 and changed + report["status_counts"].get("skipped", 0) == len(files)
    for rel, m in files.items():
        np.testing.assert_array_equal(read_mask(tmp_path / "o" / rel),
                                      segkit.mode_filter(m, **_auto(m, {})))
    no = segkit.resample(src, tmp_path / "o", resume=False, workers=1, progress=False,
                         log=None)
    assert no["status_counts"] == {"written": len(files)}


# ----------------------------------------------------------------------------- bad input

def _bad_folder(tmp_path, kind):
    src = tmp_path / "src"
    for i in range(3):
        masks_io.write_mask(src / f"{i}.png", np.full((6, 7), i, np.uint8))
    bad = src / "zz_bad.png"
    if kind == "rgb":
        Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(bad)
    elif kind == "junk":
        bad.write_bytes(b"not a png at all")
    elif kind == "jpeg-named-png":
        Image.fromarray(np.zeros((6, 7), np.uint8)).save(bad, format="JPEG")
    elif kind == "jpg":
        bad = src / "zz_bad.jpg"
        Image.fromarray(np.zeros((6, 7), np.uint8)).save(bad)
    return src, bad


BAD_FILES = [
    ("rgb", "mode RGB is not a label mask"),
    ("junk", "cannot read as an image"),
    ("jpeg-named-png", "not a PNG file"),
    ("jpg", "not a PNG mask"),
]


@pytest.mark.parametrize("kind, message", BAD_FILES, ids=[k for k, _ in BAD_FILES])
def test_bad_file_is_named_and_finished_files_stay(tmp_path, kind, message):
    src, bad = _bad_folder(tmp_path, kind)
    dst = tmp_path / "dst"
    with pytest.raises(DatasetError, match=f"{bad.name}: .*{message}") as info:
        segkit.resample(src, dst, workers=1, progress=False, log=None)
    assert str(bad) in str(info.value)
    if kind != "jpg":  # the listing refuses .jpg files before anything runs
        finished = {p.name: _stat(p) for p in dst.glob("*.png")}
        assert sorted(finished) == ["0.png", "1.png", "2.png"]
        bad.unlink()
        report = segkit.resample(src, dst, workers=1, progress=False, log=None)
        assert report["status_counts"] == {"skipped": 3}
        assert {n: _stat(dst / n) for n in finished} == finished
    res = CliRunner().invoke(main, ["resample", str(src), str(tmp_path / "cli"),
                                    "--workers", "1", "--no-progress"])
    if kind == "jpg" or bad.exists():
        assert res.exit_code == 1 and res.stderr.startswith("error: ")
        assert bad.name in res.stderr and "Traceback" not in res.output


def test_size_disagreeing_with_coco_record(dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(dataset.root, root)
    victim = root / dataset.images[2]
    Image.new("RGB", (9, 9)).save(victim)
    with pytest.raises(DatasetError, match=rf"{victim}: image is 9x9 .* says"):
        segkit.resample(root / "annotations.json", tmp_path / "o", workers=2, progress=False,
                        log=None)
    res = CliRunner().invoke(main, ["resample", str(root / "annotations.json"),
                                    str(tmp_path / "o"), "--workers", "1"])
    assert res.exit_code == 1 and "image is 9x9" in res.stderr


def test_bad_paths_and_arguments(folder, tmp_path):
    src, _ = folder
    cases = [
        ((tmp_path / "nope", tmp_path / "o"), {}, DatasetError, "nope: SRC does not exist"),
        ((src, src / "sub"), {}, DatasetError, "DST must not be SRC or inside it"),
        ((src, src), {}, DatasetError, "DST must not be SRC or inside it"),
        ((src, src / "a" / "000.png"), {}, DatasetError, "DST exists and is not a folder"),
        ((tmp_path / "empty", tmp_path / "o"), {}, DatasetError, "no PNG masks found"),
        ((tmp_path / "notes.txt", tmp_path / "o"), {}, DatasetError,
         "must be a folder of PNG masks or a COCO annotation file"),
        ((src, tmp_path / "o"), {"size": 4}, ValueError, "size must be odd; got 4"),
        ((src, tmp_path / "o"), {"ties": "max"}, ValueError, "ties must be one of"),
        ((src, tmp_path / "o"), {"engine": "spark"}, ValueError, "engine must be one of"),
        ((src, tmp_path / "o"), {"workers": 0}, ValueError, "workers must be a positive"),
        ((src, tmp_path / "o"), {"backend": "cuda"}, segkit.BackendUnavailableError,
         "backend='cuda' is not available"),
    ]
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    for (s, d), kwargs, exc, message in cases:
        if kwargs.get("backend") == "cuda" and segkit.backends()["cuda"].available:
            continue
        with pytest.raises(exc, match=message):
            segkit.resample(s, d, progress=False, log=None, **kwargs)
    assert not (tmp_path / "o").exists()  # nothing was started
    runner = CliRunner()
    for args, message in [([str(tmp_path / "nope"), str(tmp_path / "o")], "SRC does not exist"),
                          ([str(src), str(src / "x")], "inside it"),
                          ([str(src), str(tmp_path / "o"), "--size", "2"], "size must be odd")]:
        res = runner.invoke(main, ["resample", *args])
        assert res.exit_code == 1, res.output
        assert res.stderr == f"error: {res.stderr[7:]}" and message in res.stderr
    res = runner.invoke(main, ["resample", str(src), str(tmp_path / "o"), "--ties", "max"])
    assert res.exit_code == 2  # click's usage error


def test_cli_resample_prints_report(folder, tmp_path):
    src, files = folder
    res = CliRunner().invoke(main, ["resample", str(src), str(tmp_path / "o"), "--workers", "2",
                                    "--anchor", "topleft", "--ties", "first", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"resample: {len(files)} files ({len(files)} written" in res.output
    assert "time per phase" in res.output and "resample_report.json" in res.output
    for rel, m in files.items():
        np.testing.assert_array_equal(read_mask(tmp_path / "o" / rel),
                                      segkit.mode_filter(m, **_auto(m, dict(
                                          anchor="topleft", ties="first"))))
    assert "ignore value: 255 (auto: held by" in res.output
    res = CliRunner().invoke(main, ["resample", "--help"])
    assert "Examples:" in res.output and "RAY_ADDRESS" in res.output


def test_memory_stays_flat_as_the_dataset_grows(tmp_path):
    """Peak Python/NumPy memory of a run (in-process, workers=1) does not grow with the number
    of files: one mask at a time, streaming totals. Holding the masks would add 64 KiB per
    file (7.5 MiB for the 120 files of the larger run)."""
    import tracemalloc

    m = blob_masks(1, 256, 256, 11, noise=0.05, seed=0)[0]
    for n in (30, 120):
        for i in range(n):
            masks_io.write_mask(tmp_path / f"s{n}" / f"{i:04d}.png", m)
    peaks = {}
    for n in (30, 120):
        segkit.resample(tmp_path / "s30", tmp_path / "warm", workers=1, progress=False,
                        log=None)  # imports and caches outside the measurement
        tracemalloc.start()
        segkit.resample(tmp_path / f"s{n}", tmp_path / f"d{n}", workers=1, progress=False,
                        log=None)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[120] < peaks[30] + 1024 * 1024, peaks


def test_settings_are_checked_without_running_the_filter(folder, tmp_path, monkeypatch):
    """resample checks size/anchor/ties/ignore_index with mode_params, before any file and
    without a probe run of the filter."""
    from segkit.jobs import resample as job

    calls = []
    monkeypatch.setattr(job, "mode_filter", lambda *a, **k: calls.append(a))
    src, _ = folder
    for kwargs, exc, message in [({"size": 4}, ValueError, "size must be odd; got 4"),
                                 ({"anchor": "corner"}, ValueError, "anchor must be one of"),
                                 ({"ignore_index": 2.5}, TypeError, "ignore_index must be an"),
                                 ({"size": True}, TypeError, "size must be an integer")]:
        with pytest.raises(exc, match=message):
            segkit.resample(src, tmp_path / "o", progress=False, log=None, **kwargs)
    assert calls == [] and not (tmp_path / "o").exists()


# ---- issue 27: the ignore value (255 where the masks hold it, unless told otherwise) ----------
def test_void_pixels_keep_their_label_by_default(folder, tmp_path):
    """Without --ignore-index, 255 (void) neither votes nor changes in masks that hold it; the
    report and the printed lines say which value was used; --ignore-index none lets it vote."""
    src, files = folder
    held = [rel for rel, m in files.items() if m.dtype == np.uint8 and (m == 255).any()]
    assert held and len(held) < len(files)  # masks with 255 and (16-bit) masks without
    lines = []
    report = segkit.resample(src, tmp_path / "auto", workers=1, progress=False,
                             log=lines.append)
    for rel in held:
        before, after = files[rel], read_mask(tmp_path / "auto" / rel)
        assert (after[before == 255] == 255).all(), rel
        assert not ((after == 255) & (before != 255)).any(), rel
    assert report["ignore_index"] == {"setting": "auto", "value": 255, "masks": len(held)}
    assert any(f"ignore value: 255 (auto: held by {len(held)} of {len(files)} masks" in line
               for line in lines), lines
    voted = segkit.resample(src, tmp_path / "none", ignore_index="none", workers=1,
                            progress=False, log=None)
    assert voted["ignore_index"] == {"setting": None, "value": None}
    assert voted["changed"] > report["changed"]
    result = CliRunner().invoke(main, ["resample", str(src), str(tmp_path / "cli"),
                                       "--ignore-index", "none", "--workers", "1"])
    assert result.exit_code == 0 and "ignore value: none (every value votes)" in result.output
    bad = CliRunner().invoke(main, ["resample", str(src), str(tmp_path / "bad"),
                                    "--ignore-index", "void"])
    assert bad.exit_code == 2 and "'auto' or 'none'; got 'void'" in bad.output


def test_auto_ignore_without_255_is_the_plain_filter(tmp_path):
    """Masks that hold no 255 (as the original recipe's): "auto" filters exactly as None, and
    the report says none was used."""
    rng = np.random.default_rng(3)
    src = tmp_path / "m"
    src.mkdir()
    masks = {f"{k}.png": rng.integers(0, 11, (40, 52)).astype(np.uint8) for k in range(3)}
    for name, m in masks.items():
        masks_io.write_mask(src / name, m)
    lines = []
    report = segkit.resample(src, tmp_path / "o", size=5, anchor="topleft", ties="first",
                             workers=1, progress=False, log=lines.append)
    for name, m in masks.items():
        np.testing.assert_array_equal(read_mask(tmp_path / "o" / name),
                                      segkit.mode_filter(m, 5, anchor="topleft", ties="first"))
    assert report["ignore_index"] == {"setting": "auto", "value": None, "masks": 0}
    assert any("ignore value: none (auto: no mask holds 255" in line for line in lines)
