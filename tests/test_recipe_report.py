"""The recipe's report (segkit.recipe.report): a full report.json renders every section and
table in index.html and index.md; a run stopped after the folds renders; the classes the
models did not learn are named with their share of the flags; strings from the data are
escaped; every picture the page shows exists; the page renders in headless Chromium."""
from __future__ import annotations

import copy
import html.parser
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from segkit.errors import InputError, InputTypeError
from segkit.io.atomic import is_temporary
from segkit.palette import palette_for
from segkit.recipe.report import SECTIONS, unlearned_classes, write_report
from .conftest import chromium_path

CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
           "Pedestrian", "Bicyclist"]
#: Out-of-fold IoU: Pole, SignSymbol, Pedestrian and Bicyclist not learned (0.0, None, 0.049).
OOF_IOU = [0.86, 0.71, 0.0, 0.88, 0.55, 0.62, None, 0.08, 0.41, 0.049, 0.0]
UNLEARNED = ["Pole", "SignSymbol", "Pedestrian", "Bicyclist"]
#: Flagged pixels per class: 730 of 1000 in the unlearned classes.
FLAGGED = [40, 60, 300, 50, 40, 30, 200, 20, 30, 150, 80]


def _curve(rng, epochs: int, top: float) -> list[list[float]]:
    return [[e, round(top * (1 - np.exp(-e / 2.5)) + float(rng.normal(0, 0.01)), 4)]
            for e in range(1, epochs + 1)]


def full_report(root: Path) -> dict:
    """A report.json as a finished cpu-preset run on a CamVid-like dataset would write it (two
    mask variants x 3 folds x 2 seeds, test masks, a stage picture on disk)."""
    rng = np.random.default_rng(0)
    models = {}
    for variant, top in (("original", 0.44), ("resampled", 0.46)):
        for seed in (0, 1):
            for fold in range(3):
                curve = _curve(rng, 8, top)
                models[f"swin_cpu_{variant}_s{seed}_fold{fold}"] = {
                    "model": "swin_cpu", "variant": variant, "fold": fold, "seed": seed,
                    "val_mIoU": max(v for _, v in curve), "curve": curve,
                    "seconds": 141.5 + 3 * fold}
    iou = lambda base: [None if v is None else round(min(1.0, v * base), 3)  # noqa: E731
                        for v in OOF_IOU]
    (root / "pictures").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 32), (200, 30, 30)).save(root / "pictures" / "resample_examples.png")
    stages = {name: {"state": state, "seconds": s, "peak_rss_mb": mb, "note": note}
              for name, state, s, mb, note in [
                  ("check", "ran", 2.1, 180.0, ""), ("masks", "reused", 0.0, None, "PNG masks"),
                  ("resample", "ran", 11.4, 240.5, ""), ("folds", "ran", 0.8, 190.2, ""),
                  ("train", "ran", 1790.3, 2210.9, "12 trainings"),
                  ("oof", "ran", 95.2, 1500.0, ""), ("test_inference", "ran", 120.7, 1480.0, ""),
                  ("tune", "ran", 64.0, 900.3, ""), ("audit", "ran", 21.9, 700.0, ""),
                  ("ensembles", "ran", 40.2, 800.0, ""), ("submission", "ran", 3.3, 300.0, ""),
                  ("evaluate", "ran", 9.6, 420.0, "")]}
    return {
        "recipe": {"dir": str(root), "file": "recipe.toml", "preset": "cpu",
                   "settings": {"name": "camvid", "images": "data/train", "folds": 3,
                                "models": ["swin_cpu"], "variants": ["original", "resampled"],
                                "seeds": [0, 1], "crf": {"enabled": True, "filter_size": 5}}},
        "dataset": {"source": "masks", "images": 367, "test_images": 233, "test_masks": True,
                    "classes": CLASSES, "ignore_index": 11, "image_size": [360, 480],
                    "class_pixels": [9_500_000, 13_600_000, 540_000, 17_900_000, 4_100_000,
                                     7_900_000, 610_000, 880_000, 2_300_000, 420_000, 190_000],
                    "ignored_pixels": 870_000},
        "stages": stages,
        "resample": {"changed_pixels": 1_213_000, "changed_share": 0.0190, "ignore_index": 11},
        "folds": {"k": 3, "val_sizes": [123, 122, 122]},
        "models": models,
        "oof": {"miou": 0.3936, "iou": OOF_IOU},
        "tune": {"weights": [0.52, 0.48], "bias": [round(0.1 * (i % 3) - 0.1, 2)
                                                   for i in range(11)],
                 "crf_name": "fitted", "seconds": 64.0,
                 "table": [{"setting": "equal", "holdout_miou": 0.402, "test_miou": 0.341},
                           {"setting": "recipe (equal + convcrf)", "holdout_miou": 0.388,
                            "test_miou": 0.320},
                           {"setting": "tuned", "holdout_miou": 0.417, "test_miou": 0.352}]},
        "audit": {"images": 367, "flagged": 1000, "flagged_share": 0.0502,
                  "flagged_by_class": FLAGGED, "unlearned_classes": UNLEARNED,
                  "worst": ["0001TP_008550", "Seq05VD_f02370", "0016E5_07965"],
                  "page": "audit/index.html"},
        "test": {"steps": {name: {"miou": m, "pixel_acc": a, "iou": iou(m / 0.39), "boot_sd": sd}
                           for name, m, a, sd in [("swin_cpu_resampled_s0", 0.331, 0.801, 0.008),
                                                  ("equal", 0.341, 0.812, 0.007),
                                                  ("equal + crf", 0.338, 0.815, 0.007),
                                                  ("tuned", 0.352, 0.820, 0.006)]},
                 "ablation": {"original": {"0": {"miou": 0.322, "iou": iou(0.82)},
                                           "1": {"miou": 0.318, "iou": iou(0.81)}},
                              "resampled": {"0": {"miou": 0.331, "iou": iou(0.85)},
                                            "1": {"miou": 0.335, "iou": iou(0.86)}}}},
        "submission": {"path": "submission/submission.csv", "rows": 233, "size": 31_120_448},
        "pictures": {"resample examples": "pictures/resample_examples.png"},
    }


