"""The slide's labels, boxes and pixel sizes: what ``inscope eval`` refuses in a file,
the slide refuses too (one rule, :mod:`inscope.acquisition.frame`), and a file whose
pixels are not square is refused, since the stage moves by one pixel size in x and y.

Every case here once gave a slide that looked valid: negative ids no truth at all
(``has_truth`` False, not a word), a boolean mask one object covering every cell, a
transposed box array garbage boxes, a 0.4 x 0.8 µm pixel 0.4 µm square (every y
position off by 2x).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile

from inscope.acquisition.errors import MicroscopeUnavailable
from inscope.acquisition.replay import ReplayMicroscope
from inscope.acquisition.slide import SlideMicroscope, extrude_to_stack, load_slide
from inscope.detector.datasets import load_dataset

H, W = 40, 50


def _img() -> np.ndarray:
    return np.random.default_rng(0).integers(100, 200, (H, W)).astype(np.uint16)


def _labels() -> np.ndarray:
    lab = np.zeros((H, W), np.int32)
    lab[5:12, 5:15] = 1
    lab[20:30, 25:40] = 2
    return lab


def _npz(p: Path, **arrays) -> Path:
    np.savez(p, **({"image": _img()} | arrays))
    return p


def _error(call, *args, **kw) -> str:
    with pytest.raises(MicroscopeUnavailable) as e:
        call(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def _slide(path, **kw) -> SlideMicroscope:
    return SlideMicroscope(path, fov=16, realtime=False, noise=0, **kw)


@pytest.mark.parametrize("labels,words", [
    (-_labels(), [">= 0", "negative ids", "positive id"]),
    (_labels() > 0, ["boolean (semantic) mask", "scipy.ndimage.label"]),
], ids=["negative", "boolean"])
def test_labels_eval_refuses_are_refused_by_the_slide_too(tmp_path, labels, words):
    p = _npz(tmp_path / "cells.npz", labels=labels)
    msg = _error(_slide, p, pixel_size_um=1.0)
    assert msg.startswith(f"slide {str(p)!r}: "), msg
    for w in words:
        assert w in msg, msg
    with pytest.raises(ValueError) as e:  # inscope eval on the same file
        load_dataset(p)
    for w in words:
        assert w in str(e.value)


def test_a_binary_mask_saved_as_integers_is_warned_about(tmp_path, caplog):
    p = _npz(tmp_path / "bin.npz", labels=(_labels() > 0).astype(np.uint8))
    with caplog.at_level(logging.WARNING, logger="inscope"):
        s = _slide(p, pixel_size_um=1.0)
    s.close()
    assert any("bin.npz" in r.getMessage() and "binary (semantic) mask" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="inscope"):
        _slide(_npz(tmp_path / "inst.npz", labels=_labels()), pixel_size_um=1.0).close()
    assert not caplog.records


def test_a_transposed_or_x_y_w_h_box_array_is_refused(tmp_path):
    boxes = np.array([[5, 5, 15, 12], [25, 20, 40, 30]], float)
    msg = _error(load_slide, _npz(tmp_path / "t.npz", boxes=boxes.T))
    assert "boxes have shape (4, 2)" in msg and "boxes.T" in msg
    msg = _error(load_slide, _npz(tmp_path / "n.npz", boxes=np.array([[np.nan, 1, 5, 5]])))
    assert "NaN or infinite" in msg
    xywh = np.array([[5, 5, 10, 7], [25, 20, 15, 10]], float)
    msg = _error(load_slide, _npz(tmp_path / "w.npz", boxes=xywh))
    assert "1 of 2 are not" in msg and "boxes[:, 2:] += boxes[:, :2]" in msg


def test_boxes_wholly_outside_the_image_are_logged(tmp_path, caplog):
    p = _npz(tmp_path / "o.npz", boxes=np.array([[5, 5, 15, 12], [100, 5, 110, 12]]))
    with caplog.at_level(logging.WARNING, logger="inscope"):
        sf = load_slide(p)
    assert len(sf.boxes) == 2
    assert any("1 of 2 boxes" in r.getMessage() and "outside" in r.getMessage()
               for r in caplog.records)


def test_a_colour_npz_image_is_its_mean_as_a_colour_tiff_is(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (H, W, 3)).astype(np.uint8)
    sf = load_slide(_npz(tmp_path / "c.npz", image=rgb, labels=_labels()))
    assert sf.image.shape == (1, H, W)
    np.testing.assert_allclose(sf.image[0], rgb.mean(axis=-1), atol=0.5)


def _ome(p: Path, px: float, py: float) -> Path:
    tifffile.imwrite(p, _img(), metadata={"axes": "YX", "PhysicalSizeX": px,
                                          "PhysicalSizeY": py})
    return p


def _imagej(p: Path, px: float, py: float) -> Path:
    tifffile.imwrite(p, _img(), imagej=True, resolution=(1 / px, 1 / py),
                     metadata={"unit": "um"})
    return p


@pytest.mark.parametrize("write", [_ome, _imagej], ids=["ome", "imagej"])
def test_pixels_that_are_not_square_are_refused_with_the_fix(tmp_path, write):
    p = write(tmp_path / "a.ome.tif" if write is _ome else tmp_path / "a.tif", 0.4, 0.8)
    msg = _error(_slide, p)
    assert "not square (0.4 µm in x, 0.8 µm in y)" in msg, msg
    assert "fy=2" in msg and "-o pixel_size_um=0.4" in msg


def test_square_pixels_and_a_given_pixel_size_are_taken(tmp_path, caplog):
    s = _slide(_ome(tmp_path / "sq.ome.tif", 0.4, 0.4))
    assert s.pixel_size_um == pytest.approx(0.4)
    s.close()
    with caplog.at_level(logging.WARNING, logger="inscope"):
        s = _slide(_ome(tmp_path / "a.ome.tif", 0.4, 0.8), pixel_size_um=0.5)
    assert s.pixel_size_um == 0.5
    s.close()
    assert any("not square" in r.getMessage() and "pixel_size_um=0.5" in r.getMessage()
               for r in caplog.records)


def test_ids_far_apart_are_measured_without_one_entry_per_unused_id(tmp_path):
    """Ids numbered per tile or by track (here 10^12 apart, int64): SciPy's per-label
    functions size their work by the largest id, which ended in a MemoryError
    traceback; the objects are measured as 1..N and keep the file's ids, in the
    slide's truth and in eval alike (an object covering the whole image included)."""
    far = np.where(_labels() > 0, _labels().astype(np.int64) * 10**12 + 7, 0)
    s = _slide(_npz(tmp_path / "far.npz", labels=far), pixel_size_um=1.0)
    near = _slide(_npz(tmp_path / "near.npz", labels=_labels()), pixel_size_um=1.0)
    assert s.true_cells().ids.tolist() == [10**12 + 7, 2 * 10**12 + 7]
    np.testing.assert_allclose(s.true_cells().xyz_um, near.true_cells().xyz_um)
    np.testing.assert_allclose(s.true_cells().boxes_px, near.true_cells().boxes_px)
    s.move_xy(10.0, 8.0)
    near.move_xy(10.0, 8.0)
    f, g = s.snap(), near.snap()
    assert f.metadata["truth_ids"] == [10**12 + 7]
    np.testing.assert_array_equal(f.truth, g.truth)
    (a,) = load_dataset(tmp_path / "far.npz")
    (b,) = load_dataset(tmp_path / "near.npz")
    np.testing.assert_array_equal(a.boxes, b.boxes)
    full = np.full((H, W), 5 * 10**12, np.int64)  # no background pixel at all
    (c,) = load_dataset(_npz(tmp_path / "full.npz", labels=full))
    np.testing.assert_array_equal(c.boxes, [[-0.5, -0.5, W - 0.5, H - 0.5]])


