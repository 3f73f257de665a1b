"""segkit recipe: the recipe file (typed record, commented TOML) and bad input, each a clear
error naming the file and the value, found at init and at the start of run before any
training. No training here: these are fast."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from segkit.io.masks import read_mask, write_mask
from segkit.recipe import (DatasetCheckError, RecipeError, init_recipe, load_recipe,
                           recipe_status, run_recipe)
from segkit.recipe.settings import parse_recipe
from segkit.recipe.toml_file import render_recipe

from ._recipe_data import mask_folder_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return mask_folder_dataset(tmp_path_factory.mktemp("recipe_input"), void=11, n=6)


@pytest.fixture
def copy(data, tmp_path) -> dict[str, Path]:
    """A private copy of the dataset that a test may damage."""
    out = {}
    for k, v in data.items():
        out[k] = tmp_path / "data" / k
        shutil.copytree(v, out[k])
    return out


def _init(d, folder, **kw):
    return init_recipe(folder, images=d["images"], masks=d["masks"],
                       test_images=d["test_images"], test_masks=d["test_masks"],
                       ignore_index=11, log=None, **kw)


def test_init_writes_a_commented_recipe_chosen_from_the_data(data, tmp_path):
    r = _init(data, tmp_path / "r")
    text = (tmp_path / "r" / "recipe.toml").read_text()
    assert r.dataset.ignore_index == 11 and "ignore_index = 11" in text
    # every setting has its explanation above it
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if " = " in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"no comment above {line!r}"
    assert "Found 6 training images" in text and "64x64" in text
    # the classes are the mask values found (void excluded), named by value
    classes = load_recipe(tmp_path / "r")
    assert classes == r
    import json
    names = json.loads((tmp_path / "r" / "classes.json").read_text())["classes"]
    assert names[0] == "0" and "11" not in names
    # the CRF is scaled down from 512-px photos to 64-px images
    assert r.crf.blur == 1 and r.crf.filter_size < 11 and r.crf.pos_sdims < 3
    assert (tmp_path / "r" / r.models[0].config).is_file()
    # reading back the rendered text gives the same record
    import tomllib
    assert parse_recipe(tomllib.loads(render_recipe(r))) == r


def test_init_refuses_to_overwrite_a_recipe(data, tmp_path):
    _init(data, tmp_path / "r")
    with pytest.raises(Exception, match="exists"):
        _init(data, tmp_path / "r")
    _init(data, tmp_path / "r", force=True)


def dump_toml(data: dict) -> str:
    """A plain TOML text of parsed recipe data (tables and arrays of tables)."""
    from segkit.recipe.toml_file import toml_value

    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, (dict, list))
             or (isinstance(v, list) and not all(isinstance(x, dict) for x in v))]
    for k, v in data.items():
        tables = [v] if isinstance(v, dict) else v if isinstance(v, list) and v and all(
            isinstance(x, dict) for x in v) else []
        for t in tables:
            lines.append(f"[{k}]" if isinstance(v, dict) else f"[[{k}]]")
            lines += [f"{kk} = {toml_value(vv)}" for kk, vv in t.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("section, key, value, match", [
    ("folds", "sped", 1, r"recipe.toml: unknown key folds.sped \(= 1\)"),
    ("folds", "k", "three", r"recipe.toml: folds.k = 'three': expected int, got str"),
    ("folds", "k", 1, r"folds.k = 1: must be at least 2"),
    ("prepare", "ties", "most", r"prepare.ties = 'most': must be one of"),
    ("train", "variants", "resampled", r"train.variants = 'resampled': expected a list"),
    ("bogus", "x", 1, r"unknown section or key 'bogus'"),
    ("infer", "tta", 1, r"infer.tta = 1: expected true or false, got int"),
    ("dataset", "ignore_index", 300, r"dataset.ignore_index = 300: must be at most 255"),
])
def test_bad_recipe_file_is_a_clear_error(data, tmp_path, section, key, value, match):
    import tomllib

    folder = tmp_path / "r"
    _init(data, folder)
    path = folder / "recipe.toml"
    parsed = tomllib.loads(path.read_text())
    parsed.setdefault(section, {})[key] = value
    path.write_text(dump_toml(parsed))
    with pytest.raises(RecipeError, match=match) as err:
        load_recipe(folder)
    assert "recipe.toml" in str(err.value)
    with pytest.raises(RecipeError, match=match):  # run checks it first
        run_recipe(folder, log=None)


def _damage(kind: str, d: dict[str, Path]) -> tuple[str, str]:
    """Damage the copy; returns (file named, value named) that the error must show."""
    masks = sorted(d["masks"].glob("*.png"))
    if kind == "size":
        write_mask(masks[0], np.zeros((40, 64), np.uint8))
        return masks[0].name, "64x40"
    if kind == "label":
        m = read_mask(masks[1])
        m[5, 5] = 42
        write_mask(masks[1], m)
        return masks[1].name, "42"
    if kind == "no mask":
        masks[2].unlink()
        return masks[2].stem.split("+")[-1], "has no mask"
    if kind == "unreadable":
        masks[0].write_bytes(b"not a png")
        return masks[0].name, "cannot read"
    if kind == "unreadable image":
        img = sorted(d["images"].rglob("*.jpg"))[0]
        img.write_bytes(b"garbage")
        return img.name, "cannot read"
    if kind == "empty":
        for p in d["test_images"].rglob("*.jpg"):
            p.unlink()
        return str(d["test_images"].name), "empty"
    raise AssertionError(kind)


KINDS = ["size", "label", "no mask", "unreadable", "unreadable image", "empty"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_dataset_is_refused_at_init(copy, tmp_path, kind):
    name, value = _damage(kind, copy)
    classes = tmp_path / "classes.json"  # with a class list, 42 is no class
    classes.write_text(json.dumps([f"c{i}" for i in range(11)]))
    with pytest.raises(DatasetCheckError) as err:
        _init(copy, tmp_path / "r", classes=classes)
    assert name in str(err.value) and value in str(err.value), str(err.value)
    assert not (tmp_path / "r" / "recipe.toml").exists()


@pytest.mark.parametrize("kind", ["size", "label", "no mask", "unreadable"])
def test_bad_dataset_is_refused_at_run_before_any_training(copy, tmp_path, kind):
    folder = tmp_path / "r"
    _init(copy, folder)
    (folder / "keep.txt").write_text("made before")
    name, value = _damage(kind, copy)
    with pytest.raises(DatasetCheckError) as err:
        run_recipe(folder, log=None, progress=False)
    assert name in str(err.value) and value in str(err.value), str(err.value)
    assert not (folder / "state").exists() and not (folder / "work").exists()
    assert (folder / "keep.txt").read_text() == "made before"  # nothing made is lost
    assert (folder / "recipe.toml").is_file()


def test_cli_prints_one_line_errors_and_status(data, tmp_path):
    from segkit.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["recipe", "init", str(tmp_path / "r"), "--images",
                               str(data["images"]), "--masks", str(data["masks"]),
                               "--ignore-index", "11"])
    assert res.exit_code == 0, res.output
    assert "recipe.toml" in res.output
    res = runner.invoke(main, ["recipe", "status", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "masks       missing: never ran" in res.output
    assert "ensembles   skipped: no dataset.test_images" in res.output
    assert [r["stage"] for r in recipe_status(tmp_path / "r")][-1] == "report"
    res = runner.invoke(main, ["recipe", "init", str(tmp_path / "q"), "--images",
                               str(tmp_path / "nowhere"), "--masks", str(data["masks"])])
    assert res.exit_code == 1 and res.output.startswith("error: images: no such folder")


def test_crf_is_scaled_to_the_image_size():
    from segkit.ops.convcrf import CRF_PRESETS
    from segkit.recipe.init import scaled_crf

    full = scaled_crf(512)
    preset = CRF_PRESETS["convcrf"]
    assert (full.filter_size, full.blur, full.pos_sdims) == (
        preset["filter_size"], preset["blur"], preset["pos_sdims"])
    small = scaled_crf(160)  # the 160x120 photos: no pooling, a smaller bandwidth
    assert small.blur == 1 and small.pos_sdims < 1.0
    assert scaled_crf(1024).blur == 8
    assert scaled_crf(64).filter_size % 2 == 1 and scaled_crf(64).filter_size < 11


def test_why_stale_names_the_setting_the_input_and_the_stage_before(tmp_path):
    from segkit.recipe.state import identity, why_stale

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"x")
    now = {"settings": {"folds.k": 3}, "inputs": {"masks": "h1"}, "upstream": {"masks": "k1"}}
    record = {"settings": {"folds.k": 3}, "inputs": {"masks": "h1"},
              "upstream": {"masks": "k1"}, "made": {"out": identity(tmp_path / "out")}}
    assert why_stale(record, now, tmp_path) == []
    assert why_stale(None, now, tmp_path) == ["never ran"]
    changed = {"settings": {"folds.k": 5}, "inputs": {"masks": "h2"},
               "upstream": {"masks": "k2"}}
    assert why_stale(record, changed, tmp_path) == [
        "setting folds.k changed (3 -> 5)", "input masks changed",
        "stage masks before it changed"]
    (tmp_path / "out" / "a.png").write_bytes(b"xy")  # an output edited by hand
    assert why_stale(record, now, tmp_path) == ["its output out changed or is missing"]
    assert why_stale({"state": "running", "started": "T"}, now, tmp_path)[0].startswith(
        "did not finish (started T)")


def test_gpu_preset_writes_the_swin_b_recipe(data, tmp_path):
    weights = tmp_path / "swin_base_22k_384.pth"
    weights.write_bytes(b"weights")
    r = _init(data, tmp_path / "r", preset="gpu", pretrained=str(weights))
    (model,) = r.models
    assert (model.name, model.epochs, model.batch_size) == ("swin_b", 60, 8)
    assert model.pretrained == str(weights) and r.infer.tta
    config = (tmp_path / "r" / model.config).read_text()
    assert "_base_ =" not in config and "embed_dims=128" in config.replace(" ", "")
    assert str(weights) in config


def test_a_store_from_elsewhere_is_checked_before_any_training(data, tmp_path):
    import segkit
    from segkit.io.store import StoreError

    folder = tmp_path / "r"
    _init(data, folder)
    segkit.ConfidenceStore.create(tmp_path / "s0", ["a", "b"], model="other")
    with open(folder / "recipe.toml", "a") as f:
        f.write(f'\n[[stores]]\nname = "other"\noof = ["{tmp_path / "s0"}", '
                f'"{tmp_path / "s1"}", "{tmp_path / "s2"}"]\n')
    with pytest.raises(StoreError, match=r"stores\[0\] \(other\): .*s0 has classes \['a', 'b'\]"):
        run_recipe(folder, log=None)
    assert not (folder / "state").exists()


def test_cpu_preset_trains_long_enough_to_learn(data, tmp_path):
    # measured on 100 generated 480x360 photos (docs/guide/recipe.md, Measured): a fold model's
    # validation mIoU after 10, 20, 30 epochs was 0.41 (still rising steeply), 0.72, 0.80
    from segkit.recipe.init import CPU_EPOCHS

    r = _init(data, tmp_path / "r", preset="cpu")
    (model,) = r.models
    assert CPU_EPOCHS == 30 and model.epochs == CPU_EPOCHS
    config = (tmp_path / "r" / model.config).read_text()
    assert f"max_epochs = {CPU_EPOCHS}" in config
    text = (tmp_path / "r" / "recipe.toml").read_text()
    assert "not yet measured" not in text and "480x360" in text
