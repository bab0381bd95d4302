"""Malformed annotation files get one line naming the key, the count and the fix - not a
silent AP of 0, a traceback or a misleading "no labels" - and colour and stacks are read
as the other formats read them.

Every case here once scored (or failed) without a word: a transposed (4, N) box array
read as N garbage boxes, x, y, w, h boxes and swapped corners as boxes nothing can
match, a fractional ``frame`` truncated, a ``frame`` past the stack reported as "no
labels", a colour npz a traceback from the detector, a 3-plane TIFF with its 3-plane
mask refused with the wrong shape, a boolean mask scored as one object.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import tifffile
from _support import refused_in_one_line

from inscope.cli import main
from inscope.detector.datasets import load_dataset

H, W = 48, 80
BOXES = np.array([[10, 20, 30, 36], [40, 8, 60, 30]], np.float64)  # x0 y0 x1 y1


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W)).astype(np.uint16)


def _labels() -> np.ndarray:
    lab = np.zeros((H, W), np.int32)
    for i, (x0, y0, x1, y1) in enumerate(BOXES.astype(int), start=1):
        lab[y0:y1, x0:x1] = i
    return lab


def _error(path) -> str:
    return refused_in_one_line(load_dataset, path)


@pytest.mark.parametrize("boxes,words", [
    (BOXES.T, ["boxes have shape (4, 2)", "looks transposed", "boxes.T"]),
    (BOXES[:, [2, 1, 0, 3]], ["x1 > x0 and y1 > y0", "2 of 2", "row 0", "x, y, w, h"]),
    # x, y, w, h: the second box's w (20) is left of its x (40)
    (np.array([[5, 5, 20, 16], [40, 8, 20, 22]]), ["1 of 2", "row 1",
                                                    "boxes[:, 2:] += boxes[:, :2]"]),
    (np.array([[10, 20, 30, 36], [np.nan, 8, 60, 30]]), ["NaN or infinite", "1 of 2 have",
                                                         "row 1"]),
    (np.array([["a", "b", "c", "d"]]), ["numeric", "(N, 4)"]),
], ids=["transposed", "inverted", "xywh", "nan", "text"])
def test_impossible_boxes_are_one_line_naming_key_count_and_fix(tmp_path, boxes, words):
    p = tmp_path / "b.npz"
    np.savez(p, image=_image(), boxes=boxes)
    msg = _error(p)
    assert msg.startswith(f"{p}: "), msg
    for w in words:
        assert w in msg, msg


def test_the_same_checks_hold_for_a_stack(tmp_path):
    p = tmp_path / "s.npz"
    np.savez(p, images=np.stack([_image(1), _image(2)]), boxes=BOXES.T,
             frame=np.array([0, 1, 1, 1]))
    assert "looks transposed" in _error(p)


def test_boxes_wholly_outside_the_image_are_a_warning_not_an_error(tmp_path, caplog):
    p = tmp_path / "o.npz"
    np.savez(p, image=_image(), boxes=np.array([[100, 100, 110, 110], *BOXES]))
    with caplog.at_level(logging.WARNING, logger="inscope"):
        (s,) = load_dataset(p)
    assert len(s.boxes) == 3  # scored as given
    (rec,) = [r for r in caplog.records if "outside" in r.getMessage()]
    assert "1 of 3 boxes" in rec.getMessage() and f"{W} x {H} image" in rec.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="inscope"):
        load_dataset(_save(tmp_path / "in.npz", image=_image(), boxes=BOXES))
    assert not caplog.records  # boxes touching or inside: nothing to say


def _save(p, **arrays):
    np.savez(p, **arrays)
    return p


@pytest.mark.parametrize("frame,words", [
    (np.array([0.5, 1.0]), ["'frame'", "1 of 2", "not whole numbers", "0.5", "0..1"]),
    (np.array([7, 7]), ["'frame'", "2 of 2", "outside 0..1", "holds 2 images"]),
    (np.array([-1, 0]), ["1 of 2", "outside 0..1"]),
], ids=["fraction", "past-the-end", "negative"])
def test_frame_indices_must_be_whole_and_name_an_image(tmp_path, frame, words):
    p = _save(tmp_path / "f.npz", images=np.stack([_image(1), _image(2)]), boxes=BOXES,
              frame=frame)
    msg = _error(p)
    for w in words:
        assert w in msg, msg


def test_per_box_arrays_of_the_wrong_length_are_named(tmp_path):
    p = _save(tmp_path / "c.npz", images=np.stack([_image(1), _image(2)]), boxes=BOXES,
              frame=np.array([0, 1]), class_ids=np.array([0, 1, 1]))
    assert "'class_ids' needs one entry per box (2 boxes)" in _error(p)


def test_a_colour_npz_image_is_read_as_the_mean_of_its_colours_like_a_png(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 255, (H, W, 3)).astype(np.uint8)
    (s,) = load_dataset(_save(tmp_path / "c.npz", image=rgb, boxes=BOXES))
    cv2.imwrite(str(tmp_path / "c.png"), rgb)
    (tmp_path / "c.txt").write_text("")  # (an annotation, so the PNG is read)
    (png,) = load_dataset(tmp_path / "c.png")
    assert s.image.shape == (H, W)
    np.testing.assert_array_equal(s.image, png.image)
    stack = load_dataset(_save(tmp_path / "cs.npz", images=np.stack([rgb, rgb]),
                               boxes=BOXES, frame=np.array([0, 1])))
    assert [x.image.shape for x in stack] == [(H, W), (H, W)]


def test_an_image_of_another_shape_names_its_key_and_the_shapes_it_takes(tmp_path):
    p = _save(tmp_path / "4d.npz", image=np.zeros((2, H, W, 3), np.uint8), boxes=BOXES)
    msg = _error(p)
    assert "'image' has shape (2, 48, 80, 3)" in msg and "'images' (T, H, W)" in msg
    p = _save(tmp_path / "stack_as_image.npz", image=np.zeros((3, H, W)), boxes=BOXES)
    assert "'image' has shape (3, 48, 80)" in _error(p)


def test_an_image_without_boxes_or_labels_says_what_is_missing(tmp_path):
    msg = _error(_save(tmp_path / "i.npz", image=_image()))
    assert "has 'image' but neither 'boxes'" in msg and "'labels'" in msg
    msg = _error(_save(tmp_path / "s.npz", images=np.stack([_image()]), boxes=BOXES))
    assert "no 'frame'" in msg


@pytest.mark.filterwarnings("ignore:.*stored as RGB:DeprecationWarning")
def test_a_tiff_stack_with_a_mask_stack_beside_it_is_one_sample_per_plane(tmp_path):
    """tifffile stores a plain (3, H, W) array as one RGB image; its (3, H, W) mask says
    the planes are separate images."""
    planes = np.stack([_image(1), _image(2), _image(3)])
    masks = np.stack([_labels(), np.zeros((H, W), np.int32), _labels()])
    tifffile.imwrite(tmp_path / "stack.tif", planes)
    tifffile.imwrite(tmp_path / "stack_masks.tif", masks)
    s = load_dataset(tmp_path / "stack.tif")
    assert [x.name for x in s] == ["stack.tif[0]", "stack.tif[1]", "stack.tif[2]"]
    assert [len(x.boxes) for x in s] == [2, 0, 2]
    np.testing.assert_array_equal(s[1].image, planes[1])
    tifffile.imwrite(tmp_path / "stack_masks.tif", masks[:2])
    msg = _error(tmp_path / "stack.tif")
    assert "stack.tif holds (3, 48, 80), read as one colour image" in msg


def test_boolean_labels_are_refused_and_a_binary_mask_is_warned_about(tmp_path, caplog):
    msg = _error(_save(tmp_path / "b.npz", image=_image(), labels=_labels() > 0))
    assert "boolean (semantic) mask" in msg and "scipy.ndimage.label" in msg
    assert "b.npz: " in msg
    msg = _error(_save(tmp_path / "n.npz", image=_image(), labels=-_labels()))
    assert "b.npz" not in msg and "n.npz" in msg and ">= 0" in msg
    with caplog.at_level(logging.WARNING, logger="inscope"):
        (s,) = load_dataset(_save(tmp_path / "bin.npz", image=_image(),
                                  labels=(_labels() > 0).astype(np.uint8) * 255))
    assert len(s.boxes) == 1
    assert any("binary (semantic) mask" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="inscope"):
        load_dataset(_save(tmp_path / "inst.npz", image=_image(), labels=_labels()))
    assert not caplog.records
    # a mask file too
    tifffile.imwrite(tmp_path / "m.tif", _image())
    tifffile.imwrite(tmp_path / "m_masks.tif", (_labels() > 0).astype(np.uint8))
    with caplog.at_level(logging.WARNING, logger="inscope"):
        load_dataset(tmp_path / "m.tif")
    assert any("m_masks.tif" in r.getMessage() and "binary" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("arrays,words", [
    ({"image": np.zeros((H, W, 3), np.uint8), "boxes": BOXES.T}, "looks transposed"),
    ({"images": np.zeros((2, H, W), np.uint8), "boxes": BOXES, "frame": np.array([7, 7])},
     "outside 0..1"),
    ({"image": np.zeros((2, H, W, 3), np.uint8), "boxes": BOXES}, "'image' has shape"),
], ids=["transposed", "frame-past-the-end", "4d"])
def test_eval_says_it_in_one_line_and_exits_non_zero(tmp_path, capsys, arrays, words):
    p = _save(tmp_path / "d.npz", **arrays)
    assert main(["eval", "--model", "classical", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("inscope eval: "), err
    assert words in err and "no labels" not in err


def test_eval_scores_a_colour_npz(tmp_path, capsys):
    p = _save(tmp_path / "rgb.npz", image=np.zeros((H, W, 3), np.uint8), boxes=BOXES)
    assert main(["eval", "--model", "classical", str(p)]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_a_stack_of_binary_masks_is_one_warning_not_one_per_plane(tmp_path, caplog):
    binary = (_labels() > 0).astype(np.uint8)
    p = _save(tmp_path / "s.npz", images=np.stack([_image()] * 5),
              labels=np.stack([binary] * 4 + [_labels().astype(np.uint8)]))
    with caplog.at_level(logging.WARNING, logger="inscope"):
        s = load_dataset(p)
    assert [len(x.boxes) for x in s] == [1, 1, 1, 1, 2]
    (rec,) = caplog.records
    assert "4 of its 5 masks" in rec.getMessage() and "s.npz" in rec.getMessage()


def test_a_file_that_is_not_an_npz_archive_says_so(tmp_path, capsys):
    # numpy reads a file without a zip or .npy header as a pickle: a text file named .npz
    # was "pickled (object) data"
    from inscope.acquisition.errors import MicroscopeUnavailable
    from inscope.acquisition.factory import open_microscope

    path = tmp_path / "notes.npz"
    path.write_text("x y w h\n1 2 3 4\n")
    with pytest.raises(ValueError, match=r"notes.npz is not an npz archive.*numpy.savez"):
        load_dataset(path)
    assert main(["eval", str(path)]) != 0
    err = capsys.readouterr().err
    assert "not an npz archive" in err and "pickled" not in err
    with pytest.raises(MicroscopeUnavailable, match="not an npz archive"):
        open_microscope("slide", path=str(path))