def minimal_report(root: Path) -> dict:
    """A run stopped after the folds stage."""
    full = full_report(root)
    stages = {k: full["stages"][k] for k in ("check", "masks", "resample", "folds")}
    return {"recipe": {k: full["recipe"][k] for k in ("dir", "file", "preset")},
            "dataset": full["dataset"], "stages": stages, "resample": full["resample"],
            "folds": full["folds"]}


class _Page(html.parser.HTMLParser):
    """Tags, <img> attributes and <h2> texts of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.imgs, self.h2, self._in_h2 = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        self._in_h2 = False if tag == "h2" else self._in_h2

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)


class _Tables(html.parser.HTMLParser):
    """The text of every table cell of a page: tables -> rows -> cells."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _tables(page: str) -> list:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_bytes().decode("utf-8"))  # valid UTF-8, or this raises
    return page


def _render(tmp_path: Path, report: dict) -> tuple[dict, str, str]:
    paths = write_report(tmp_path / "report", report)
    return paths, paths["html"].read_text("utf-8"), paths["md"].read_text("utf-8")


def test_full_report_has_every_section_and_table(tmp_path):
    paths, page, md = _render(tmp_path, full_report(tmp_path))
    assert _parse(paths["html"]).h2 == list(SECTIONS)
    assert [line[3:] for line in md.splitlines() if line.startswith("## ")] == list(SECTIONS)
    # the same tables in both files
    n_tables = page.count("<table>")
    assert n_tables == len(re.findall(r"^\|( ---:? \|)+$", md, flags=re.M)) >= 14
    for text in ("camvid: segkit recipe report (cpu preset)", "swin_cpu_original_s1_fold2",
                 "Out-of-fold mIoU 0.394", "fold2", "1,213,000", "recipe (equal + convcrf)",
                 "fitted",
                 "0.352", "submission/submission.csv", "233 rows", "Seq05VD_f02370"):
        assert text in page, text
        assert text in md, text
    assert "not run yet" not in page.lower()
    assert ("Chosen setting: CRF fitted; soft-vote weights 0.520, 0.480 (one per ensemble "
            "member); searched in 64.0 s.") in page
    # the ablation: one row per variant, difference to original of the means (0.333 - 0.320)
    ablation = page[page.index("id='ablation-mask-variants'"):]
    assert re.search(r"<td>resampled</td><td class='n'>2</td><td class='n'>0\.333</td>"
                     r".*?<td class='n'>\+0\.013</td>", ablation)
    assert re.search(r"<td>original</td>.*?<td class='n'>\+0\.000</td>", ablation)
    assert set(paths) == {"html", "md", "class_shares", "curves", "oof_iou", "test_iou",
                          "stage_times"}
    assert not [p for p in (tmp_path / "report").rglob("*") if is_temporary(p)]


