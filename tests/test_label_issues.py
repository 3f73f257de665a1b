"""segkit.label_issues / segkit.label_quality: every backend against the NumPy reference, and
the reference against cleanlab 2.9 itself (a dev dependency) on its defaults."""
from __future__ import annotations

import re

import numpy as np
import pytest

import segkit
from segkit.ops import label_issues as ops
from segkit.ops import label_issues_cutoff as cutoffs
from segkit.reference import label_issues as ref

from .conftest import require_backend

ALL_BACKENDS = ("numpy", "numba", "cpp", "cuda")


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    require_backend(request.param)
    return request.param


def _cleanlab():
    try:
        from cleanlab.segmentation.filter import find_label_issues
        from cleanlab.segmentation.rank import get_label_quality_scores
    except ImportError as exc:  # pragma: no cover - cleanlab is in the dev extra
        pytest.skip(f"cleanlab is not installed ({exc}); pip install 'cleanlab==2.9.*'")
    return find_label_issues, get_label_quality_scores


def noisy(n, c, h, w, *, seed=0, flip=0.2, sharp=2.0, dtype=np.uint8, pdtype=np.float32):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c, h, w)) * sharp
    p = np.exp(logits - logits.max(1, keepdims=True))
    p = (p / p.sum(1, keepdims=True)).astype(pdtype)
    lab = p.argmax(1).astype(dtype)
    f = rng.random(lab.shape) < flip
    lab[f] = rng.integers(0, c, int(f.sum())).astype(dtype)
    return lab, p


