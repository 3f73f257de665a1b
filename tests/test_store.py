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


# ---- validation, header checks, combining stores ---------------------------------------------
from segkit.io.store import common_stems, open_stores  # noqa: E402


def _store_with(tmp_path, name="m", classes=("bg", "a"), stems=("x", "y"), h=4, w=5):
    store = ConfidenceStore.create(tmp_path / name, list(classes))
    for s in stems:
        store.write(s, np.full((len(classes), h, w), 1 / len(classes)))
    return store


def test_shape_reads_the_header_only(tmp_path):
    store = _store_with(tmp_path, h=6, w=7)
    assert store.shape("x") == (2, 6, 7)
    path = tmp_path / "m" / "x.npy"
    path.write_bytes(path.read_bytes() + b"\0\0")
    with pytest.raises(StoreError, match=r"x.npy: truncated or padded"):
        store.shape("x")
    with pytest.raises(KeyError, match="no probabilities for 'zz'"):
        store.shape("zz")


def test_validate_reports_every_problem(tmp_path):
    store = _store_with(tmp_path, stems=("good", "sums", "trunc", "f32", "classes"))
    root = tmp_path / "m"
    np.save(root / "sums.npy", np.full((2, 4, 5), 0.25, np.float16))  # sums to 0.5
    data = (root / "trunc.npy").read_bytes()
    (root / "trunc.npy").write_bytes(data[:-7])
    np.save(root / "f32.npy", np.full((2, 4, 5), 0.5, np.float32))
    np.save(root / "classes.npy", np.full((3, 4, 5), 1 / 3, np.float16))
    report = store.validate(["good", "sums", "trunc", "f32", "classes", "absent"])
    assert not report.ok and report.checked == 5 and report.missing == ["absent"]
    assert set(report.problems) == {"sums", "trunc", "f32", "classes"}
    assert "not probabilities" in report.problems["sums"]
    assert "truncated" in report.problems["trunc"]
    assert "got float32" in report.problems["f32"]
    assert "expected float16 (2, H, W)" in report.problems["classes"]
    with pytest.raises(StoreError, match="4 bad, 1 missing"):
        report.raise_if_bad()
    quick = store.validate(["sums"], sums=False)  # headers only: the sums go unchecked
    assert quick.ok and quick.checked == 1
    assert store.validate(["good"]).ok