def test_markdown_carries_the_same_tables(tmp_path):
    """index.md rendered by a CommonMark parser gives the page's tables cell for cell, the
    escaped characters of the data included."""
    markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py (segkit[docs]) "
                                      "renders index.md for the comparison")
    report = full_report(tmp_path)
    report["dataset"]["classes"] = ["a|b", "<c> & d", "*e*", "_f_", "g_h"] + CLASSES[5:]
    _, page, md = _render(tmp_path, report)
    rendered = markdown_it.MarkdownIt("commonmark").enable("table").render(md)
    tables = _tables(page)
    assert len(tables) >= 14
    assert _tables(rendered) == tables
    assert ["0", "a|b", "9,500,000", "16.4%"] in tables[0]


def test_audit_names_the_unlearned_classes_and_their_share_of_flags(tmp_path):
    _, page, md = _render(tmp_path, full_report(tmp_path))
    note = re.search(r"<p class='note'>(.*?)</p>", page).group(1)
    assert "did not learn 4 classes: Pole, SignSymbol, Pedestrian, Bicyclist (" in note
    assert "73.0% of the flags" in note  # (300 + 200 + 150 + 80) / 1000
    assert "measure the models, not the annotations" in note
    assert "73.0% of the flags" in md
    # without the runner's list, the report finds them from the out-of-fold IoU
    report = full_report(tmp_path)
    del report["audit"]["unlearned_classes"]
    _, page2, _ = _render(tmp_path / "b", report)
    assert re.search(r"<p class='note'>(.*?)</p>", page2).group(1) == note
    # every class learned: no warning, a plain statement
    report["oof"]["iou"] = [0.5] * 11
    _, page3, _ = _render(tmp_path / "c", report)
    assert "class='note'" not in page3 and "None: every class reached" in page3
    # no out-of-fold IoU: the runner's list, and an empty one tells nothing
    del report["oof"]
    report["audit"]["unlearned_classes"] = ["Pole"]
    _, page4, _ = _render(tmp_path / "d", report)
    assert "The models did not learn 1 class: Pole (" in page4 and "30.0% of the flags" in page4
    report["audit"]["unlearned_classes"] = []
    _, page5, _ = _render(tmp_path / "e", report)
    assert "Unknown: no out-of-fold IoU" in page5 and "class='note'" not in page5


def test_minimal_report_after_folds_renders(tmp_path):
    paths, page, md = _render(tmp_path, minimal_report(tmp_path))
    h2 = _parse(paths["html"]).h2
    assert h2[:4] == ["Dataset", "Stages", "Mask resampling", "Folds"]
    assert "Ablation: mask variants" not in h2 and "Stage pictures" not in h2
    assert "Settings" not in h2
    for title in ("Models trained", "Out-of-fold IoU", "Tuning", "Label audit", "Test set",
                  "Submission"):
        section = page[page.index(f"<h2>{title}</h2>"):]
        assert section.split("</section>")[0].strip().endswith("<p>Not run yet.</p>"), title
    assert md.count("Not run yet.") == 6
    # a skipped stage says so, with its note
    report = minimal_report(tmp_path)
    report["stages"]["tune"] = {"state": "skipped", "seconds": 0.0, "peak_rss_mb": None,
                                "note": "one model: nothing to tune"}
    _, page2, _ = _render(tmp_path / "b", report)
    assert "<p>Skipped: one model: nothing to tune</p>" in page2
    # nothing at all: a page with a title
    paths3, page3, _ = _render(tmp_path / "c", {})
    assert "<h1>dataset: segkit recipe report (unknown preset)</h1>" in page3
    assert set(paths3) == {"html", "md"}


