"""`zest eval` (training/vision: data, features, metrics, report, evaluate): numbers checked by hand."""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from tests.images import png
from zest.models.errors import InvalidInput
from zest.training.vision.data import holdout_split, load_image_folder
from zest.training.vision.evaluate import evaluate_folder, write_outputs
from zest.training.vision.features import FeatureCache
from zest.training.vision.metrics import calibration, summarize
from zest.training.vision.report import format_eval, read_confusion, read_reliability

COLOURS = {"red": (230, 20, 20), "green": (20, 200, 30), "blue": (20, 30, 230)}


class ColourEncoder:
    """A fake CLIP whose answers are known by construction: an image's feature is its mean colour, a text's
    is the colour word it contains. So an image is predicted as the colour it is painted."""

    model_id = "fake-colours"
    logit_scale = 50.0
    dim = 3
    preprocess_cfg = {"size": 8}

    def __init__(self):
        self.images_encoded = 0

    def encode_images(self, images):
        self.images_encoded += len(images)
        f = np.stack([np.asarray(img.convert("RGB"), dtype=np.float32).mean(axis=(0, 1)) for img in images])
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    def encode_texts(self, texts):
        axis = {"red": 0, "green": 1, "blue": 2}
        out = np.zeros((len(texts), 3), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, next(v for k, v in axis.items() if k in t)] = 1.0
        return out