def test_meta_problems_are_clear(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    (root / "meta.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"meta.json: unreadable"):
        ConfidenceStore(root)
    (root / "meta.json").write_text('["bg", "a"]')
    with pytest.raises(StoreError, match="expected a JSON object"):
        ConfidenceStore(root)
    (root / "meta.json").write_text('{"classes": ["bg", "bg"]}')
    with pytest.raises(StoreError, match="distinct strings"):
        ConfidenceStore(root)
    (root / "meta.json").write_text('{"classes": ["bg", "a"], "dtype": "float32"}')
    with pytest.raises(StoreError, match="dtype is 'float32'; this reader handles 'float16'"):
        ConfidenceStore(root)
    (root / "meta.json").write_text('{"classes": ["bg", "a"]}')  # minimal meta still opens
    assert ConfidenceStore(root).classes == ["bg", "a"]


def test_open_stores_and_common_stems(tmp_path):
    a = _store_with(tmp_path, "a", stems=("x", "y", "z"))
    b = _store_with(tmp_path, "b", stems=("y", "z", "w"))
    stores = open_stores([a.root, str(b.root)])
    stems, missing = common_stems(stores)
    assert stems == ["y", "z"]
    assert missing == {str(a.root): ["w"], str(b.root): ["x"]}
    _store_with(tmp_path, "c", classes=("bg", "b"))
    with pytest.raises(StoreError, match="same classes in the same order"):
        open_stores([a.root, tmp_path / "c"])
    with pytest.raises(ValueError, match="at least one"):
        open_stores([])


def test_temporaries_are_not_stems(tmp_path):
    store = _store_with(tmp_path, stems=("x",))
    (tmp_path / "m" / ".y.tmp-123-abcd.npy").write_bytes(b"partial")
    assert store.stems() == ["x"]


# ---- store sets: one model's fold stores as one store ------------------------------------------
def test_store_set_reads_every_fold(tmp_path):
    import pickle

    from segkit.io.store import StoreSet, open_store, store_identity

    a = _store_with(tmp_path, "f0", stems=("x", "y"))
    b = _store_with(tmp_path, "f1", stems=("z",))
    spec = f"{a.root},{b.root}"
    s = open_store(spec)
    assert isinstance(s, StoreSet)
    assert s.stems() == ["x", "y", "z"] and len(s) == 3 and "z" in s and "w" not in s
    assert s.classes == a.classes and s.num_classes == 2
    np.testing.assert_array_equal(s.read("z"), b.read("z"))
    assert s.shape("x") == a.shape("x") and s.path("z") == b.path("z")
    assert s.missing(["x", "w"]) == ["w"]
    assert str(s.root) == spec and open_store(str(s.root)).stems() == s.stems()
    assert store_identity(s) == f"{a.root.resolve()},{b.root.resolve()}"
    assert pickle.loads(pickle.dumps(s)).stems() == s.stems()
    assert s.validate().ok and s.validate(["x", "w"]).missing == ["w"]
    with pytest.raises(KeyError, match="no probabilities for 'w'"):
        s.read("w")
    with pytest.raises(StoreError, match="read-only"):
        s.write("q", np.full((2, 4, 5), 0.5))


def test_store_set_errors(tmp_path):
    from segkit.io.store import open_store

    a = _store_with(tmp_path, "f0", stems=("x", "y"))
    b = _store_with(tmp_path, "f1", stems=("y", "z"))
    with pytest.raises(StoreError, match="'y' is in both .*f0 and .*f1.*disjoint"):
        open_store(f"{a.root},{b.root}")
    c = _store_with(tmp_path, "f2", classes=("bg", "b"), stems=("q",))
    with pytest.raises(StoreError, match="same classes in the same order"):
        open_store(f"{a.root},{c.root}")
    with pytest.raises(StoreError, match="named twice"):
        open_store(f"{a.root},{a.root}")
    with pytest.raises(ValueError, match="empty store name"):
        open_store(f"{a.root},")
    with pytest.raises(StoreError, match="not a confidence store"):
        open_store(f"{a.root},{tmp_path / 'nope'}")


def test_open_stores_takes_store_sets(tmp_path):
    a0 = _store_with(tmp_path, "a0", stems=("x",))
    a1 = _store_with(tmp_path, "a1", stems=("y", "z"))
    b = _store_with(tmp_path, "b", stems=("x", "y"))
    stores = open_stores([f"{a0.root},{a1.root}", b.root])
    stems, missing = common_stems(stores)
    assert stems == ["x", "y"]
    assert missing == {str(b.root): ["z"]}
    c = _store_with(tmp_path, "c", classes=("bg", "b"), stems=("x",))
    with pytest.raises(StoreError, match="same classes"):
        open_stores([f"{a0.root},{a1.root}", c.root])
    with pytest.raises(TypeError, match="^stores must be a sequence of stores"):
        open_stores(f"{a0.root},{a1.root}")
    with pytest.raises(TypeError, match="^models must be a sequence of stores"):
        open_stores(a0, name="models")  # the caller's argument name in the message
    with pytest.raises(ValueError, match="^models must name at least one confidence store"):
        open_stores([], name="models")
    # a folder whose own name holds a comma is one store
    odd = _store_with(tmp_path, "odd,name", stems=("x",))
    assert open_stores([odd.root])[0].root == odd.root


# ---- stores are opened once per worker process (issue 20, defect 2) ------------------------------
def _count_store_opens(monkeypatch, tmp_path, job: str, n: int) -> int:
    """ConfidenceStore openings of one job run on `n` images, with the job's function pickled
    again for every item, as the engine does for every chunk it sends to a worker process."""
    import pickle

    import segkit
    from segkit.jobs import engine

    from .test_tune import write_oof

    root = tmp_path / f"{job}_{n}"
    specs, *_ = write_oof(root, n=n, size=12, noise=(1.5, 3.5))
    real_call, real_init = engine._call, ConfidenceStore.__init__
    opens = []

    def init(self, *args, **kwargs):
        opens.append(args)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(engine, "_call", lambda fn, item: real_call(
        pickle.loads(pickle.dumps(fn)), item))
    monkeypatch.setattr(ConfidenceStore, "__init__", init)
    gt, out = root / "gt", root / "out"
    kw = dict(workers=1, progress=False)
    if job == "tune":
        segkit.tune(specs, gt, out, budget=3, log=None, **kw)
    elif job == "ensemble":
        segkit.ensemble(specs, None, out, save_probs=True, **kw)
    elif job == "audit":
        segkit.audit(specs, gt, out, top=1, **kw)
    else:
        segkit.evaluate(specs[0], gt, 6, **kw)
    return len(opens)


@pytest.mark.parametrize("job", ["tune", "ensemble", "audit", "evaluate"])
def test_store_opens_do_not_grow_with_the_images(monkeypatch, tmp_path, job):
    few = _count_store_opens(monkeypatch, tmp_path, job, 4)
    many = _count_store_opens(monkeypatch, tmp_path, job, 12)
    assert few == many, (few, many)