def test_without_test_masks_the_test_split_is_not_scored(tmp_path):
    report = full_report(tmp_path)
    report["dataset"]["test_masks"] = False
    del report["test"]
    _, page, _ = _render(tmp_path, report)
    assert "No test masks: the test split is not scored." in page
    assert "Ablation: mask variants" not in page


def test_ablation_per_class_and_without_original(tmp_path):
    report = full_report(tmp_path)
    _, page, _ = _render(tmp_path, report)
    ablation = _tables(page[page.index("id='ablation-mask-variants'"):])[1]
    assert ablation[0] == ["class", "original (mean IoU)", "resampled (mean IoU)",
                           "resampled - original"]
    assert ablation[1] == ["Sky", "0.701", "0.736", "+0.035"]  # 0.86 * (.82+.81)/2 -> .85/.86
    assert ablation[7] == ["SignSymbol", "n/a", "n/a", "n/a"]
    abl = report["test"]["ablation"]
    report["test"]["ablation"] = {"resampled": abl["resampled"], "audited": abl["original"]}
    _, page, _ = _render(tmp_path / "b", report)
    assert "No 'original' variant was trained" in html.unescape(page)
    rows = _tables(page[page.index("id='ablation-mask-variants'"):])[0]
    assert [r[-1] for r in rows[1:]] == ["n/a", "n/a"]
    # one variant: the spread over seeds, no ablation
    report["test"]["ablation"] = {"resampled": abl["resampled"]}
    _, page, _ = _render(tmp_path / "c", report)
    assert "Ablation: mask variants" not in page and "<h3>Spread over seeds</h3>" in page


def test_without_class_names_classes_are_numbered(tmp_path):
    report = {"oof": {"miou": 0.4, "iou": [0.9, 0.01]},
              "audit": {"images": 4, "flagged": 10, "flagged_share": 0.01,
                        "flagged_by_class": [2, 8]}}
    _, page, _ = _render(tmp_path, report)
    assert "The models did not learn 1 class: class 1 (" in page and "80.0% of the flags" in page


@pytest.mark.parametrize("iou, expected", [
    ([0.9, 0.5, 0.7], []),
    ([0.9, 0.049, 0.05], ["b"]),              # 0.05 itself is learned
    ([None, 0.0, float("nan")], ["a", "b", "c"]),
    ([1.0, None, 0.3], ["b"]),
])
def test_unlearned_classes_hand_made(iou, expected):
    assert unlearned_classes(iou, ["a", "b", "c"]) == expected


def test_unlearned_classes_threshold_and_bad_input():
    assert unlearned_classes([0.2, 0.1], ["a", "b"], threshold=0.15) == ["b"]
    assert unlearned_classes([], []) == []
    with pytest.raises(InputError, match="2 values for 3 classes"):
        unlearned_classes([0.2, 0.1], ["a", "b", "c"])
    with pytest.raises(InputError, match="threshold.*1.5"):
        unlearned_classes([0.2], ["a"], threshold=1.5)
    with pytest.raises(InputTypeError, match="iou"):
        unlearned_classes(0.2, ["a"])


