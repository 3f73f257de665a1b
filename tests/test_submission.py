"""Submission CSV: resizing (nearest / mode / max, pinned pixel by pixel), row encoding, the
streamed atomic writer with its validation, and the reader."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from segkit.io.submission import (SubmissionError, block_mode, decode_labels, encode_labels,
                                  iter_submission, read_sample_ids, read_submission,
                                  resize_labels, verify_submission, write_submission)

A = np.array


# ---- resizing ----------------------------------------------------------------------------------
def test_nearest_takes_the_top_left_of_each_block():
    labels = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_array_equal(resize_labels(labels, 2), A([[0, 2], [8, 10]]))
    big = np.arange(512 * 512).reshape(512, 512) % 251
    np.testing.assert_array_equal(resize_labels(big.astype(np.uint8), 256),
                                  big[::2, ::2].astype(np.uint8))


@pytest.mark.parametrize("shape,size", [((37, 53), 16), ((512, 512), 256), ((5, 3), 8),
                                        ((256, 256), 256), ((100, 300), (50, 20))])
def test_nearest_is_floor_index_arithmetic_like_torch(shape, size):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 11, shape).astype(np.uint8)
    out = resize_labels(labels, size)
    oh, ow = (size, size) if isinstance(size, int) else size
    rows = [i * shape[0] // oh for i in range(oh)]
    cols = [j * shape[1] // ow for j in range(ow)]
    np.testing.assert_array_equal(out, labels[np.ix_(rows, cols)])
    torch = pytest.importorskip("torch")
    peer = torch.nn.functional.interpolate(torch.from_numpy(labels)[None, None].float(),
                                           size=(oh, ow), mode="nearest")[0, 0].numpy()
    np.testing.assert_array_equal(out, peer.astype(np.uint8))


def test_pil_nearest_differs_as_documented():
    from PIL import Image

    labels = np.arange(16, dtype=np.uint8).reshape(4, 4)
    pil = np.asarray(Image.fromarray(labels).resize((2, 2), Image.NEAREST))
    np.testing.assert_array_equal(pil, labels[1::2, 1::2])  # bottom-right of each block


MODE_CASES = {  # one 2x2 block each: (cells row-major, mode)
    "all-same": ([3, 3, 3, 3], 3),
    "strict-majority-3-1": ([1, 2, 2, 2], 2),
    "strict-majority-2-1-1": ([5, 7, 9, 7], 7),
    "tie-2-2-keeps-top-left": ([4, 1, 1, 4], 4),
    "tie-2-2-other-order": ([1, 4, 4, 1], 1),
    "all-different-top-left": ([9, 0, 5, 2], 9),
}


@pytest.mark.parametrize("case", sorted(MODE_CASES))
def test_mode_hand_cases(case):
    cells, expected = MODE_CASES[case]
    block = np.array(cells, np.uint8).reshape(2, 2)
    assert resize_labels(block, 1, "mode")[0, 0] == expected


def _mode_brute(labels, f):
    h, w = labels.shape
    out = np.empty((h // f, w // f), labels.dtype)
    for i in range(h // f):
        for j in range(w // f):
            cells = labels[i * f:(i + 1) * f, j * f:(j + 1) * f].ravel().tolist()
            counts = Counter(cells)
            top = max(counts.values())
            out[i, j] = next(v for v in cells if counts[v] == top)  # first in row-major order
    return out


@pytest.mark.parametrize("f", [2, 3, 4])
def test_mode_equals_brute_force(f):
    rng = np.random.default_rng(f)
    labels = rng.integers(0, 4, (12 * f, 8 * f)).astype(np.uint8)
    with pytest.raises(ValueError, match="one integer factor"):
        resize_labels(labels, 12, "mode")  # 12f x 8f -> 12 x 12 is not one factor
    out = resize_labels(labels, (12, 8), "mode")
    np.testing.assert_array_equal(out, _mode_brute(labels, f))


def test_mode_differs_from_nearest_only_at_strict_majorities():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, (64, 64)).astype(np.uint8)
    nearest, mode = resize_labels(labels, 32), resize_labels(labels, 32, "mode")
    blocks = labels.reshape(32, 2, 32, 2).transpose(0, 2, 1, 3).reshape(32, 32, 4)
    differ = nearest != mode
    assert differ.any()
    for i, j in zip(*np.nonzero(differ)):
        counts = Counter(blocks[i, j].tolist())
        assert counts[mode[i, j]] > counts[nearest[i, j]]


def test_max_is_the_block_maximum():
    labels = A([[1, 0, 2, 2], [0, 0, 2, 3]], np.uint8)
    np.testing.assert_array_equal(resize_labels(labels, (1, 2), "max"), A([[1, 3]]))
    rng = np.random.default_rng(1)
    big = rng.integers(0, 11, (512, 512)).astype(np.uint8)
    np.testing.assert_array_equal(resize_labels(big, 256, "max"),
                                  big.reshape(256, 2, 256, 2).max(3).max(1))


def test_block_mode_ties_first():
    cells = A([[[2, 1, 1, 2], [0, 0, 1, 1]]])
    np.testing.assert_array_equal(block_mode(cells), A([[2, 0]]))


@pytest.mark.parametrize("args,exc,match", [
    ((np.zeros((4, 4, 1), np.uint8), 2), ValueError, "must be 2-D"),
    ((np.zeros((4, 4), np.float32), 2), TypeError, "must be integers"),
    ((np.zeros((4, 4), np.uint8), 0), ValueError, "positive integer"),
    ((np.zeros((4, 4), np.uint8), 2, "bilinear"), ValueError, "downsample must be one of"),
    ((np.zeros((0, 4), np.uint8), 2), ValueError, "must not be empty"),
    ((np.zeros((6, 6), np.uint8), 4, "mode"), ValueError, "integer block"),
])
def test_resize_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        resize_labels(*args)


# ---- rows ----------------------------------------------------------------------------------------
def test_encode_decode_round_trip():
    labels = A([[0, 10], [3, 255]], np.uint8)
    assert encode_labels(labels) == "0 10 3 255"
    np.testing.assert_array_equal(decode_labels("0 10 3 255"), labels)
    wide = A([[0, 300], [65535, 7]], np.uint16)
    np.testing.assert_array_equal(decode_labels(encode_labels(wide)), wide)
    with pytest.raises(SubmissionError, match="3 labels, not 1x1"):
        decode_labels("1 2 3")
    with pytest.raises(ValueError, match="outside 0..65535"):
        encode_labels(A([-1]))


# ---- files -------------------------------------------------------------------------------------
def _sample(tmp_path, ids):
    path = tmp_path / "sample_submission.csv"
    path.write_text("image_id,PredictionString\n" + "".join(f"{i},\n" for i in ids))
    return path


def test_write_and_read_back(tmp_path):
    rng = np.random.default_rng(2)
    maps = {f"batch_0{k}/{k:04d}.jpg": rng.integers(0, 11, (16, 16)).astype(np.uint8)
            for k in range(5)}
    order = list(maps)[::-1]  # the sample's order, not sorted
    ids = read_sample_ids(_sample(tmp_path, order))
    assert ids == order
    out = write_submission(tmp_path / "sub.csv", ids, maps.__getitem__, size=8,
                           progress=False)
    text = out.read_text().splitlines()
    assert text[0] == "image_id,PredictionString" and len(text) == 6
    back = read_submission(out)
    assert list(back) == order
    for image_id, labels in back.items():
        np.testing.assert_array_equal(labels, maps[image_id][::2, ::2])
        row = next(line for line in text if line.startswith(image_id + ","))
        assert "  " not in row and row.split(",")[1].count(" ") == 63
    assert verify_submission(out, order, size=8) == 5


def test_write_is_atomic_and_stops_on_errors(tmp_path):
    def labels_for(image_id):
        if image_id == "c.jpg":
            raise KeyError("no labels for c.jpg")
        return np.zeros((4, 4), np.uint8)

    target = tmp_path / "sub.csv"
    with pytest.raises(KeyError, match="c.jpg"):
        write_submission(target, ["a.jpg", "b.jpg", "c.jpg"], labels_for, size=2,
                         progress=False)
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary left behind
    with pytest.raises(SubmissionError, match="appears twice"):
        write_submission(target, ["a.jpg", "a.jpg"], labels_for, size=2, progress=False)


@pytest.mark.parametrize("tamper,match", [
    (lambda rows: rows[:-1], r"2 rows, expected 3"),
    (lambda rows: [rows[0], rows[2], rows[1], rows[3]], r"row 1 is 'b.jpg', expected 'a.jpg'"),
    (lambda rows: rows[:3] + ["c.jpg,0 0 0"], "holds 3 space-separated labels"),
    (lambda rows: rows[:3] + ["c.jpg,0  0 0"], "separated by single spaces"),
    (lambda rows: rows[:3] + ["c.jpg,0 0 x 0"], "expected 4 integers"),
    (lambda rows: ["id,PredictionString"] + rows[1:], "header must be"),
    (lambda rows: rows + ["d.jpg,0 0 0 0"], "more rows than the 3 expected"),
    (lambda rows: rows[:1] + ["b.jpg,0 0 0 0,extra"] + rows[2:], "expected 2 fields"),
])
def test_verify_catches_broken_files(tmp_path, tamper, match):
    good = write_submission(tmp_path / "sub.csv", ["a.jpg", "b.jpg", "c.jpg"],
                            lambda i: np.ones((4, 4), np.uint8), size=2, progress=False)
    rows = good.read_text().splitlines()
    (tmp_path / "bad.csv").write_text("\n".join(tamper(rows)) + "\n")
    with pytest.raises(SubmissionError, match=match):
        verify_submission(tmp_path / "bad.csv", ["a.jpg", "b.jpg", "c.jpg"], size=2)


def test_sample_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,PredictionString\na.jpg,\n")
    with pytest.raises(SubmissionError, match="header starting with 'image_id'"):
        read_sample_ids(bad)
    with pytest.raises(SubmissionError, match="appears twice"):
        read_sample_ids(_sample(tmp_path, ["a.jpg", "b.jpg", "a.jpg"]))
    with pytest.raises(SubmissionError, match="cannot read"):
        read_sample_ids(tmp_path / "absent.csv")


def test_iter_submission_streams_rows(tmp_path):
    path = write_submission(tmp_path / "s.csv", ["x/1.jpg", "x/2.jpg"],
                            lambda i: np.full((2, 2), int(i[2]), np.uint8), size=2,
                            progress=False)
    assert list(iter_submission(path)) == [("x/1.jpg", "1 1 1 1"), ("x/2.jpg", "2 2 2 2")]
