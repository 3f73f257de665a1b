"""`segkit.kfold` / `segkit kfold`: partition invariants, determinism, the greedy algorithm
against a plain-Python reference, balance, multilabel stratification, written files."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import segkit
from segkit.cli import main
from segkit.io.coco import CocoIndex
from segkit.io.names import stem_of
from segkit.jobs.kfold import greedy_folds, multilabel_folds

from ._jobs_data import coco_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return coco_dataset(tmp_path_factory.mktemp("coco"), n_images=23, empty_images=2,
                        rle_fraction=0.0)


def skewed_counts(n=600, seed=1):
    """Instances per image with the recipe's skew (GUIDE section 6: 9311 paper, 63 battery
    instances ...), and a few images without annotations."""
    lam = np.array([0.85, 2.8, 0.2, 0.17, 0.19, 0.95, 0.4, 2.3, 0.02, 0.05])
    counts = np.random.default_rng(seed).poisson(lam, (n, len(lam)))
    counts[:5] = 0
    return counts


def reference_greedy(counts, k, seed):
    """The greedy rounds written plainly (same random draws as the implementation)."""
    rng = np.random.default_rng(seed)
    n, ncls = counts.shape
    order = [int(i) for i in rng.permutation(n)]  # tie-break order
    total = [int(counts[:, c].sum()) for c in range(ncls)]
    have = [[0] * ncls for _ in range(k)]
    remaining = list(order)
    fold = {}
    while remaining:
        for f in rng.permutation(k):
            if not remaining:
                break
            classes = [c for c in range(ncls) if any(counts[i, c] for i in remaining)]
            if classes:
                shortfall = {c: (total[c] / k - have[f][c]) / (total[c] / k) for c in classes}
                best_c = max(classes, key=shortfall.get)  # max() keeps the first of equals
                best_i = max(remaining, key=lambda i: counts[i, best_c])
            else:
                best_i = remaining[0]
            remaining.remove(best_i)
            fold[best_i] = int(f)
            for c in range(ncls):
                have[f][c] += int(counts[best_i, c])
    return np.array([fold[i] for i in range(n)])


@pytest.mark.parametrize("k, seed", [(2, 0), (3, 7), (5, 1)])
def test_greedy_equals_reference(k, seed):
    counts = skewed_counts(60, seed)
    np.testing.assert_array_equal(greedy_folds(counts, k, seed), reference_greedy(counts, k, seed))


def test_greedy_hand_made():
    """k=2 with two images of one class and two empty images: each fold gets one of each."""
    counts = np.array([[3], [0], [2], [0]])
    fold = greedy_folds(counts, 2, 0)
    assert sorted(fold[[0, 2]]) == [0, 1] and sorted(fold[[1, 3]]) == [0, 1]


@pytest.mark.parametrize("method", ["greedy", "multilabel"])
def test_balance_on_skewed_counts(method):
    counts = skewed_counts()
    k = 5
    fold = (greedy_folds if method == "greedy" else multilabel_folds)(counts, k, 0)
    assert np.ptp(np.bincount(fold, minlength=k)) <= 4
    per_fold = np.stack([counts[fold == f].sum(0) for f in range(k)])
    target = counts.sum(0) / k
    dev = np.abs(per_fold - target).max(0) / target
    frequent = counts.sum(0) >= 100
    assert dev[frequent].max() < 0.25, dev
    random_fold = np.random.default_rng(0).permutation(len(counts)) % k
    rand = np.stack([counts[random_fold == f].sum(0) for f in range(k)])
    assert dev.sum() < (np.abs(rand - target).max(0) / target).sum()
    if method == "greedy":
        assert np.ptp(np.bincount(fold, minlength=k)) <= 1
        assert dev[frequent].max() < 0.12, dev


def test_multilabel_equals_iterstrat():
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    counts = skewed_counts(200)
    fold = multilabel_folds(counts, 4, 3)
    y = (counts > 0).astype(int)
    splits = MultilabelStratifiedKFold(n_splits=4, shuffle=True, random_state=3).split(
        np.zeros((200, 1)), y)
    for f, (_, val) in enumerate(splits):
        assert set(np.flatnonzero(fold == f)) == set(val)


@pytest.mark.parametrize("method", ["greedy", "multilabel"])
@pytest.mark.parametrize("flatten", [False, True])
def test_kfold_files(dataset, tmp_path, method, flatten):
    k = 4
    out = tmp_path / "folds"
    result = segkit.kfold(dataset.ann_file, k=k, method=method, seed=5, out=out,
                          flatten=flatten, log=None)
    data = CocoIndex.open(dataset.ann_file).data
    all_ids = [img["id"] for img in data["images"]]
    stems = {img["id"]: stem_of(img["file_name"], flatten=flatten) for img in data["images"]}
    seen_val = []
    for f in range(k):
        train, val = CocoIndex.open(out / f"fold{f}" / "train.json").data, \
            CocoIndex.open(out / f"fold{f}" / "val.json").data
        t_ids = [i["id"] for i in train["images"]]
        v_ids = [i["id"] for i in val["images"]]
        assert not set(t_ids) & set(v_ids) and sorted(t_ids + v_ids) == sorted(all_ids)
        for split, sub in (("train", train), ("val", val)):
            ids = {i["id"] for i in sub["images"]}
            expected = [a for a in data["annotations"] if a["image_id"] in ids]
            assert sub["annotations"] == expected
            assert sub["categories"] == data["categories"] and sub["info"] == data["info"]
            lines = (out / f"fold{f}" / f"{split}.txt").read_text().splitlines()
            assert lines == [stems[i] for i in all_ids if i in ids]
        seen_val += v_ids
    assert sorted(seen_val) == sorted(all_ids)  # every image in exactly one validation fold
    empty = {img["id"] for img in data["images"]} - {a["image_id"] for a in data["annotations"]}
    assert len(empty) == 2 and empty <= set(seen_val)
    summary = json.loads((out / "folds.json").read_text())
    assert summary["method"] == method and summary["seed"] == 5
    assert sum(len(v) for v in summary["folds"]) == len(all_ids)
    assert np.array_equal(np.array(summary["val_counts"]).sum(0),
                          np.bincount([a["category_id"] if a["category_id"] != 42 else 10
                                       for a in data["annotations"]], minlength=11)[1:])
    assert result.classes[-1] == "Clothing"
    assert "largest relative imbalance" in result.table()


@pytest.mark.parametrize("method", ["greedy", "multilabel"])
def test_kfold_is_deterministic_per_seed(dataset, tmp_path, method):
    def files(seed, name):
        out = tmp_path / name
        segkit.kfold(dataset.ann_file, k=3, method=method, seed=seed, out=out, log=None)
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
                if p.is_file() and p.name != "folds.json"}

    a, b, c = files(11, "a"), files(11, "b"), files(12, "c")
    assert a == b
    assert a != c


def test_kfold_bad_arguments(dataset, tmp_path):
    for kwargs, exc, message in [
        ({"k": 1}, ValueError, "k must be >= 2; got 1"),
        ({"k": 24}, ValueError, "k=24 is larger than the number of images"),
        ({"method": "random"}, ValueError, "method must be one of 'greedy', 'multilabel'"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"k": 2.5}, TypeError, "k must be an integer"),
    ]:
        with pytest.raises(exc, match=message):
            segkit.kfold(dataset.ann_file, log=None, **kwargs)
    with pytest.raises(ValueError, match="nope.json: no such file"):
        segkit.kfold(tmp_path / "nope.json", log=None)


def test_kfold_cli(dataset, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["kfold", str(dataset.ann_file), "--k", "3", "--method", "greedy",
                               "--seed", "0", "--out", str(tmp_path / "f"), "--flatten"])
    assert res.exit_code == 0, res.output
    assert "largest relative imbalance" in res.output and "Clothing" in res.output
    assert (tmp_path / "f" / "fold2" / "val.txt").read_text().count("+") > 0
    res = runner.invoke(main, ["kfold", str(dataset.ann_file), "--k", "99"])
    assert res.exit_code == 1 and res.stderr.startswith("error: k=99 is larger")
    res = runner.invoke(main, ["kfold", "--help"])
    assert "Example:" in res.output
