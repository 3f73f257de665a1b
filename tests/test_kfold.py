"""`segkit.kfold` / `segkit kfold`: partition invariants, determinism, the greedy algorithm
against a plain-Python reference, balance, multilabel stratification, written files."""
from __future__ import annotations

import json
import shutil

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


# ---- a folder of PNG masks ----------------------------------------------------------------
VOID = 11  # the masks' void label (not 255): counted for no class


@pytest.fixture(scope="module")
def mask_folder(tmp_path_factory):
    """40 masks (8x8, some in a sub-folder) over classes 0..5 with void pixels: class c > 0
    is in an image with probability 0.6 / c (class 5 in few images), mask 0 is all void but
    one background pixel, mask 1 all void. Returns (folder, {stem: set of classes})."""
    from segkit.io.masks import write_mask

    root = tmp_path_factory.mktemp("maskfolds") / "masks"
    rng = np.random.default_rng(3)
    present = {}
    for i in range(40):
        m = np.zeros((8, 8), np.uint8)
        classes = [c for c in range(1, 6) if rng.random() < 0.6 / c]
        for j, c in enumerate(classes):
            m[j] = c
        m[6:] = VOID
        if i == 0:
            m[:] = VOID
            m[0, 0] = 0
        if i == 1:
            m[:] = VOID
        stem = f"sub/{i:03d}" if i % 4 == 0 else f"{i:03d}"
        write_mask(root / f"{stem}.png", m)
        present[stem] = set(np.unique(m).tolist()) - {VOID}
    (root / "notes.json").write_text("{}")  # not a mask: ignored
    return root, present


def test_kfold_masks_partition_and_files(mask_folder, tmp_path):
    from segkit.jobs.kfold import kfold_masks

    root, present = mask_folder
    out = tmp_path / "splits"
    res = kfold_masks(root, k=4, seed=2, out=out, ignore_index=VOID, log=None)
    stems = sorted(present)
    assert res.file_names == [s + ".png" for s in stems] and res.unit == "images"
    vals = [(out / f"fold{f}" / "val.txt").read_text().split() for f in range(4)]
    assert sorted(s for v in vals for s in v) == stems  # each image in exactly one val fold
    for f in range(4):
        train = (out / f"fold{f}" / "train.txt").read_text().split()
        assert sorted(train + vals[f]) == stems and not set(train) & set(vals[f])
        assert vals[f] == [s for s in stems if res.fold_of[stems.index(s)] == f]
    summary = json.loads((out / "folds.json").read_text())
    assert summary["k"] == 4 and summary["ignore_index"] == VOID
    assert summary["classes"] == [str(c) for c in range(6)]
    assert summary["val_counts"] == res.counts.tolist()
    assert summary["folds"] == [[s + ".png" for s in v] for v in vals]
    # counts: validation images holding each class (void pixels counted for none)
    for f in range(4):
        for c in range(6):
            assert res.counts[f, c] == sum(c in present[s] for s in vals[f])
    assert res.counts[:, 0].sum() == 39  # mask 1 is all void: no class at all


def test_kfold_masks_greedy_balances_presence(mask_folder):
    from segkit.jobs.kfold import kfold_masks

    root, present = mask_folder
    stems = sorted(present)
    presence = np.array([[c in present[s] for c in range(6)] for s in stems], np.int64)
    for seed in range(3):
        res = kfold_masks(root, k=4, seed=seed, ignore_index=VOID, log=None)
        # the same greedy rounds as the COCO path, on the 0/1 matrix
        np.testing.assert_array_equal(res.fold_of, reference_greedy(presence, 4, seed))
        total = presence.sum(0)
        # every class is within one image of its share in each fold
        assert (np.abs(res.counts - total / 4) < 1 + 1e-9).all(), res.table()
        assert res.images_per_fold.max() - res.images_per_fold.min() <= 1
    # a random split of the same data is worse on some class
    rng = np.random.default_rng(0)
    rand = rng.permutation(np.arange(len(stems)) % 4)
    rand_counts = np.stack([presence[rand == f].sum(0) for f in range(4)])
    assert np.abs(rand_counts - presence.sum(0) / 4).max() > 1


def test_kfold_masks_seeded_and_multilabel(mask_folder, tmp_path):
    from segkit.jobs.kfold import kfold_masks

    root, _ = mask_folder

    def files(seed, method, name):
        out = tmp_path / name
        kfold_masks(root, k=3, seed=seed, method=method, out=out, ignore_index=VOID, log=None)
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.txt")}

    for method in ("greedy", "multilabel"):
        assert files(4, method, f"{method}a") == files(4, method, f"{method}b")
        assert files(4, method, f"{method}a") != files(5, method, f"{method}c")
    ml = kfold_masks(root, k=3, method="multilabel", ignore_index=VOID, log=None)
    assert sorted(np.bincount(ml.fold_of).tolist()) == [13, 13, 14]


