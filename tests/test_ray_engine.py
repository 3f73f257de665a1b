"""The Ray engine on a local Ray instance with 2 CPUs (started once for this module and
stopped at its end): same results as the local engine, failures name the item."""
from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

import segkit
from segkit.io.masks import read_mask
from segkit.jobs import DatasetError, JobError, map_items
from segkit.jobs.resample import list_masks

from ._jobs_data import coco_dataset, noisy_mask_folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    files = noisy_mask_folder(root / "masks", seed=4)
    return root, files, coco_dataset(root / "coco", n_images=5)


def test_map_items_on_ray(ray_local):
    assert sorted(map_items(math.sqrt, [1, 4, 9, 16, 25], workers=2, engine="ray",
                            progress=False)) == [1, 2, 3, 4, 5]
    with pytest.raises(JobError) as info:
        list(map_items(math.sqrt, [1, -1, 4], workers=2, engine="ray", progress=False))
    assert info.value.item == -1
    assert str(info.value) == "-1: ValueError: math domain error"


def test_resample_on_ray_equals_local(ray_local, data, tmp_path):
    root, files, _ = data
    local = segkit.resample(root / "masks", tmp_path / "local", workers=2, progress=False,
                            log=None)
    remote = segkit.resample(root / "masks", tmp_path / "ray", workers=2, engine="ray",
                             progress=False, log=None)
    for rel in list_masks(root / "masks"):
        np.testing.assert_array_equal(read_mask(tmp_path / "ray" / rel),
                                      read_mask(tmp_path / "local" / rel))
        assert (tmp_path / "ray" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes()
    assert remote["changed_per_class"] == local["changed_per_class"]
    assert remote["params"]["engine"] == "ray"
    again = segkit.resample(root / "masks", tmp_path / "ray", workers=2, engine="ray",
                            progress=False, log=None)
    assert again["status_counts"] == {"skipped": len(files)}


def test_coco_jobs_on_ray_equal_local(ray_local, data, tmp_path):
    _, _, ds = data
    segkit.coco_to_masks(ds.ann_file, tmp_path / "l", workers=1, progress=False, log=None)
    segkit.coco_to_masks(ds.ann_file, tmp_path / "r", engine="ray", workers=2, progress=False,
                         log=None)
    segkit.resample(ds.ann_file, tmp_path / "rr", engine="ray", workers=2, progress=False,
                    log=None)
    local = sorted((tmp_path / "l").rglob("*.png"))
    assert len(local) == len(ds.images)
    for p in local:
        rel = p.relative_to(tmp_path / "l")
        np.testing.assert_array_equal(read_mask(tmp_path / "r" / rel), read_mask(p))
        np.testing.assert_array_equal(read_mask(tmp_path / "rr" / rel),
                                      segkit.mode_filter(read_mask(p)))


def test_bad_file_on_ray_is_named(ray_local, tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(src / "ok.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(src / "rgb.png")
    with pytest.raises(DatasetError, match=r"rgb.png: mode RGB is not a label mask"):
        segkit.resample(src, tmp_path / "o", engine="ray", workers=2, progress=False, log=None)
    from segkit.cli import main

    res = CliRunner().invoke(main, ["resample", str(src), str(tmp_path / "o2"), "--engine",
                                    "ray", "--workers", "2", "--no-progress"])
    assert res.exit_code == 1 and "rgb.png: mode RGB" in res.stderr
