"""Ultralytics ``data.yaml`` datasets and unlabelled images, for ``inscope eval`` and
``inscope train``: real files written here (16-bit PNG images from the project's simulator,
YOLO label files), real detectors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from inscope.cli import main
from inscope.detector.datasets import load_dataset, simulated_samples


def _write_split(root, split, samples):
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    for i, s in enumerate(samples):
        h, w = s.image.shape
        cv2.imwrite(str(root / "images" / split / f"f{i}.png"), s.image)
        b = s.boxes + 0.5  # YOLO's continuous coordinates count pixel k as [k, k + 1)
        rows = [f"0 {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} "
                f"{(y1 - y0) / h:.6f}" for x0, y0, x1, y1 in b]
        (root / "labels" / split / f"f{i}.txt").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def yolo(tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo") / "cells"
    train = simulated_samples(3, seed=900100)
    val = simulated_samples(2, seed=900200)
    _write_split(root, "train", train)
    _write_split(root, "val", val)
    yaml = root / "data.yaml"
    yaml.write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: nucleus\n")
    return yaml, train, val


def test_data_yaml_reads_the_asked_split(yolo):
    yaml, train, val = yolo
    got = load_dataset(yaml)  # default: the val split
    assert [s.name for s in got] == ["f0.png", "f1.png"]
    for s, ref in zip(got, val, strict=True):
        np.testing.assert_array_equal(s.image, ref.image)
        np.testing.assert_allclose(s.boxes, ref.boxes, atol=0.01)
        assert s.class_names == ("nucleus",)
    assert len(load_dataset(yaml, split="train")) == len(train)
    with pytest.raises(ValueError, match="no 'test' entry"):
        load_dataset(yaml, split="test")


def test_data_yaml_with_a_list_file_and_missing_split(tmp_path, yolo):
    yaml, _, val = yolo
    root = yaml.parent
    (root / "val.txt").write_text("images/val/f1.png\n")
    other = root / "list.yaml"
    other.write_text(f"path: {root}\nval: val.txt\nnames: [nucleus]\n")
    got = load_dataset(other)
    assert len(got) == 1 and len(got[0].boxes) == len(val[1].boxes)
    bad = root / "bad.yaml"
    bad.write_text("path: .\nval: images/nowhere\nnames: [a]\n")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(bad)


def test_eval_accepts_data_yaml(yolo, tmp_path, capsys):
    yaml, _, val = yolo
    out = tmp_path / "e.json"
    rc = main(["eval", str(yaml), "--model", "classical", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["n_gt"] == sum(len(s.boxes) for s in val) > 0


def test_eval_on_unlabelled_images_says_so_and_fails(tmp_path, capsys):
    img = simulated_samples(1, seed=900300)[0].image
    d = tmp_path / "plain"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), img)
    cv2.imwrite(str(d / "b.png"), img)
    rc = main(["eval", str(d), "--model", "classical"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "2 image(s)" in err and "have no labels" in err and "AP cannot be measured" in err


@pytest.mark.slow
def test_train_accepts_data_yaml(yolo, tmp_path):
    yaml, train, _ = yolo
    out = tmp_path / "m.onnx"
    rc = main(["train", str(yaml), "--finetune", "--steps", "3", "--batch", "2",
               "--crop", "128", "--out", str(out), "--no-latency", "--threads", "2"])
    assert rc == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert any(f"{len(train)} annotated images" in s and "data.yaml" in s
               for s in card["training"]["data"])