CASES = [(3, 4, 17, 23), (1, 11, 64, 64), (5, 2, 9, 7), (2, 3, 1, 1), (4, 11, 32, 33)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_cleanlab_random(backend, case, seed):
    find, quality = _cleanlab()
    lab, p = noisy(*case, seed=seed)
    expected = find(lab, p, verbose=False, n_jobs=1)
    out = segkit.label_issues(lab, p, backend=backend)
    assert out.dtype == np.bool_ and out.shape == lab.shape
    np.testing.assert_array_equal(out, expected)
    img, px = quality(lab, p, verbose=False, n_jobs=1)
    mine_img, mine_px = segkit.label_quality(lab, p, backend=backend)
    np.testing.assert_allclose(mine_img, img, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(mine_px, px)  # float32 values, cleanlab's float64 copies


@pytest.mark.parametrize("temperature", [0.01, 0.5, 2.0])
def test_softmin_temperature_equals_cleanlab(backend, temperature):
    _, quality = _cleanlab()
    lab, p = noisy(3, 5, 12, 10, seed=3)
    img, _ = quality(lab, p, verbose=False, temperature=temperature)
    mine, _ = segkit.label_quality(lab, p, temperature=temperature, backend=backend)
    np.testing.assert_allclose(mine, img, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.int16])
def test_label_dtypes_and_float16(backend, dtype):
    find, _ = _cleanlab()
    lab, p = noisy(2, 6, 20, 19, seed=5, dtype=dtype, pdtype=np.float16)
    # float16 is read exactly as float32: cleanlab on the float32 upcast is the reference
    expected = find(lab.astype(np.int64), p.astype(np.float32), verbose=False, n_jobs=1)
    np.testing.assert_array_equal(segkit.label_issues(lab, p, backend=backend), expected)


def test_hand_case(backend):
    labels = np.array([[0, 0, 1, 1]])
    probs = np.array([[[.9, .8, .1, .9]], [[.1, .2, .9, .1]]], np.float32)
    # thresholds: class 0 mean(.9, .8) = .85, class 1 mean(.9, .1) = .5; pixel 3 (label 1,
    # argmax 0 with .9 >= .85) is the one counted issue and the lowest score -> flagged
    np.testing.assert_array_equal(segkit.label_issues(labels, probs, backend=backend),
                                  [[False, False, False, True]])


def test_ties_bounded_against_cleanlab(backend):
    """Quantised probabilities make many equal scores: cleanlab's unstable argsort picks an
    unspecified subset of the pixels tied at the cutoff score; segkit takes them in index
    order. Outside the tied pixels both flag the same; inside, no more differ than are tied."""
    find, _ = _cleanlab()
    lab, p = noisy(4, 3, 16, 16, seed=7, flip=0.3)
    p = np.round(p * 8) / 8 + 1e-3
    p = (p / p.sum(1, keepdims=True)).astype(np.float32)
    expected = find(lab, p, verbose=False, n_jobs=1)
    out = segkit.label_issues(lab, p, backend=backend)
    scores = np.take_along_axis(p, lab[:, None].astype(np.int64), 1)[:, 0]
    s, k = ops.confident_sums(lab, p, backend="numpy")
    thr = cutoffs.thresholds_from_sums(s, k)
    _, _, _, count = ops.score_pixels(lab, p, thr, backend="numpy")
    cut = np.sort(scores.ravel())[count - 1]
    differ = out != expected
    assert not (differ & (scores != cut)).any()
    assert differ.sum() <= 2 * (scores == cut).sum()
    # and segkit's own rule: the reference's stable order, exactly
    np.testing.assert_array_equal(out, ref.label_issues(lab, p))


def test_argmax_ties_take_the_first_class(backend):
    find, _ = _cleanlab()
    lab = np.array([[[1, 1, 0, 2]]], np.uint8)
    p = np.array([[[[.4, .4, .3, .4]], [[.4, .4, .3, .2]], [[.2, .2, .4, .4]]]], np.float32)
    np.testing.assert_array_equal(segkit.label_issues(lab, p, backend=backend),
                                  find(lab, p, verbose=False, n_jobs=1))


def test_no_issue_and_all_correct(backend):
    lab, p = noisy(2, 4, 8, 8, seed=2, flip=0.0)
    assert not segkit.label_issues(lab, p, backend=backend).any()


def test_single_image_2d_and_one_pixel(backend):
    lab, p = noisy(1, 3, 10, 12, seed=4)
    np.testing.assert_array_equal(segkit.label_issues(lab[0], p[0], backend=backend),
                                  segkit.label_issues(lab, p, backend=backend)[0])
    img, px = segkit.label_quality(lab[0], p[0], backend=backend)
    assert isinstance(img, float) and px.shape == lab[0].shape
    one = segkit.label_issues(np.array([[1]]), np.array([[[.9]], [[.1]]], np.float32),
                              backend=backend)
    assert one.shape == (1, 1)


def test_empty_batch(backend):
    out = segkit.label_issues(np.zeros((0, 4, 4), np.uint8), np.zeros((0, 3, 4, 4), np.float32),
                              backend=backend)
    assert out.shape == (0, 4, 4)
    img, px = segkit.label_quality(np.zeros((0, 4, 4), np.uint8),
                                   np.zeros((0, 3, 4, 4), np.float32), backend=backend)
    assert img.shape == (0,) and px.shape == (0, 4, 4)


def test_ignore_index(backend):
    lab, p = noisy(3, 5, 15, 14, seed=9, dtype=np.uint8)
    lab[:, :3] = 255
    out = segkit.label_issues(lab, p, ignore_index=255, backend=backend)
    np.testing.assert_array_equal(out, ref.label_issues(lab, p, ignore_index=255))
    assert not out[:, :3].any()
    img, px = segkit.label_quality(lab, p, ignore_index=255, backend=backend)
    assert np.isnan(px[:, :3]).all() and np.isfinite(px[:, 3:]).all()
    expected = ref.softmin(np.where(lab == 255, np.nan, px), 0.1)
    np.testing.assert_allclose(img, expected, rtol=1e-12)
    only_ignored = segkit.label_quality(np.full((1, 2, 2), 255, np.uint8),
                                        np.full((1, 2, 2, 2), .5, np.float32),
                                        ignore_index=255, backend=backend)[0]
    assert np.isnan(only_ignored).all()


@pytest.mark.parametrize("shape", [(2, 5, 31, 40), (1, 11, 300, 257), (3, 2, 1, 5)])
def test_stages_equal_reference(backend, shape):
    lab, p = noisy(*shape, seed=11)
    lab[0, 0, 0] = 200
    s, k, bad = ref.sums(lab, p, shape[1], 200)
    s2, k2 = ops.confident_sums(lab, p, ignore_index=200, backend=backend)
    np.testing.assert_allclose(s2, s, rtol=1e-12)
    np.testing.assert_array_equal(k2, k)
    thr = cutoffs.thresholds_from_sums(s, k)
    sc, cand, hist, counted = ref.scores(lab, p, shape[1], thr - 1e-6, 200)
    sc2, cand2, hist2, counted2 = ops.score_pixels(lab, p, thr, ignore_index=200,
                                                   backend=backend)
    np.testing.assert_array_equal(sc2, sc)
    np.testing.assert_array_equal(cand2, cand)
    np.testing.assert_array_equal(hist2, hist)
    assert counted2 == counted and hist.sum() == lab.size - 1
    np.testing.assert_allclose(ops.image_softmin(sc, 0.1, backend=backend), ref.softmin(sc, 0.1),
                               rtol=1e-12)
    keys = ref.order_keys(sc[np.isfinite(sc)])
    for key in (0, int(np.median(keys)), int(keys.max()) + 1, 2**32 - 1):
        np.testing.assert_array_equal(ops.flag_pixels(sc, cand, key, backend=backend),
                                      ref.flags(sc, cand, key))


def test_order_keys_and_bins():
    v = np.array([-np.inf, -2.0, -0.0, 0.0, 1e-40, 0.5, 1.0, np.inf], np.float32)
    keys = ref.order_keys(v)
    assert (np.diff(keys.astype(np.int64)) > 0).all()
    for b in np.unique(keys >> 16):
        np.testing.assert_array_equal(cutoffs.in_bin(v, int(b)), (keys >> 16) == b)
    for k in keys:
        cut = cutoffs.Cutoff(int(k), int(k), 1, 1)
        assert ref.order_keys(np.array([cut.tie_value]))[0] == k


def test_find_cutoff_counts_exactly():
    rng = np.random.default_rng(0)
    s = rng.choice(np.float32([0.1, 0.2, 0.2, 0.25, 0.9]), 1000).astype(np.float32)
    keys = ref.order_keys(s)
    hist = np.bincount(keys >> 16, minlength=1 << 16)
    for count in (1, 10, 200, 999, 1000):
        cut = cutoffs.find_cutoff(hist, count, lambda b: s[cutoffs.in_bin(s, b)])
        taken = (keys < cut.key).sum() + cut.ties
        assert taken == count
        kth = np.sort(s)[count - 1]
        assert (keys < cut.key).sum() == (s < kth).sum() or cut.ties == 0
    with pytest.raises(ValueError, match="exceeds"):
        cutoffs.find_cutoff(hist, 1001, lambda b: s[cutoffs.in_bin(s, b)])


def test_bad_input():
    lab, p = noisy(1, 3, 4, 4)
    lab[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"outside 0\.\.2 \(e\.g\. 7\)"):
        segkit.label_issues(lab, p)
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        segkit.label_quality(lab, p)
    with pytest.raises(ValueError, match="differ in N, H or W"):
        segkit.label_issues(lab[:, :3], p)
    with pytest.raises(ValueError, match="must be"):
        segkit.label_issues(lab, p[0])
    with pytest.raises(TypeError, match="float16 or float32"):
        segkit.label_issues(lab % 3, p.astype(np.int32))
    with pytest.raises(ValueError, match="temperature must be a positive number; got 0"):
        segkit.label_quality(lab % 3, p, temperature=0)
    with pytest.raises(ValueError, match="method must be one of 'softmin'; got 'mean'"):
        segkit.label_quality(lab % 3, p, method="mean")
    with pytest.raises(ValueError, match="backend must be one of"):
        segkit.label_issues(lab % 3, p, backend="gpu")


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_backends_do_not_depend_on_threads(threads):
    lab, p = noisy(2, 11, 200, 190, seed=1)
    before = segkit.get_num_threads()
    try:
        segkit.set_num_threads(threads)
        s, _ = ops.confident_sums(lab, p, backend="cpp")
        s_nb, _ = ops.confident_sums(lab, p, backend="numba")
    finally:
        segkit.set_num_threads(before)
    s_ref, _, _ = ref.sums(lab, p, 11)
    np.testing.assert_allclose(s, s_ref, rtol=1e-12)
    np.testing.assert_array_equal(s, s_nb)  # same chunks, same reduction order



FUSED_CASES = [((2, 5, 31, 40), np.uint8, np.float32), ((1, 11, 300, 257), np.uint16, np.float16),
               ((3, 2, 1, 5), np.int32, np.float32), ((2, 3, 181, 200), np.int64, np.float16),
               ((0, 4, 3, 3), np.uint8, np.float32)]


@pytest.mark.parametrize("fused_backend", ["cpp", "numba"])
@pytest.mark.parametrize("shape,dtype,pdtype", FUSED_CASES,
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else None)
@pytest.mark.parametrize("ignore", [None, 200])
def test_fused_pass_equals_the_stages(fused_backend, shape, dtype, pdtype, ignore):
    """label_issues' one-read path (cpp, numba) gives exactly the staged outputs: scores,
    candidates, histogram and count, with ignored labels, argmax ties and both dtypes (chunk
    and block borders: 300x257 and 181x200 pixels are not multiples of the 512-pixel block)."""
    require_backend(fused_backend)
    lab, p = noisy(*shape, seed=5, dtype=dtype, pdtype=pdtype)
    if lab.size:
        lab.reshape(-1)[::7] = 200 if ignore is not None else 0
        p[:, :, 0, :2] = p[:, :1, 0, :2]  # argmax ties: the first class wins
    lab, p, ign, _ = ops._prepare(lab, p, ignore)
    s, k, bad = ref.sums(lab, p, shape[1], ign)
    thr = cutoffs.thresholds_from_sums(s, k)
    sc, cand, hist, counted = ref.scores(lab, p, shape[1], thr - 1e-6, ign)
    sc2, cand2, hist2, counted2 = ops.fused_scores(lab, p, ign, fused_backend)
    np.testing.assert_array_equal(sc2, sc)
    np.testing.assert_array_equal(cand2, cand)
    np.testing.assert_array_equal(hist2, hist)
    assert counted2 == counted and bad == 0
    np.testing.assert_array_equal(segkit.label_issues(lab, p, ignore_index=ignore,
                                                      backend=fused_backend),
                                  ref.label_issues(lab, p, ignore_index=ignore))


@pytest.mark.parametrize("fused_backend", ["cpp", "numba"])
def test_fused_pass_rejects_labels_out_of_range(fused_backend):
    require_backend(fused_backend)
    lab, p = noisy(1, 3, 40, 40)
    lab[0, 39, 39] = 9
    with pytest.raises(ValueError, match=r"labels has 1 pixels outside 0\.\.2 \(e\.g\. 9\)"):
        segkit.label_issues(lab, p, backend=fused_backend)
    lab[0, 39, 39] = 255
    segkit.label_issues(lab, p, ignore_index=255, backend=fused_backend)  # ignored: fine


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("batched", [False, True])
def test_nan_and_inf_are_refused_naming_the_first_index(backend, bad, batched):
    """As soft voting does: a non-finite probability is an input error, on every backend."""
    from segkit.errors import InputError

    lab, p = noisy(2, 4, 9, 7, seed=3)
    p = p.copy()
    p[1, 2, 3, 4] = bad
    p[1, 3, 5, 6] = bad  # a later one is not the one named
    if batched:
        args, index = (lab, p), "(1, 2, 3, 4)"
    else:
        args, index = (lab[1], p[1]), "(2, 3, 4)"
    for fn in (segkit.label_issues, segkit.label_quality):
        with pytest.raises(InputError, match=rf"probs contains {bad} \(first at index "
                                             rf"{re.escape(index)}\)"):
            fn(*args, backend=backend)
    for stage in (lambda: ops.confident_sums(*args, backend=backend),
                  lambda: ops.score_pixels(*args, np.full(4, 0.5), backend=backend)):
        with pytest.raises(InputError, match="must be finite"):
            stage()


@pytest.mark.parametrize("fused_backend", ["cpp", "numba"])
@pytest.mark.parametrize("pdtype", [np.float32, np.float16])
def test_the_fused_pass_refuses_nan_itself_in_its_one_read(fused_backend, pdtype, monkeypatch):
    """label_issues on cpp and numba reads the probabilities once: no separate finiteness pass
    (it cost a second full read, issue 27); the fused pass names the first bad value in probs
    order across chunks (2 x 200 x 200: two chunks per image) and blocks, with 1 or 2
    threads."""
    from segkit import _backend, _validate
    from segkit.errors import InputError

    require_backend(fused_backend)
    rng = np.random.default_rng(4)
    p = rng.random((2, 3, 200, 200)).astype(np.float32)
    p = (p / p.sum(1, keepdims=True)).astype(pdtype)
    lab = p.argmax(1).astype(np.uint8)

    def second_pass(*args, **kwargs):
        raise AssertionError("label_issues read the probabilities twice (a finiteness pass)")

    monkeypatch.setattr(_validate, "finite", second_pass)
    segkit.label_issues(lab, p, backend=fused_backend)
    bad = p.copy()
    bad[0, 2, 0, 5] = np.nan      # chunk 0, first block, class 2: flat 80005
    bad[0, 1, 100, 0] = np.inf    # chunk 0, a later block, class 1: flat 60000
    bad[0, 0, 199, 199] = -np.inf  # chunk 1, class 0: flat 39999, the first in probs order
    bad[1, 0, 0, 0] = np.nan      # the next image
    before = _backend.get_num_threads()
    try:
        for threads in (1, 2):
            _backend.set_num_threads(threads)
            with pytest.raises(InputError, match=r"probs contains -inf \(first at index "
                                                 r"\(0, 0, 199, 199\)\); probabilities must be "
                                                 "finite"):
                segkit.label_issues(lab, bad, backend=fused_backend)
            with pytest.raises(InputError, match=r"first at index \(0, 199, 199\)"):
                segkit.label_issues(lab[0], bad[0], backend=fused_backend)
    finally:
        _backend.set_num_threads(before)
