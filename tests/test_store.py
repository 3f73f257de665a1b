"""Confidence store: round trips, atomic writes, validation and clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from segkit.io.names import flatten_name, stem_of, unflatten_name
from segkit.io.store import ConfidenceStore, StoreError


def softmax(x):
    e = np.exp(x - x.max(0))
    return e / e.sum(0)


def test_round_trip(tmp_path):
    store = ConfidenceStore.create(tmp_path / "m", ["bg", "a", "b"], model="toy", tta={"flip": 1})
    probs = softmax(np.random.default_rng(0).standard_normal((3, 5, 7)))
    store.write("img+0001", probs)
    out = store.read("img+0001")
    assert out.dtype == np.float16 and isinstance(out, np.memmap)
    np.testing.assert_allclose(out, probs, atol=1e-3)
    assert store.stems() == ["img+0001"] and "img+0001" in store and len(store) == 1
    assert store.missing(["img+0001", "img+0002"]) == ["img+0002"]
    again = ConfidenceStore(tmp_path / "m")
    assert again.classes == ["bg", "a", "b"] and again.meta["model"] == "toy"


def test_reopen_checks_classes(tmp_path):
    ConfidenceStore.create(tmp_path / "m", ["bg", "a"])
    with pytest.raises(StoreError, match="existing store has classes"):
        ConfidenceStore.create(tmp_path / "m", ["bg", "b"])


def test_rejects_non_probabilities(tmp_path):
    store = ConfidenceStore.create(tmp_path / "m", ["bg", "a"])
    with pytest.raises(StoreError, match="not probabilities"):
        store.write("x", np.ones((2, 3, 3)))
    with pytest.raises(StoreError, match=r"expected shape \(2, H, W\)"):
        store.write("x", np.full((3, 3, 3), 1 / 3))
    with pytest.raises(StoreError, match="NaN or inf"):
        store.write("x", np.full((2, 3, 3), np.nan))
    assert store.stems() == []


def test_corrupt_files_are_reported(tmp_path):
    store = ConfidenceStore.create(tmp_path / "m", ["bg", "a"])
    store.write("good", np.full((2, 4, 4), 0.5))
    data = (tmp_path / "m" / "good.npy").read_bytes()
    (tmp_path / "m" / "trunc.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match=r"trunc.npy: unreadable"):
        store.read("trunc")
    np.save(tmp_path / "m" / "f32.npy", np.full((2, 4, 4), 0.5, np.float32))
    with pytest.raises(StoreError, match=r"f32.npy: expected float16 \(2, H, W\); got float32"):
        store.read("f32")
    with pytest.raises(KeyError, match="no probabilities for 'absent'"):
        store.read("absent")


def test_missing_meta(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(StoreError, match=r"not a confidence store \(no meta.json\)"):
        ConfidenceStore(tmp_path / "m")


def test_names():
    assert flatten_name("batch_01_vt/0002.jpg") == "batch_01_vt+0002"
    assert flatten_name("0002.jpg") == "0002"
    assert unflatten_name("batch_01_vt+0002") == "batch_01_vt/0002.jpg"
    assert stem_of("a/b/c.png", flatten=False) == "a/b/c"
    with pytest.raises(ValueError, match="already contains"):
        flatten_name("a+b/c.jpg")
