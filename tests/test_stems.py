"""segkit.io.stems: the one set of rules for finding a file by its stem (suffixes in any case,
hidden files and folders skipped, stems flattened with '+', two files of one stem an error
naming both, listings sorted by path), and every caller following it (images: io.images, the
crf job, mmseg inference; masks: evaluate/tune/audit, resample, kfold_masks)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from segkit.errors import DataError, InputError, PathNotFoundError
from segkit.io import stems
from segkit.io.stems import IMAGES, MASKS, FileKind, StemLookupError, find_stem, list_stems


def touch(root: Path, *names: str) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_stems_flatten_folders_and_drop_the_suffix(tmp_path):
    touch(tmp_path, "b 1/c d.JPG", "x+y.png", "top.webp", "deep/er/z.tif")
    found = list_stems(tmp_path)
    assert found == {"b 1+c d": tmp_path / "b 1" / "c d.JPG", "deep+er+z":
                     tmp_path / "deep" / "er" / "z.tif", "top": tmp_path / "top.webp",
                     "x+y": tmp_path / "x+y.png"}


def test_sorted_by_path_folder_by_folder(tmp_path):
    """Sorted as sorted(rglob) sorts: part by part, so 'a/x' before 'b' before 'z'."""
    touch(tmp_path, "z.png", "b.png", "a/x.png", "a-b.png", "B.png")
    assert list(list_stems(tmp_path, MASKS)) == ["B", "a+x", "a-b", "b", "z"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_stems(tmp_path, MASKS).values()] \
        == [p.relative_to(tmp_path).as_posix() for p in sorted(tmp_path.rglob("*.png"))]


def test_suffixes_match_in_any_case(tmp_path):
    touch(tmp_path, "a.JPG", "b.Png", "c.jpeg", "d.txt", "e.PNG")
    assert list(list_stems(tmp_path)) == ["a", "b", "c", "e"]
    assert list(list_stems(tmp_path, MASKS)) == ["b", "e"]
    assert find_stem(tmp_path, "b", MASKS).name == "b.Png"
    assert find_stem(tmp_path, "e", MASKS).name == "e.PNG"
    assert find_stem(tmp_path, "a").name == "a.JPG"


def test_hidden_files_folders_and_temporaries_are_never_listed(tmp_path):
    touch(tmp_path, "a.png", ".b.png", ".cache/c.png", "sub/.hidden/d.png", "sub/e.png",
          ".f.png.tmp-1-abcd", "sub/.g.tmp-1-abcd.png")
    assert list(list_stems(tmp_path, MASKS)) == ["a", "sub+e"]
    with pytest.raises(PathNotFoundError):
        find_stem(tmp_path, "b", MASKS)


@pytest.mark.parametrize("first, second", [("a.jpg", "a.png"), ("a.png", "a.PNG"),
                                           ("d/x.png", "d+x.png")])
def test_two_files_of_one_stem_are_an_error_naming_both(tmp_path, first, second):
    touch(tmp_path, first, second)
    with pytest.raises(StemLookupError) as err:
        list_stems(tmp_path)
    text = str(err.value)
    assert "two images map to" in text
    assert str(Path(first)) in text and str(Path(second)) in text


def test_find_refuses_both_spellings_and_names_what_it_looked_for(tmp_path):
    touch(tmp_path, "d/x.png")
    assert find_stem(tmp_path, "d+x", MASKS) == tmp_path / "d" / "x.png"
    assert find_stem(tmp_path, "d/x", MASKS) == tmp_path / "d" / "x.png"
    touch(tmp_path, "d+x.png")
    with pytest.raises(StemLookupError, match=r"two masks map to 'd\+x': d/x.png and d\+x.png"):
        find_stem(tmp_path, "d+x", MASKS)
    with pytest.raises(PathNotFoundError, match=re.escape(
            f"no mask for 'e+y' under {tmp_path} (looked for e/y.png and e+y.png, in any "
            "case)")):
        find_stem(tmp_path, "e+y", MASKS)
    with pytest.raises(PathNotFoundError, match=r"looked for q.jpg; suffixes .jpg, .jpeg, "):
        find_stem(tmp_path, "q")


def test_find_takes_suffixes_in_order(tmp_path):
    touch(tmp_path, "a.png", "a.jpg")
    assert find_stem(tmp_path, "a").suffix == ".jpg"
    assert find_stem(tmp_path, "a", FileKind("image", (".png", ".jpg"))).suffix == ".png"


def test_unflattenable_refused_and_empty_folders(tmp_path):
    touch(tmp_path / "n", "d/x+y.png")
    with pytest.raises(StemLookupError, match=r"mask 'd/x\+y.png': .*contains '\+'"):
        list_stems(tmp_path / "n", MASKS)
    refusing = FileKind("mask", (".png",), refuse=stems.NOT_MASKS, error=InputError,
                        refused="{path}: not a PNG mask{more}")
    touch(tmp_path / "r", "a.png", "b.jpg", "c.GIF", "notes.txt")
    with pytest.raises(InputError, match=r"b.jpg: not a PNG mask \(and 1 more\)$"):
        list_stems(tmp_path / "r", refusing)
    (tmp_path / "e").mkdir()
    with pytest.raises(StemLookupError, match=r"no image \(.jpg, .jpeg, .png"):
        list_stems(tmp_path / "e")
    assert list_stems(tmp_path / "e", allow_empty=True) == {}
    with pytest.raises(PathNotFoundError, match="masks folder .* does not exist"):
        list_stems(tmp_path / "nope", MASKS)
    assert issubclass(StemLookupError, DataError)


# ---- every caller follows the rules; what differs is a parameter --------------------------
def _image_listers():
    from segkit.io.images import ImageLookupError, list_images
    from segkit.jobs.crf import CrfJobError, index_images

    out = [("io.images.list_images", list_images, ImageLookupError),
           ("jobs.crf.index_images", index_images, CrfJobError)]
    try:
        from segkit.mmseg.inference import list_images as infer_list
    except ImportError:  # pragma: no cover - the mmseg extra is part of the dev install
        return out
    return out + [("mmseg.inference.list_images", lambda r: {k: Path(v) for k, v in
                                                             infer_list(r).items()},
                   ImageLookupError)]


def _mask_listers():
    from segkit.jobs._kfold_masks import list_mask_files
    from segkit.jobs._common import DatasetError
    from segkit.jobs._stores import mask_index
    from segkit.jobs.resample import list_masks

    def by_path(fn):
        return lambda root: {stems.stem_of_path(rel): Path(root) / rel for rel in fn(root)}

    return [("jobs._stores.mask_index", mask_index, InputError),
            ("jobs.resample.list_masks", by_path(list_masks), DatasetError),
            ("jobs._kfold_masks.list_mask_files", by_path(list_mask_files), DatasetError)]


def test_every_image_lister_gives_the_same_stems_in_the_same_order(tmp_path):
    touch(tmp_path, "z.JPG", "b/Y.png", ".cache/q.jpg", "a.webp", "notes.txt")
    expected = list_stems(tmp_path, IMAGES)
    for name, lister, _ in _image_listers():
        found = lister(tmp_path)
        assert list(found.items()) == list(expected.items()), name


def test_every_mask_lister_gives_the_same_stems_in_the_same_order(tmp_path):
    touch(tmp_path, "z.PNG", "b/y.png", ".cache/q.png", "a.png", "sub/.t.png.tmp-1-ab",
          "labels.json")
    expected = list_stems(tmp_path, MASKS)
    assert list(expected) == ["a", "b+y", "z"]
    for name, lister, _ in _mask_listers():
        assert list(lister(tmp_path).items()) == list(expected.items()), name


def test_every_lister_refuses_two_files_of_one_stem_naming_both(tmp_path):
    touch(tmp_path, "d/x.png", "d+x.png")
    for name, lister, error in _image_listers() + _mask_listers():
        with pytest.raises(error) as err:
            lister(tmp_path)
        assert "d/x.png" in str(err.value) and "d+x.png" in str(err.value), name
    from segkit.io.images import find_image
    from segkit.jobs._stores import find_mask

    for finder in (find_image, find_mask):
        with pytest.raises((StemLookupError, InputError), match=r"d/x.png and .*d\+x.png"):
            finder(tmp_path, "d+x")