def _img(path, colour, size=(24, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(COLOURS[colour], size))


@pytest.fixture()
def tiny_folder(tmp_path):
    """7 readable images: red/ holds 2 red and 1 blue, green/ 2 green, blue/ 1 blue and 1 red; plus a corrupt
    PNG and a text file (both unreadable), a hidden file (ignored) and classes.yaml renaming one folder."""
    root = tmp_path / "data"
    for folder, colours in {"red_ones": ["red", "red", "blue"], "green": ["green", "green"],
                            "blue": ["blue", "red"]}.items():
        for i, c in enumerate(colours):
            _img(root / folder / f"{i}_{c}.png", c)
    _img(root / "red_ones" / "broken.png", "red", size=(64, 64))
    data = (root / "red_ones" / "broken.png").read_bytes()
    (root / "red_ones" / "broken.png").write_bytes(data[: len(data) // 2])  # truncated
    (root / "green" / "notes.txt").write_text("not an image")
    (root / "green" / ".DS_Store").write_bytes(b"\0\0")
    (root / "classes.yaml").write_text("red_ones: red\n")
    return root


def test_folder_scan_and_classes_yaml(tiny_folder):
    folder = load_image_folder(tiny_folder)
    assert folder.names == ["blue", "green", "red"]  # folders sorted; red_ones renamed by classes.yaml
    assert folder.counts() == [2, 3, 4]  # files, readable or not; the hidden one is not a file of the class
    (tiny_folder / "classes.yaml").write_text("red_ones: {name: red, prompts: [a photo of something red]}\n"
                                              "green: blue\n")
    with pytest.raises(InvalidInput, match="both class 'blue'"):
        load_image_folder(tiny_folder)
    (tiny_folder / "classes.yaml").write_text("purple: violet\n")
    with pytest.raises(InvalidInput, match="'purple' is not a class folder"):
        load_image_folder(tiny_folder)
    with pytest.raises(InvalidInput, match="not a directory"):
        load_image_folder(tiny_folder / "nope")


def test_eval_numbers_equal_a_hand_computation(tiny_folder, tmp_path):
    folder = load_image_folder(tiny_folder)
    report = evaluate_folder(folder, ColourEncoder(), templates="photo", progress=False)
    # predictions by construction: blue/ -> [blue, red]; green/ -> [green, green]; red/ -> [blue, red, red]
    assert report["n_images"] == 7
    assert report["top1"] == pytest.approx(5 / 7)
    assert report["top5"] == 1.0  # 3 classes: the true one is always among the top 5
    assert report["confusion"] == [[1, 0, 1],   # true blue:  1 right, 1 taken for red
                                   [0, 2, 0],   # true green: both right
                                   [1, 0, 2]]   # true red:   2 right, 1 taken for blue
    rows = {r["class"]: r for r in report["per_class"]}
    assert (rows["blue"]["precision"], rows["blue"]["recall"], rows["blue"]["support"]) == (0.5, 0.5, 2)
    assert (rows["green"]["precision"], rows["green"]["recall"], rows["green"]["support"]) == (1.0, 1.0, 2)
    assert rows["red"]["precision"] == pytest.approx(2 / 3) and rows["red"]["recall"] == pytest.approx(2 / 3)
    assert rows["red"]["f1"] == pytest.approx(2 / 3)
    assert report["balanced_accuracy"] == pytest.approx(float((Fraction(1, 2) + 1 + Fraction(2, 3)) / 3))
    assert {(c["true"], c["predicted"], c["count"]) for c in report["confusions"]} == {("blue", "red", 1),
                                                                                    ("red", "blue", 1)}
    # unreadable files are listed with the reason, and skipped
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"red_ones/broken.png", "green/notes.txt"}
    assert "truncated" in skipped["red_ones/broken.png"] and "not a decodable image" in skipped["green/notes.txt"]
    # every shipped set scores the same here (texts carry the colour word); ties go to the fewest templates
    assert {t["name"] for t in report["template_sets"]} == {"photo", "imagenet-simple", "cifar", "imagenet"}
    assert all(t["top1"] == pytest.approx(5 / 7) for t in report["template_sets"])
    assert report["best_template_set"] == "photo"
    table = format_eval(report)
    assert "top-1 71.4%" in table and "red_ones/broken.png" in table and "<- best" in table


def test_top_k_and_ties_by_hand():
    # image 0: true class 2, scores tie between classes 0 and 1 -> ranking 0, 1, 2 (class order on ties)
    probs = np.array([[0.4, 0.4, 0.2], [0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    s = summarize(probs, [2, 2, 1], ["a", "b", "c"], k=2)
    assert s["top1"] == pytest.approx(1 / 3) and s["top2"] == pytest.approx(2 / 3)
    assert [r["precision"] for r in s["per_class"]] == [0.0, None, 1.0]  # b never predicted: undefined


def test_calibration_error_by_hand():
    # confidences (top-1 probability) and whether top-1 is right: 0.9 yes, 0.6 no, 0.7 yes, 0.55 yes, 0.5 yes (a tie
    # goes to class 0, the true one). 4 bins (lo, hi]: (0.75, 1] {0.9}, (0.5, 0.75] {0.6, 0.7, 0.55}, (0.25, 0.5] {0.5}
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.5, 0.5]])
    c = calibration(probs, [0, 1, 1, 1, 0], n_bins=4)
    assert [b["count"] for b in c["bins"]] == [0, 1, 3, 1]
    assert c["bins"][2]["accuracy"] == pytest.approx(2 / 3) and c["bins"][2]["confidence"] == pytest.approx(1.85 / 3)
    # 1/5 |1 - 0.9| + 3/5 |2/3 - 1.85/3| + 1/5 |1 - 0.5|
    assert c["ece"] == pytest.approx(0.02 + 0.03 + 0.1)
    assert calibration(np.array([[1.0, 0.0]]), [0])["ece"] == 0.0  # sure and right: perfectly calibrated
    assert calibration(np.zeros((0, 2)), [])["ece"] is None


def test_report_files_show_the_right_counts(tiny_folder, tmp_path):
    folder = load_image_folder(tiny_folder)
    report = evaluate_folder(folder, ColourEncoder(), templates="photo", compare=False, progress=False)
    files = write_outputs(report, folder, tmp_path / "out", n_failures=10)
    png = read_confusion(files["confusion_png"])
    assert png == {"classes": ["blue", "green", "red"], "confusion": report["confusion"]}
    with Image.open(files["confusion_png"]) as img:
        assert img.width > 3 * 14 and img.height > 3 * 14
    page = open(files["failures_html"], encoding="utf-8").read()
    summary = re.search(r'data-wrong="(\d+)" data-images="(\d+)" data-shown="(\d+)"', page).groups()
    assert summary == ("2", "7", "2")
    cards = re.findall(r'<figure class="failure">(.*?)</figure>', page, re.S)
    assert len(cards) == 2
    assert all("data:image/jpeg;base64," in c and c.count("<li") == 3 for c in cards)
    assert "blue/1_red.png" in page and "red_ones/2_blue.png" in page and "true: <b>blue</b>" in page
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["top1"] == report["top1"] and saved["files"] == files


def test_feature_cache_skips_encoding_the_second_time(tiny_folder, tmp_path):
    folder = load_image_folder(tiny_folder)
    enc = ColourEncoder()
    first = evaluate_folder(folder, enc, compare=False, progress=False,
                            cache=FeatureCache(tmp_path, enc.model_id, "fp"))
    assert enc.images_encoded == 7 and first["encoded_images"] == 7
    again = evaluate_folder(folder, enc, compare=False, progress=False,
                            cache=FeatureCache(tmp_path, enc.model_id, "fp"))
    assert enc.images_encoded == 7 and again["encoded_images"] == 0  # nothing re-encoded
    assert again["confusion"] == first["confusion"] and len(again["skipped"]) == 2
    # another fingerprint (retrained weights under the same id) is another cache
    evaluate_folder(folder, enc, compare=False, progress=False, cache=FeatureCache(tmp_path, enc.model_id, "fp2"))
    assert enc.images_encoded == 14


def test_holdout_split_is_stratified_and_seeded():
    labels = np.repeat([0, 1, 2], [8, 2, 1])
    train, held = holdout_split(labels, 0.25, seed=3)
    assert np.bincount(labels[held], minlength=3).tolist() == [2, 1, 0]  # one-image class: training only
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(11))
    again = holdout_split(labels, 0.25, seed=3)
    assert train.tolist() == again[0].tolist() and held.tolist() == again[1].tolist()


def test_cli_eval_with_zest_tiny(tmp_path, capsys):
    """`zest eval` end to end in process, on a few generated scenes and a corrupt file."""
    from zest.service.cli import main
    from zest.training.embedded import scenes as S

    combos = [("red", "circle"), ("blue", "square"), ("green", "triangle")]
    root = tmp_path / "shapes"
    for i, spec in enumerate(S.sample_spec(5, j, combos, stream=3) for j in range(9)):
        path = root / f"{spec.colour}_{spec.shape}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        S.render(spec).save(path)
    (root / "red_circle" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "report"
    code = main(["eval", str(root), "--model", "zest-tiny", "--device", "cpu", "--templates", "photo", "--no-compare",
                 "--out", str(out), "--json", "--no-progress", "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "zest-tiny" and report["classes"] == ["blue square", "green triangle", "red circle"]
    assert report["n_images"] == 9 and report["top1"] >= 8 / 9
    assert [s["path"] for s in report["skipped"]] == ["red_circle/truncated.jpg"]
    assert all((out / f).is_file() for f in ("report.json", "confusion.png", "reliability.png", "failures.html"))
    # the calibration error, by hand from the per-image top-1 probabilities: 15 bins (lo, hi]
    conf = [p["top3"][0][1] for p in report["predictions"]]
    right = [p["top3"][0][0] == p["true"] for p in report["predictions"]]
    bins: dict[int, list[int]] = {}
    for i, c in enumerate(conf):
        bins.setdefault(max(0, math.ceil(c * 15) - 1), []).append(i)
    ece = sum(len(ix) / len(conf) * abs(np.mean([right[i] for i in ix]) - np.mean([conf[i] for i in ix]))
              for ix in bins.values())
    assert report["scoring"] == "softmax" and report["calibration"]["ece"] == pytest.approx(ece, abs=1e-9)
    assert read_reliability(out / "reliability.png") == report["calibration"]  # the PNG shows these bins
    assert main(["eval", str(root), "--model", "zest-tiny", "--device", "cpu", "--templates", "photo", "--no-compare",
                 "--no-progress", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "again")]) == 0
    assert f"expected calibration error {report['calibration']['ece']:.3f}" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
