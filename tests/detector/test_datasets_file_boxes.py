"""YOLO, Pascal VOC and COCO boxes get the npz's checks - one line naming the file, the
box and the fix, or a warning - and the annotation shapes those tools write are read.

Every case here once scored without a word or ended in a traceback: YOLO labels written
in pixels, a negative width, NaN or swapped VOC corners scored as boxes no detection can
match (a silent AP of 0), a YOLO segment line read as ``class cx cy w h``, a COCO
annotation with only a ``segmentation`` a ``KeyError``, a COCO image in another folder
"[Errno 2]" without the JSON's name, images without a mask left out unsaid.
"""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
from _support import refused_in_one_line

from inscope.detector.datasets import load_dataset

H, W = 64, 96
#: two boxes in the files' [k, k + 1) pixels: x0, y0, x1, y1
BOXES = np.array([[10, 20, 30, 36], [40, 8, 60, 30]], np.float64)


def _png(path, shape=(H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, shape, np.uint8))


def _error(path) -> str:
    return refused_in_one_line(load_dataset, path)


def _yolo(tmp_path, lines: list[str]):
    _png(tmp_path / "images" / "a.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def _yolo_line(b, w=W, h=H) -> str:
    x0, y0, x1, y1 = b
    return f"0 {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}"


@pytest.mark.parametrize("lines,words", [
    # pixels where YOLO wants fractions of the image's size
    ([_yolo_line(b, 1, 1) for b in BOXES], ["a.txt", "2 of 2 lines", "outside [0, 1]",
                                            "look like pixels", "line 1",
                                            f"width ({W})", f"height ({H})"]),
    ([_yolo_line(BOXES[0]), "0 0.5 0.5 -0.1 0.2"], ["a.txt", "positive width and height",
                                                    "1 of 2", "line 2", "w and h > 0"]),
    (["0 nan 0.5 0.1 0.1"], ["a.txt", "finite", "line 1"]),
    (["0.5 0.5 0.5 0.1 0.1"], ["a.txt", "line 1", "class 0.5", "whole number"]),
    (["0 0.5 0.5 0.1"], ["a.txt", "line 1 has 4 numbers", "class cx cy w h"]),
], ids=["pixels", "negative-width", "nan", "fractional-class", "four-numbers"])
def test_impossible_yolo_lines_are_one_line_naming_file_line_and_fix(tmp_path, lines,
                                                                      words):
    msg = _error(_yolo(tmp_path, lines))
    for w in words:
        assert w in msg, (w, msg)


def test_a_yolo_segment_line_is_read_as_the_box_round_its_points(tmp_path):
    # Ultralytics' segmentation labels: class x1 y1 x2 y2 ... (fractions of the size)
    lines = []
    for x0, y0, x1, y1 in BOXES:
        pts = [(x0, (y0 + y1) / 2), ((x0 + x1) / 2, y0), (x1, (y0 + y1) / 2),
               ((x0 + x1) / 2, y1)]
        lines.append("0 " + " ".join(f"{x / W} {y / H}" for x, y in pts))
    s = load_dataset(_yolo(tmp_path, lines))[0]
    assert np.allclose(s.boxes, BOXES - 0.5, atol=1e-4)


def _voc(tmp_path, objects: list[tuple]) -> str:
    _png(tmp_path / "a.png")
    objs = "".join(f"<object><name>n</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                   f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
                   for a, b, c, d in objects)
    (tmp_path / "a.xml").write_text(f"<annotation><filename>a.png</filename>{objs}"
                                    "</annotation>")
    return tmp_path


@pytest.mark.parametrize("objects,words", [
    ([(11, 21, 30, 36), (60, 9, 41, 30)], ["a.xml", "1 of 2", "object 2",
                                            "[60.0, 9.0, 41.0, 30.0]", "xmin <= xmax"]),
    ([(11, 21, "abc", 36)], ["a.xml", "<xmax>", "'abc'", "not a number"]),
], ids=["xmax-left-of-xmin", "text"])
def test_impossible_voc_boxes_are_one_line_naming_file_object_and_fix(tmp_path, objects,
                                                                       words):
    msg = _error(_voc(tmp_path, objects))
    for w in words:
        assert w in msg, (w, msg)


def test_a_one_pixel_voc_box_is_kept_and_one_outside_the_image_said(tmp_path, caplog):
    # xmin == xmax is one pixel (1-based, inclusive), not an empty box
    with caplog.at_level(logging.WARNING):
        s = load_dataset(_voc(tmp_path, [(11, 21, 11, 21), (501, 9, 530, 30)]))[0]
    assert np.allclose(s.boxes[0], [9.5, 19.5, 10.5, 20.5])
    assert "1 of 2 boxes lie wholly outside" in caplog.text
    assert "object 2" in caplog.text


def _coco(tmp_path, anns: list[dict], images: list[dict] | None = None):
    _png(tmp_path / "a.png")
    images = images or [{"id": 1, "file_name": "a.png", "width": W, "height": H}]
    (tmp_path / "ann.json").write_text(json.dumps({
        "images": images, "categories": [{"id": 3, "name": "nucleus"}],
        "annotations": [{"id": 100 + i, "image_id": 1, "category_id": 3, **a}
                        for i, a in enumerate(anns)]}))
    return tmp_path / "ann.json"


def _xywh(b) -> list[float]:
    return [b[0], b[1], b[2] - b[0], b[3] - b[1]]


@pytest.mark.parametrize("bad,words", [
    ({"bbox": [50, 50, -10, 20]}, ["ann.json", "positive width and height", "1 of 2",
                                   "annotation id 101", "[x, y, width, height]"]),
    ({"bbox": [None, 1, 2, 3]}, ["ann.json", "finite", "annotation id 101"]),
    ({"bbox": [1, 2, 3]}, ["ann.json", "annotation id 101", "4 numbers"]),
    ({"segmentation": {"counts": "compressed", "size": [H, W]}},
     ["ann.json", "annotation id 101", "no 'bbox'", "add its 'bbox'"]),
], ids=["negative-width", "null", "three-numbers", "compressed-rle-only"])
def test_impossible_coco_boxes_are_one_line_naming_file_annotation_and_fix(tmp_path, bad,
                                                                            words):
    msg = _error(_coco(tmp_path, [{"bbox": _xywh(BOXES[0])}, bad]))
    for w in words:
        assert w in msg, (w, msg)


def test_coco_boxes_from_a_segmentation_when_there_is_no_bbox(tmp_path):
    x0, y0, x1, y1 = BOXES[1].astype(int)
    # uncompressed RLE: runs down the columns, background first
    mask = np.zeros((H, W), np.uint8)
    mask[y0:y1, x0:x1] = 1
    flat = mask.flatten(order="F")
    edges = np.flatnonzero(np.diff(np.r_[0, flat, 0]))
    counts = np.diff(np.r_[0, edges, flat.size]).tolist()
    poly = [[10, 20, 30, 20, 30, 36, 10, 36]]
    s = load_dataset(_coco(tmp_path, [{"segmentation": poly},
                                      {"segmentation": {"counts": counts, "size": [H, W]},
                                       "iscrowd": 1}]))[0]
    assert np.allclose(s.boxes, BOXES - 0.5)
    assert s.difficult.tolist() == [False, True]


def test_coco_image_names_with_folders_missing_files_and_sizes(tmp_path, caplog):
    good = [{"bbox": _xywh(b)} for b in BOXES]
    # an export's folders: the image found by its name beside the JSON
    for exported in ("C:/export/run1/a.png", "C:\\export\\run1\\a.png", "run1/a.png"):
        p = _coco(tmp_path, good, [{"id": 1, "file_name": exported}])
        assert np.allclose(load_dataset(p)[0].boxes, BOXES - 0.5), exported
    p = _coco(tmp_path, good, [{"id": 1, "file_name": "a.png"},
                               {"id": 2, "file_name": "gone.tif"}])
    msg = _error(p)
    assert "ann.json" in msg and "'gone.tif' (id 2) not found" in msg
    # annotations of an image not listed, and an image of another size than the JSON's
    p = _coco(tmp_path, good, [{"id": 7, "file_name": "a.png", "width": 2 * W,
                                "height": 2 * H}])
    with caplog.at_level(logging.WARNING):
        s = load_dataset(p)
    assert len(s) == 1 and len(s[0].boxes) == 0
    assert "2 annotations name image ids missing from 'images'" in caplog.text
    assert f"is {W} x {H} but the JSON says {2 * W} x {2 * H}" in caplog.text


def test_images_without_a_mask_are_said_and_cellpose_cp_masks_read(tmp_path, caplog):
    lab = np.zeros((H, W), np.uint16)
    for i, (x0, y0, x1, y1) in enumerate(BOXES.astype(int), start=1):
        lab[y0:y1, x0:x1] = i
    for d in ("sd/images", "sd/masks", "cp"):
        (tmp_path / d).mkdir(parents=True)
    _png(tmp_path / "sd/images/a.png")
    _png(tmp_path / "sd/images/b.png")
    cv2.imwrite(str(tmp_path / "sd/masks/a.png"), lab)
    with caplog.at_level(logging.WARNING):
        assert [s.name for s in load_dataset(tmp_path / "sd")] == ["a.png"]
    assert "1 image(s) have no mask and are left out, 1 scored" in caplog.text
    assert "b.png" in caplog.text
    # Cellpose's GUI and command line save NAME_cp_masks.png
    _png(tmp_path / "cp/a.png")
    cv2.imwrite(str(tmp_path / "cp/a_cp_masks.png"), lab)
    s = load_dataset(tmp_path / "cp")
    assert [x.name for x in s] == ["a.png"] and np.allclose(s[0].boxes, BOXES - 0.5)
