"""The job engine (local process pool) and the atomic writers every job relies on."""
from __future__ import annotations

import numpy as np
import pytest

from segkit.io import atomic
from segkit.io.masks import MaskError, read_mask, write_mask
from segkit.jobs.engine import JobError, map_items


def square(x):
    if x == 13:
        raise ValueError("unlucky")
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_map_items_local(workers):
    assert sorted(map_items(square, range(10), workers=workers, progress=False)) == \
        [x * x for x in range(10)]


@pytest.mark.parametrize("workers", [1, 2])
def test_map_items_names_failing_item(workers):
    with pytest.raises(JobError, match=r"13: ValueError: unlucky") as info:
        list(map_items(square, range(20), workers=workers, progress=False))
    assert info.value.item == 13


def test_map_items_rejects_bad_arguments():
    with pytest.raises(ValueError, match="engine must be one of 'local', 'ray'; got 'spark'"):
        list(map_items(square, [1], engine="spark"))
    with pytest.raises(ValueError, match="workers must be a positive integer or None; got 0"):
        list(map_items(square, [1], workers=0))


def test_atomic_path_renames_on_success(tmp_path):
    final = tmp_path / "sub" / "a.json"
    atomic.write_json(final, {"x": 1})
    assert final.read_text().strip().startswith("{")
    assert [p.name for p in final.parent.iterdir()] == ["a.json"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "b.npy"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert not final.exists() and list(tmp_path.iterdir()) == []


def test_remove_temporaries(tmp_path):
    (tmp_path / ".x.tmp-1-abc.png").write_bytes(b"")
    (tmp_path / "keep.png").write_bytes(b"")
    assert atomic.is_temporary(tmp_path / ".x.tmp-1-abc.png")
    assert atomic.remove_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_mask_round_trips(tmp_path):
    m8 = np.arange(20, dtype=np.uint8).reshape(4, 5)
    pal = np.tile(np.arange(256, dtype=np.uint8)[:, None], (1, 3))
    write_mask(tmp_path / "p.png", m8, pal)
    labels, palette = read_mask(tmp_path / "p.png", with_palette=True)
    np.testing.assert_array_equal(labels, m8)
    np.testing.assert_array_equal(palette[:256], pal)
    m16 = (np.arange(20, dtype=np.uint16) * 3000).reshape(4, 5)
    write_mask(tmp_path / "w.png", m16)
    np.testing.assert_array_equal(read_mask(tmp_path / "w.png"), m16)


def test_read_mask_refuses_rgb_and_non_png(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(MaskError, match=r"rgb.png: mode RGB is not a label mask"):
        read_mask(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "m.jpg")
    with pytest.raises(MaskError, match=r"m.jpg: not a PNG file"):
        read_mask(tmp_path / "m.jpg")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(MaskError, match=r"junk.png: cannot read as an image"):
        read_mask(tmp_path / "junk.png")


def test_map_items_reports_a_killed_worker():
    from ._jobs_data import die_on_three

    with pytest.raises(JobError, match="a worker process died"):
        list(map_items(die_on_three, range(8), workers=2, progress=False))


def test_pool_works_after_threaded_kernels_ran_in_the_parent():
    """Worker processes do not inherit the parent's OpenMP / Numba thread pools (a fork after
    Numba's omp layer ran used to kill the workers)."""
    import segkit

    m = np.arange(64, dtype=np.uint8).reshape(8, 8) % 3
    for backend in ("numba", "cpp"):
        segkit.mode_filter(np.repeat(m[None], 4, 0), backend=backend)  # threads in the parent
    out = list(map_items(_filter_numba, [m, m.T], workers=2, progress=False))
    assert len(out) == 2 and all(o.shape == (8, 8) for o in out)


def _filter_numba(m):
    import segkit

    return segkit.mode_filter(m, backend="numba")


@pytest.mark.parametrize("chunksize", [1, 3, 64])
def test_map_items_chunks(chunksize):
    assert sorted(map_items(square, range(10), workers=2, progress=False,
                            chunksize=chunksize)) == [x * x for x in range(10)]
    with pytest.raises(JobError, match=r"^13: ValueError: unlucky") as info:
        list(map_items(square, range(20), workers=2, progress=False, chunksize=chunksize))
    assert info.value.item == 13