def test_kfold_masks_ignore_value_and_classes(mask_folder, tmp_path):
    from segkit.jobs.kfold import kfold_masks

    root, present = mask_folder
    res = kfold_masks(root, k=2, ignore_index=VOID, log=None)
    assert res.counts.shape == (2, 6)  # classes 0..5: the void value is no class
    every = kfold_masks(root, k=2, ignore_index=None, log=None)
    assert every.counts.shape == (2, 12) and every.counts[:, VOID].sum() == 40
    with pytest.raises(ValueError, match=r"\.png: label value 11 is not a class "
                                         r"\(num_classes=6: 0\.\.5\) nor the ignore value 255"):
        kfold_masks(root, k=2, num_classes=6, log=None)  # the default ignore 255 misses 11
    named = tmp_path / "named"
    shutil.copytree(root, named)
    (named / "labels.json").write_text(json.dumps({"classes": list("abcdef")}))
    assert kfold_masks(named, k=2, ignore_index=VOID, log=None).classes == list("abcdef")


def test_kfold_masks_bad_input(mask_folder, tmp_path):
    from segkit.jobs.kfold import kfold_masks

    root, _ = mask_folder
    with pytest.raises(ValueError, match="k=41 is larger than the number of masks"):
        kfold_masks(root, k=41, ignore_index=VOID, log=None)
    with pytest.raises(ValueError, match="ignore_index must be >= 0"):
        kfold_masks(root, ignore_index=-1, log=None)
    with pytest.raises(ValueError, match="method must be one of"):
        kfold_masks(root, method="random", log=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no PNG masks found"):
        kfold_masks(tmp_path / "empty", log=None)
    with pytest.raises(ValueError, match="nope: not a folder of PNG masks"):
        kfold_masks(tmp_path / "nope", log=None)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"a\.jpg: not a PNG mask"):
        kfold_masks(mixed, log=None)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    shutil.copy(next(root.glob("*.png")), broken / "b.png")
    for workers in (1, 2):  # in this process, and through the process pool
        with pytest.raises(ValueError, match=r"a\.png: cannot read as an image"):
            kfold_masks(broken, k=2, workers=workers, log=None)


def test_kfold_cli_takes_a_mask_folder(mask_folder, tmp_path):
    root, present = mask_folder
    runner = CliRunner()
    out = tmp_path / "f"
    res = runner.invoke(main, ["kfold", str(root), "--k", "4", "--ignore-index", str(VOID),
                               "--out", str(out), "--workers", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "images per class in each validation fold" in res.output
    assert "largest relative imbalance" in res.output
    assert sorted(s for f in range(4) for s in (out / f"fold{f}" / "val.txt").read_text()
                  .split()) == sorted(present)
    res = runner.invoke(main, ["kfold", str(root), "--ignore-index", "none", "--k", "2",
                               "--workers", "1", "--no-progress"])
    assert res.exit_code == 0  # without an ignore value, 11 is a class held by every image
    assert any(line.split()[:2] == ["11", "40"] for line in res.output.splitlines())
    # a single mask, a missing path, COCO-only options, a bad ignore value: one clear line
    png = next(root.glob("*.png"))
    for args, message in [
        ([str(png)], f"is an image file; SOURCE must be a COCO annotation file (.json) or a "
                     f"folder of single-channel PNG masks"),
        ([str(tmp_path / "nope")], "does not exist; SOURCE must be a COCO annotation file"),
        ([str(root), "--flatten"], "--flatten and --on-invalid apply to a COCO SOURCE"),
        ([str(root), "--ignore-index", "void"], "expected a label value"),
    ]:
        res = runner.invoke(main, ["kfold", *args])
        assert res.exit_code == 2 and message in res.output, res.output
    res = runner.invoke(main, ["kfold", str(root), "--k", "2", "--num-classes", "6",
                               "--workers", "1", "--no-progress"])
    assert res.exit_code == 1 and "label value 11 is not a class" in res.stderr
    text = tmp_path / "bin.json"
    text.write_bytes(b"\xff\xfe\x00garbage")
    res = runner.invoke(main, ["kfold", str(text)])
    assert res.exit_code == 1 and res.stderr.startswith("error: ") and "bin.json" in res.stderr