def test_strings_from_the_data_are_escaped(tmp_path):
    report = full_report(tmp_path)
    evil = ["<script>alert('x')</script>", "A & B", 'say "hi"', "x|y*z_", "Ñandú 雨"] + CLASSES[5:]
    report["dataset"]["classes"] = evil
    report["audit"]["unlearned_classes"] = ["<script>alert('x')</script>"]
    report["models"] = {"<b>run</b>": dict(next(iter(report["models"].values())),
                                           variant="<i>v</i>")}
    report["pictures"] = {"a 'quoted' <name>": "pictures/resample_examples.png"}
    report["recipe"]["settings"]["name"] = "</title><h1>x"
    paths, page, md = _render(tmp_path, report)
    parsed = _parse(paths["html"])
    assert "script" not in parsed.tags and "b" not in parsed.tags and "i" not in parsed.tags
    assert parsed.tags.count("h1") == 1 and parsed.tags.count("title") == 1
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "A &amp; B" in page and "say &quot;hi&quot;" in page
    assert "Ñandú 雨" in page and "Ñandú 雨" in md  # UTF-8 whatever the locale
    assert any(img["alt"].startswith("a 'quoted' <name>") for img in parsed.imgs)
    # Markdown: no raw tag, and a pipe cannot split a table cell
    assert "<script>" not in md and "<b>" not in md
    assert "x\\|y\\*z\\_" in md


def test_every_img_src_exists(tmp_path):
    report = full_report(tmp_path)
    paths, _, md = _render(tmp_path, report)
    imgs = _parse(paths["html"]).imgs
    assert len(imgs) == 6  # 5 drawn + the stage's own picture
    for img in imgs:
        assert img["alt"]
        target = paths["html"].parent / unquote(img["src"])
        assert target.is_file(), img["src"]
        assert Image.open(target).format == "PNG"
    for src in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (paths["md"].parent / unquote(src)).is_file(), src
    # a stage picture that is not on disk is named, not linked
    os.remove(tmp_path / "pictures" / "resample_examples.png")
    paths, page, _ = _render(tmp_path, report)
    assert len(_parse(paths["html"]).imgs) == 5
    assert "the picture pictures/resample_examples.png is missing" in page


def test_bad_report_is_refused_naming_the_key(tmp_path):
    with pytest.raises(InputTypeError, match="must be a dict"):
        write_report(tmp_path, [1, 2])
    report = full_report(tmp_path)
    report["oof"]["iou"] = report["oof"]["iou"][:-1]
    with pytest.raises(InputError, match="oof.iou has 10 values for 11 classes"):
        write_report(tmp_path / "r", report)
    report = full_report(tmp_path)
    report["tune"] = [0.5, 0.5]
    with pytest.raises(InputError, match="'tune' must be an object"):
        write_report(tmp_path / "r", report)
    report = full_report(tmp_path)
    report["models"]["swin_cpu_original_s0_fold0"] = 0.43
    with pytest.raises(InputError, match="models.swin_cpu_original_s0_fold0 must be an object"):
        write_report(tmp_path / "r", report)
    report = full_report(tmp_path)
    report["models"]["swin_cpu_original_s0_fold0"]["curve"] = [1, 0.2, 2, 0.3]
    with pytest.raises(InputError, match="models.swin_cpu_original_s0_fold0.curve must be"):
        write_report(tmp_path / "r", report)
    report = copy.deepcopy(full_report(tmp_path))
    report["test"]["steps"]["equal"]["iou"] = [0.5] * 12
    with pytest.raises(InputError, match="test.steps.equal.iou has 12 values"):
        write_report(tmp_path / "r", report)


def test_page_renders_in_headless_chromium(tmp_path):
    """The page in a real browser: a screenshot that is not blank, its pictures loaded."""
    browser = chromium_path()
    if browser is None:
        if os.environ.get("CI"):  # CI installs it (make system-deps): its absence is a failure
            pytest.fail("chromium is not installed; .ci/run installs it with make system-deps")
        pytest.skip("chromium is not installed (apt-get install chromium, or make system-deps)")
    paths = write_report(tmp_path / "report", full_report(tmp_path))
    shot = tmp_path / "page.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--no-first-run", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1200,2400", paths["html"].as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.is_file(), "chromium wrote no screenshot"
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2400, 1200)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200  # not blank
    # the class-share picture loaded: its bars in the exact class colours (a page whose
    # pictures are missing has many colours too, from anti-aliased text, but none of these)
    pal, pixels = palette_for(11), img.reshape(-1, 3)
    for c in (1, 3, 5):  # Building, Road, Tree
        assert (pixels == pal[c]).all(axis=1).sum() > 500, CLASSES[c]
