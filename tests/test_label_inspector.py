"""segkit.ops.label_inspector.LabelInspector: the one accumulator of confident learning. Fed
in pieces (any cut, images split across pieces or not) it gives what it gives fed at once and
what the NumPy reference gives, ties at the cutoff included; steps out of order are refused."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import segkit
from segkit.ops.label_inspector import LabelInspector
from segkit.ops.label_issues_cutoff import in_bin
from segkit.reference import label_issues as ref

from .conftest import require_backend

BACKENDS = ("numpy", "numba", "cpp", "cuda")


@pytest.fixture(params=BACKENDS)
def backend(request):
    require_backend(request.param)
    return request.param


def tied(n, c, h, w, *, seed=0, units=8, flip=0.3, ignore=None):
    """Labels and probabilities in multiples of 1/`units` (each pixel's sum is 1): few distinct
    scores, so many pixels tie at the cutoff, and float64 sums are exact in any order."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(units, np.full(c, 1.0 / c), size=(n, h, w))  # (n, h, w, c)
    p = np.ascontiguousarray((counts / units).astype(np.float32).transpose(0, 3, 1, 2))
    lab = p.argmax(1).astype(np.uint8)
    f = rng.random(lab.shape) < flip
    lab[f] = rng.integers(0, c, int(f.sum()))
    if ignore is not None:
        lab[rng.random(lab.shape) < 0.1] = ignore
    return lab, p


def in_pieces(lab, p, cuts, backend, ignore=None):
    """Drive an inspector over the flat pixel order cut at `cuts` (flat indices): each piece a
    (1, 1, len) 'image', as a streamed job sees a dataset. Returns (flags (flat), inspector)."""
    n, c = p.shape[:2]
    lab_f = lab.reshape(-1)
    p_f = p.transpose(1, 0, 2, 3).reshape(c, -1)
    bounds = [0, *cuts, lab_f.size]
    pieces = [(lab_f[a:b][None, None], p_f[:, a:b][None, :, None])
              for a, b in zip(bounds[:-1], bounds[1:])]
    insp = LabelInspector(c, ignore_index=ignore, backend=backend)
    for pl, pp in pieces:
        insp.update_thresholds(pl, pp)
    scored = [insp.update_scores(pl, pp) for pl, pp in pieces]
    insp.find_cutoff(lambda b: {i: s.scores[in_bin(s.scores, b)] for i, s in enumerate(scored)})
    flags = [insp.issues(s.scores, s.candidates, chunk=i).reshape(-1)
             for i, s in enumerate(scored)]
    return np.concatenate(flags), insp


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ignore", [None, 7])
def test_pieces_equal_at_once_and_the_reference(backend, seed, ignore):
    lab, p = tied(5, 4, 13, 11, seed=seed, ignore=ignore)
    at_once = segkit.label_issues(lab, p, ignore_index=ignore, backend=backend)
    expected = ref.label_issues(lab, p, ignore_index=ignore)
    np.testing.assert_array_equal(at_once, expected)
    rng = np.random.default_rng(seed + 10)
    for k in (1, 3, 17):  # 2, 4 and 18 pieces, cut anywhere (inside images too)
        cuts = np.sort(rng.choice(np.arange(1, lab.size), k, replace=False))
        flags, insp = in_pieces(lab, p, cuts, backend, ignore)
        np.testing.assert_array_equal(flags, expected.reshape(-1), err_msg=f"{k + 1} pieces")
    # the case holds a tie that is broken: some but not all tied pixels are taken
    scores = segkit.label_quality(lab, p, ignore_index=ignore, backend="numpy")[1]
    tied_pixels = int((ref.order_keys(scores) == insp.cutoff.tie_key).sum())
    assert 0 < insp.cutoff.ties < tied_pixels


def test_one_image_per_piece_equals_at_once(backend):
    lab, p = tied(6, 3, 9, 8, seed=4)
    cuts = np.arange(1, 6) * lab[0].size
    flags, insp = in_pieces(lab, p, cuts, backend)
    np.testing.assert_array_equal(flags.reshape(lab.shape),
                                  segkit.label_issues(lab, p, backend=backend))
    s, k = LabelInspector(3, backend=backend).sums(lab, p)
    np.testing.assert_array_equal(insp.thresholds, np.maximum(s / np.maximum(k, 1), 2e-6))


def test_merging_workers_results_equals_updating(backend):
    """What a job does: detached copies compute, the driver merges (histograms whole or as
    their non-zero bins)."""
    lab, p = tied(4, 5, 10, 10, seed=3)
    driver = LabelInspector(5, backend=backend)
    worker = pickle.loads(pickle.dumps(driver.detached()))
    for i in range(4):
        driver.add_sums(*worker.sums(lab[i:i + 1], p[i:i + 1]))
    driver.thresholds  # noqa: B018 - ends pass 1
    worker = pickle.loads(pickle.dumps(driver.detached()))
    scored = []
    for i in range(4):
        s = worker.score(lab[i:i + 1], p[i:i + 1])
        bins = np.flatnonzero(s.hist)
        driver.add_scores(s.hist[bins], s.counted, bins=bins)
        scored.append(s)
    cut = driver.find_cutoff(lambda b: {i: s.scores[in_bin(s.scores, b)]
                                        for i, s in enumerate(scored)})
    assert cut.count == driver.estimated > 0
    worker = pickle.loads(pickle.dumps(driver.detached()))
    flags = np.concatenate([worker.issues(s.scores, s.candidates, chunk=i)
                            for i, s in enumerate(scored)])
    np.testing.assert_array_equal(flags, segkit.label_issues(lab, p, backend=backend))


def test_no_issue_gives_no_flag_and_needs_no_gather():
    lab, p = tied(2, 3, 5, 5, seed=0, flip=0.0)
    insp = LabelInspector(3, backend="numpy")
    insp.update_thresholds(lab, p)
    s = insp.update_scores(lab, p)
    cut = insp.find_cutoff(lambda b: pytest.fail("gathered without an estimated issue"))
    assert cut.count == 0 and insp.estimated == 0
    assert not insp.issues(s.scores, s.candidates).any()


def test_steps_out_of_order_are_refused():
    lab, p = tied(1, 3, 4, 4)
    insp = LabelInspector(3, backend="numpy")
    with pytest.raises(RuntimeError, match="find_cutoff after pass 2"):
        insp.issues(np.zeros((4, 4), np.float32), np.zeros((4, 4), bool))
    insp.update_thresholds(lab, p)
    s = insp.update_scores(lab, p)
    with pytest.raises(RuntimeError, match="pass 1 is over"):
        insp.update_thresholds(lab, p)
    insp.find_cutoff(lambda b: {0: s.scores[in_bin(s.scores, b)]})
    with pytest.raises(RuntimeError, match="pass 2 is over"):
        insp.update_scores(lab, p)
    with pytest.raises(RuntimeError, match="already called"):
        insp.find_cutoff(lambda b: {})
    with pytest.raises(RuntimeError, match="detached"):
        insp.detached().add_sums(np.zeros(3), np.zeros(3, np.int64))
    with pytest.raises(segkit.errors.InputError, match="num_classes"):
        LabelInspector(0)