def test_extruding_ids_far_apart_gives_the_same_stack_with_the_files_ids():
    """``extrude_to_stack`` keeps one entry per id up to the largest: ids of 10^9 are
    extruded as 1..N (the same stack as ids 1, 2) and come back as the file's ids."""
    far = np.where(_labels() > 0, _labels().astype(np.int64) * 10**9 + 3, 0)
    stack, labs = extrude_to_stack(_img(), far, 1.0, planes=9)
    near_stack, near_labs = extrude_to_stack(_img(), _labels(), 1.0, planes=9)
    np.testing.assert_array_equal(stack, near_stack)
    np.testing.assert_array_equal(labs, np.where(near_labs > 0,
                                                 near_labs.astype(np.int64) * 10**9 + 3, 0))


def test_a_grey_image_with_a_channel_axis_of_one_is_one_image(tmp_path):
    """(Y, X, 1) - a grey image kept with a channel axis of one, as Keras-style datasets
    and some exporters write it - is the same image as (Y, X) to the slide (npz and
    TIFF), the replay and eval: all of them refused it as a shape they do not take."""
    npz = tmp_path / "yx1.npz"
    np.savez(npz, image=_img()[..., None], labels=_labels()[..., None])
    tif = tmp_path / "yx1.tif"
    tifffile.imwrite(tif, _img()[..., None])  # tifffile: axes 'YXQ'
    flat = _slide(_npz(tmp_path / "flat.npz", labels=_labels()), pixel_size_um=1.0)
    for path in (npz, tif):
        s = _slide(path, pixel_size_um=1.0)
        assert s._stack.shape == flat._stack.shape == (1, H, W)  # (planes, y, x)
        s.close()
    s = _slide(npz, pixel_size_um=1.0)
    assert s.true_cells().ids.tolist() == [1, 2]
    np.testing.assert_allclose(s.true_cells().xyz_um, flat.true_cells().xyz_um)
    r = ReplayMicroscope(tif, pixel_size_um=1.0)
    np.testing.assert_array_equal(r.snap().pixels, _img())
    r.close()
    (a,) = load_dataset(npz)
    (b,) = load_dataset(tmp_path / "flat.npz")
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
