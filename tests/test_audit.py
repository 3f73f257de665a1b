"""segkit.audit / `segkit audit`: the streamed job equals the in-memory op (and cleanlab) on
stores of mixed image sizes, ranks known noise, writes its report; the page in Chromium."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import segkit
from segkit.cli import main
from segkit.io.masks import read_mask
from segkit.io.store import ConfidenceStore
from segkit.reference import label_issues as ref
from ._synthetic import audit_dataset
from .conftest import chromium_path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit_data")
    return audit_dataset(root, 9)


def _stems(store):
    return sorted(ConfidenceStore(store).stems())


def _gt_path(gt: Path, stem: str) -> Path:
    return gt / (stem.replace("+", "/") + ".png")


def _rows(out):
    with open(Path(out) / "audit.csv") as f:
        return list(csv.DictReader(f))


def test_job_equals_op_and_cleanlab_on_mixed_sizes(data, tmp_path):
    gt, _, images, store = data
    report = segkit.audit([store], gt, tmp_path / "out", images=images, top=3, workers=1,
                          progress=False)
    stems = _stems(store)
    st = ConfidenceStore(store)
    sizes = {st.shape(s)[1:] for s in stems}
    assert len(sizes) > 1  # mixed sizes
    labels = np.concatenate([read_mask(_gt_path(gt, s)).ravel() for s in stems])
    probs = np.concatenate([np.asarray(st.read(s), np.float32).reshape(len(st.classes), -1)
                            for s in stems], axis=1)
    flagged = np.concatenate([read_mask(tmp_path / "out" / "issues" / f"{s}.png").ravel() > 0
                              for s in stems])
    # the dataset as one long image: the same per-pixel rule and global ranking
    expected = ref.label_issues(labels[None, None], probs[None, :, None])[0, 0]
    np.testing.assert_array_equal(flagged, expected)
    assert report.issues == int(expected.sum())
    find = pytest.importorskip("cleanlab.segmentation.filter").find_label_issues
    theirs = find(labels[None, None].astype(np.int64), probs[None, :, None], verbose=False,
                  n_jobs=1)[0, 0]
    scores = probs[labels, np.arange(labels.size)]
    cut = np.sort(scores)[report.estimated - 1]
    # float16 stores make many equal scores: differences only among pixels tied at the cutoff
    assert not ((flagged != theirs) & (scores != cut)).any()
    rows = _rows(tmp_path / "out")
    quality = [float(r["quality"]) for r in rows]
    assert quality == sorted(quality) and len(rows) == len(stems)
    for r in rows:
        img, _ = segkit.label_quality(read_mask(_gt_path(gt, r["stem"])),
                                      np.asarray(st.read(r["stem"]), np.float32))
        assert abs(img - float(r["quality"])) < 1e-5
        assert int(r["issue_pixels"]) == int(
            (read_mask(tmp_path / "out" / "issues" / f"{r['stem']}.png") > 0).sum())


def test_known_noise_is_found(data, tmp_path):
    gt, clean, _, store = data
    segkit.audit([store], gt, tmp_path / "out", top=0, workers=1, progress=False)
    rows = _rows(tmp_path / "out")
    wrong_frac, quality = [], []
    tp = fp = fn = 0
    for r in rows:
        g = read_mask(_gt_path(gt, r["stem"]))
        c = read_mask(_gt_path(clean, r["stem"]))
        f = read_mask(tmp_path / "out" / "issues" / f"{r['stem']}.png") > 0
        wrong = g != c
        wrong_frac.append(wrong.mean())
        quality.append(float(r["quality"]))
        tp += int((f & wrong).sum())
        fp += int((f & ~wrong).sum())
        fn += int((~f & wrong).sum())
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    rho = np.corrcoef(rank(wrong_frac), rank(quality))[0, 1]
    assert rho < -0.6, rho  # noisier masks score lower
    print("rho", rho, "precision", tp / (tp + fp), "recall", tp / (tp + fn))
    assert tp / (tp + fp) > 0.6 and tp / (tp + fn) > 0.3, (tp, fp, fn)


def test_two_stores_are_averaged_and_fix(data, tmp_path):
    gt, _, _, store = data
    other = ConfidenceStore.create(tmp_path / "other", ConfidenceStore(store).classes)
    rng = np.random.default_rng(0)
    for s in _stems(store):
        p = np.asarray(ConfidenceStore(store).read(s), np.float32)
        q = p * rng.uniform(0.5, 1.5, p.shape).astype(np.float32)
        other.write(s, (q / q.sum(0)).astype(np.float16))
    report = segkit.audit([store, other.root], gt, tmp_path / "out", fix=tmp_path / "fixed",
                          top=2, workers=2, progress=False)
    stem = report.rows[0]["stem"]
    probs = [ConfidenceStore(store).read(stem), other.read(stem)]
    _, mean = segkit.soft_vote(probs, return_probs=True)
    img, _ = segkit.label_quality(read_mask(_gt_path(gt, stem)), mean)
    assert abs(img - report.rows[0]["quality"]) < 1e-9
    fixed = read_mask(_gt_path(tmp_path / "fixed", stem))
    g = read_mask(_gt_path(gt, stem))
    issues = read_mask(tmp_path / "out" / "issues" / f"{stem}.png") > 0
    changed = fixed != g
    assert changed.any() and not (changed & ~issues).any()
    assert (fixed[changed] == np.asarray(mean).argmax(0)[changed]).all()
    assert report.fixed == sum(int((read_mask(_gt_path(tmp_path / "fixed", s))
                                    != read_mask(_gt_path(gt, s))).sum()) for s in _stems(store))


def test_cli_writes_report(data, tmp_path):
    gt, _, images, store = data
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["audit", str(store), "--gt", str(gt), "--out", str(out),
                                       "--images", str(images), "--top", "2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "audit: 9 images" in result.output
    page = (out / "index.html").read_text()
    rows = _rows(out)
    for r in rows[:2]:
        assert f"pictures/{r['stem']}.png" in page and (out / "pictures" / f"{r['stem']}.png").is_file()
    assert f"pictures/{rows[2]['stem']}.png" not in page
    assert "<table class='sortable'>" in page and "http" not in page  # self-contained
    assert set(rows[0]) >= {"stem", "quality", "issue_pixels", "issue_fraction", "mode_changes"}
    assert not (out / ".cache").exists()


def test_model_free_signals(tmp_path):
    classes = ["a", "b", "c"]
    store = ConfidenceStore.create(tmp_path / "s", classes)
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    mask[0, 0] = 7      # outside the class list
    mask[10, 10] = 2    # a one-pixel hole / island
    mask[19, 19] = 255  # ignored
    (tmp_path / "gt").mkdir()
    segkit.io.masks.write_mask(tmp_path / "gt" / "x.png", mask)
    p = np.full((3, 20, 20), 0.1, np.float32)
    p[0] = 0.8
    store.write("x", p.astype(np.float16))
    report = segkit.audit([store.root], tmp_path / "gt", tmp_path / "out", workers=1,
                          progress=False, min_region=4)
    r = report.rows[0]
    assert r["outside_classes"] == 1 and r["ignored"] == 2
    assert r["mode_changes"] == int((segkit.mode_filter(mask, 3, ignore_index=255) != mask).sum())
    assert r["small_region_pixels"] == 2  # the 7 and the 2 (255 is not counted)
    issues = read_mask(tmp_path / "out" / "issues" / "x.png") > 0
    assert not issues[0, 0] and not issues[19, 19]


def test_bad_arguments(data, tmp_path):
    gt, _, _, store = data
    with pytest.raises(FileNotFoundError, match="gt folder"):
        segkit.audit([store], tmp_path / "nope", tmp_path / "out")
    with pytest.raises(ValueError, match="top must be a non-negative integer; got -1"):
        segkit.audit([store], gt, tmp_path / "out", top=-1)
    with pytest.raises(ValueError, match="fix must be a new folder"):
        segkit.audit([store], gt, tmp_path / "out", fix=gt)
    wrong = tmp_path / "gt_wrong"
    shutil.copytree(gt, wrong)
    first = _gt_path(wrong, _stems(store)[0])
    segkit.io.masks.write_mask(first, np.zeros((5, 5), np.uint8))
    with pytest.raises(segkit.jobs.JobError, match=r"is 5x5, the probabilities"):
        segkit.audit([store], wrong, tmp_path / "out2", workers=1, progress=False)


def test_page_renders_in_headless_chromium(data, tmp_path):
    """The page in a real browser: a screenshot that is not blank (scripts/audit_screenshot.sh
    does the same for a look by eye)."""
    browser = chromium_path()
    if browser is None:
        if os.environ.get("CI"):  # CI installs it (make system-deps): its absence is a failure
            pytest.fail("chromium is not installed; .ci/run installs it with make system-deps")
        pytest.skip("chromium is not installed (apt-get install chromium, or make system-deps)")
    gt, _, images, store = data
    out = tmp_path / "out"
    segkit.audit([store], gt, out, images=images, top=4, workers=1, progress=False)
    shot = tmp_path / "page.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--no-first-run", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1200,900", (out / "index.html").as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.is_file(), "chromium wrote no screenshot"
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (900, 1200)
    # pictures loaded: many colours (a blank or broken page has a handful)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200


def test_fold_store_set_equals_one_store(data, tmp_path):
    """Out-of-fold stores: two fold stores with disjoint stems, given as one "a,b" set, audit
    exactly as the single store holding every stem."""
    gt, _, _, store = data
    whole = ConfidenceStore(store)
    stems = _stems(store)
    folds = [ConfidenceStore.create(tmp_path / f"fold{k}", whole.classes) for k in (0, 1)]
    for i, s in enumerate(stems):
        folds[i % 2].write(s, whole.read(s))
    spec = f"{folds[0].root},{folds[1].root}"
    one = segkit.audit([store], gt, tmp_path / "one", progress=False, workers=1)
    both = segkit.audit([spec], gt, tmp_path / "set", progress=False, workers=2)
    assert [r["stem"] for r in both.rows] == [r["stem"] for r in one.rows]
    assert [r["issue_pixels"] for r in both.rows] == [r["issue_pixels"] for r in one.rows]
    assert np.allclose([r["quality"] for r in both.rows], [r["quality"] for r in one.rows])


# ---- issue 20, defect 3: no leaks, no stale files, --fix keeps the annotation's format ----------
def test_cache_is_removed_when_the_job_fails(data, tmp_path, monkeypatch):
    gt, _, _, store = data
    from segkit.jobs import audit as job

    def fail(self, stem):
        raise RuntimeError("disk full")

    monkeypatch.setattr(job._Flag, "__call__", fail)
    with pytest.raises(segkit.jobs.JobError, match="disk full"):
        segkit.audit([store], gt, tmp_path / "out", workers=1, progress=False)
    assert (tmp_path / "out" / "issues").is_dir()  # it got as far as pass 4
    assert not (tmp_path / "out" / ".cache").exists()


def test_rerun_leaves_no_stale_issue_or_picture_files(data, tmp_path):
    gt, _, _, store = data
    out = tmp_path / "out"
    segkit.audit([store], gt, out, top=4, workers=1, progress=False)
    assert len(list((out / "pictures").glob("*.png"))) == 4
    fewer = ConfidenceStore.create(tmp_path / "fewer", ConfidenceStore(store).classes)
    kept = _stems(store)[:5]
    for s in kept:
        fewer.write(s, ConfidenceStore(store).read(s))
    report = segkit.audit([fewer.root], gt, out, top=2, workers=1, progress=False)
    assert sorted(p.stem for p in (out / "issues").glob("*.png")) == kept
    assert sorted(p.stem for p in (out / "pictures").glob("*.png")) == \
        sorted(r["stem"] for r in report.rows[:2])


def test_fix_keeps_the_palette_and_the_16_bit_format(data, tmp_path):
    gt, _, _, store = data
    mine = tmp_path / "gt"
    shutil.copytree(gt, mine)
    stems = _stems(store)
    palette = np.random.default_rng(1).integers(0, 256, (256, 3)).astype(np.uint8)
    first, second = _gt_path(mine, stems[0]), _gt_path(mine, stems[1])
    segkit.io.masks.write_mask(first, read_mask(first), palette)
    segkit.io.masks.write_mask(second, read_mask(second).astype(np.uint16))
    report = segkit.audit([store], mine, tmp_path / "out", fix=tmp_path / "fixed", workers=1,
                          progress=False)
    assert report.fixed > 0
    labels, pal = read_mask(_gt_path(tmp_path / "fixed", stems[0]), with_palette=True)
    np.testing.assert_array_equal(pal[:256], palette)
    sixteen = read_mask(_gt_path(tmp_path / "fixed", stems[1]))
    assert sixteen.dtype == np.uint16


# ---- issue 28 part 4: the streamed audit and the in-memory op share one LabelInspector ------
@pytest.mark.parametrize("backend", ["numpy", "cpp", "numba"])
@pytest.mark.parametrize("seed", [0, 1])
def test_streamed_audit_equals_in_memory_op_with_ties(tmp_path, backend, seed):
    """Random images of mixed sizes whose probabilities are multiples of 1/8: many pixels tie
    at the cutoff and the tie is broken across images; the audit (streamed, two workers) and
    segkit.label_issues on the dataset as one long image flag the same pixels."""
    from segkit.io.masks import write_mask
    from segkit.ops.label_inspector import LabelInspector
    from segkit.ops.label_issues_cutoff import in_bin

    rng = np.random.default_rng(seed)
    c = 4
    store = ConfidenceStore.create(tmp_path / "store", [f"k{i}" for i in range(c)])
    labels, probs = [], []
    stems = [f"im{i:02d}" for i in range(7)]
    for i, stem in enumerate(stems):
        h, w = (9, 13) if i % 2 else (12, 7)
        p = rng.multinomial(8, np.full(c, 1 / c), size=(h, w)).transpose(2, 0, 1) / 8
        lab = p.argmax(0).astype(np.uint8)
        flip = rng.random(lab.shape) < 0.3
        lab[flip] = rng.integers(0, c, int(flip.sum()))
        lab[rng.random(lab.shape) < 0.05] = 255  # ignored
        store.write(stem, p)
        write_mask(tmp_path / "gt" / f"{stem}.png", lab)
        labels.append(lab.ravel())
        probs.append(p.reshape(c, -1).astype(np.float32))
    report = segkit.audit([store.root], tmp_path / "gt", tmp_path / "out", top=0, workers=2,
                          backend=backend, progress=False)
    flagged = np.concatenate([read_mask(tmp_path / "out" / "issues" / f"{s}.png").ravel() > 0
                              for s in stems])
    lab_all = np.concatenate(labels)[None, None]
    p_all = np.concatenate(probs, axis=1)[:, None][None]
    expected = segkit.label_issues(lab_all, p_all, ignore_index=255, backend=backend)[0, 0]
    np.testing.assert_array_equal(flagged, expected)
    assert report.issues == int(expected.sum())
    # a tie was broken, and across images: the cutoff took some but not all tied pixels
    insp = LabelInspector(c, ignore_index=255, backend="numpy")
    insp.update_thresholds(lab_all, p_all)
    scored = insp.update_scores(lab_all, p_all)
    cut = insp.find_cutoff(lambda b: {0: scored.scores[in_bin(scored.scores, b)]})
    tied = ref.order_keys(scored.scores).ravel() == cut.tie_key
    assert report.estimated == cut.count
    assert 0 < cut.ties < int(tied.sum())
    per_image = np.split(tied, np.cumsum([x.size for x in labels])[:-1])
    assert sum(t.any() for t in per_image) > 1
