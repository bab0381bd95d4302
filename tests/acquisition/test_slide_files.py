"""The slide backend's file readers and options against exact expectations: ImageJ
calibration (units, resolution, spacing), TIFF layouts and suffixes, NDTiff folders (z
step and direction from the planes' own z, time points, channels, missing pixel size),
npz and labels files (which array, and the one clear line - file, problem, fix - for
every bad one), yes/no option words, option bounds and defaults, the truth of boxes and
of 2-plane labels, and the labelled z-stack made from a 2-D image.

Written against the survivors of mutation testing (benchmarks/results/mutation.json): each
test states what a microscopist or a developer relies on, so that a changed constant,
comparison or argument in slide.py changes an outcome here (tests/acquisition/test_slide.py
and test_slide_truth.py cover the geometry, the frames and the common files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from inscope.acquisition.errors import MicroscopeUnavailable, MoveRefused
from inscope.acquisition.safety import SoftLimits
from inscope.acquisition.slide import SlideMicroscope, extrude_to_stack, load_slide

N = 32  # camera side (px) where a test needs frames


def _img(shape=(40, 50), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(100, 200, shape).astype(np.uint16)


def _npz(tmp_path: Path, name: str = "img.npz", **arrays) -> Path:
    p = tmp_path / name
    np.savez(p, **({"image": _img()} | arrays))
    return p


def _savez(p: Path, **arrays) -> Path:
    np.savez(p, **arrays)
    return p


def _error(call, *args, **kwargs) -> str:
    """The one-line MicroscopeUnavailable message of *call*."""
    with pytest.raises(MicroscopeUnavailable) as e:
        call(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# -- ImageJ calibration ------------------------------------------------------------------
def _imagej(path: Path, unit: str | None, resolution=(4.0, 4.0), spacing=None,
            planes: int = 2, raw: bool = False) -> Path:
    """An ImageJ TIFF; *raw*: the description written by hand in UTF-8 (as some tools
    write a micro sign) instead of tifffile's ASCII one."""
    img = np.zeros((planes, 40, 50), np.uint16)
    if raw:
        desc = f"ImageJ=1.54f\nimages={planes}\nslices={planes}\nunit={unit}\n"
        tifffile.imwrite(path, img[0] if planes == 1 else img, resolution=resolution,
                         description=desc.encode("utf-8"), metadata=None)
        return path
    meta: dict = {"axes": "ZYX" if planes > 1 else "YX"}
    if unit is not None:
        meta["unit"] = unit
    if spacing is not None:
        meta["spacing"] = spacing
    tifffile.imwrite(path, img if planes > 1 else img[0], imagej=True,
                     resolution=resolution, metadata=meta)
    return path


@pytest.mark.parametrize("unit,raw", [("microns", False), ("MICRON", False),
                                      ("µm", True), ("μm", True), ("\\u00B5m", False)])
def test_imagej_micrometre_spellings_give_the_pixel_size(tmp_path, unit, raw):
    """'microns', any case, the micro sign and the Greek mu (raw UTF-8 as some tools
    write it) or ImageJ's escaped micro sign: µm per pixel = 1 / XResolution."""
    p = _imagej(tmp_path / "ij.tif", unit, raw=raw)
    assert load_slide(p).pixel_size_um == pytest.approx(0.25)


def test_imagej_escaped_greek_mu_is_a_micrometre(tmp_path):
    p = _imagej(tmp_path / "ij.tif", "\\u03BCm")
    assert load_slide(p).pixel_size_um == pytest.approx(0.25)


def test_imagej_single_plane_and_coarse_calibration(tmp_path):
    """One calibrated plane (the resolution tag of its only page) and a coarse scale
    (0.25 pixel per µm is stored as the fraction 1/4: 4 µm per pixel)."""
    one = _imagej(tmp_path / "one.tif", "um", planes=1)
    s = SlideMicroscope(one, fov=N, noise=0, realtime=False)
    assert s.pixel_size_um == pytest.approx(0.25) and s.shape_zyx == (1, 40, 50)
    coarse = _imagej(tmp_path / "coarse.tif", "micron", resolution=(0.25, 0.25))
    assert load_slide(coarse).pixel_size_um == pytest.approx(4.0)


def test_imagej_zero_resolution_is_no_calibration(tmp_path):
    """A zero resolution numerator says nothing about the scale: the file gives no pixel
    size, so the user is asked for one (and it is used when given)."""
    p = _imagej(tmp_path / "zero.tif", "um", resolution=(0, 1))
    assert load_slide(p).pixel_size_um is None
    msg = _error(SlideMicroscope, p, realtime=False)
    assert "zero.tif" in msg and "does not say its pixel size" in msg
    assert "-o pixel_size_um=P" in msg
    s = SlideMicroscope(p, pixel_size_um=0.3, fov=N, realtime=False)
    assert s.pixel_size_um == 0.3


@pytest.mark.parametrize("spacing", [None, 0, -0.5])
def test_imagej_missing_zero_or_negative_spacing_is_no_z_step(tmp_path, spacing):
    """Only a positive ImageJ ``spacing`` is a z step; otherwise the slide uses 1 µm."""
    p = _imagej(tmp_path / "sp.tif", "um", spacing=spacing)
    sf = load_slide(p)
    assert sf.pixel_size_um == pytest.approx(0.25) and sf.z_step_um is None
    s = SlideMicroscope(p, fov=N, noise=0, realtime=False)
    assert s.z_step_um == 1.0


# -- TIFF layouts -------------------------------------------------------------------------
def test_tiff_suffixes_tiff_btf_and_upper_case_are_read(tmp_path):
    stack = _img((3, 40, 50))
    for name, big in (("a.tiff", False), ("b.btf", True), ("C.TIF", False)):
        tifffile.imwrite(tmp_path / name, stack, bigtiff=big, metadata={"axes": "ZYX"},
                         photometric="minisblack")
        sf = load_slide(tmp_path / name)
        np.testing.assert_array_equal(sf.image, stack)


def test_channel_0_is_the_default_and_can_be_asked_for(tmp_path):
    """A two-channel file: load_slide and the microscope show channel 0 unless told."""
    cyx = np.stack([_img(seed=1), _img(seed=2) + 1000])
    p = tmp_path / "c.ome.tif"
    tifffile.imwrite(p, cyx, ome=True, metadata={"axes": "CYX", "PhysicalSizeX": 0.5})
    np.testing.assert_array_equal(load_slide(p).image[0], cyx[0])
    np.testing.assert_array_equal(load_slide(p, 0).image[0], cyx[0])
    np.testing.assert_array_equal(load_slide(p, 1).image[0], cyx[1])
    s = SlideMicroscope(p, fov=N, realtime=False)
    np.testing.assert_array_equal(s._stack[0], cyx[0])
    msg = _error(load_slide, p, 2)
    assert "c.ome.tif" in msg and "2 channels" in msg and "channel=0..1" in msg


def test_tiff_pages_without_axis_names_are_planes_and_a_time_series_its_first_point(
        tmp_path):
    """Pages written one by one (tifffile calls them an image sequence, axis I) are the
    stack's planes; a 2-point time series is its first time point."""
    pages = tmp_path / "pages.tif"
    with tifffile.TiffWriter(pages) as tw:
        for k in range(3):
            tw.write(np.full((40, 50), k, np.uint16), photometric="minisblack",
                     metadata=None)
    assert load_slide(pages).image[:, 0, 0].tolist() == [0, 1, 2]
    tyx = np.stack([np.full((40, 50), 7, np.uint16), np.full((40, 50), 9, np.uint16)])
    tifffile.imwrite(tmp_path / "t.ome.tif", tyx, ome=True, metadata={"axes": "TYX"})
    sf = load_slide(tmp_path / "t.ome.tif")
    assert sf.image.shape == (1, 40, 50) and sf.image[0, 0, 0] == 7


def test_planes_written_one_call_at_a_time_with_default_metadata_are_one_stack(
        tmp_path: Path) -> None:
    """A loop of ``tw.write(plane)`` with tifffile's default metadata stores each plane
    as its own series; the slide reads them all as planes, not only the first."""
    p = tmp_path / "loop.tif"
    with tifffile.TiffWriter(p) as tw:
        for k in range(3):
            tw.write(np.full((40, 50), k, np.uint16))
    with tifffile.TiffFile(p) as tf:
        assert len(tf.series) == 3  # what makes this case
    sf = load_slide(p)
    assert sf.image.shape == (3, 40, 50) and sf.image[:, 0, 0].tolist() == [0, 1, 2]


def test_other_image_series_are_left_out_and_the_log_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "thumb.tif"
    with tifffile.TiffWriter(p) as tw:
        tw.write(np.full((40, 50), 5, np.uint16))
        tw.write(np.zeros((10, 12), np.uint8))  # e.g. a thumbnail
    with caplog.at_level("WARNING", logger="inscope.acquisition.slide"):
        sf = load_slide(p)
    assert sf.image.shape == (1, 40, 50) and sf.image[0, 0, 0] == 5
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "2 image series" in msg and "(10, 12)" in msg and "left out" in msg


def test_bad_tiffs_get_one_line_naming_the_file_the_problem_and_the_fix(tmp_path):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff at all")
    msg = _error(load_slide, junk)
    assert "junk.tif" in msg and "cannot be read as TIFF" in msg
    assert "give a (Z, Y, X) TIFF / OME-TIFF stack" in msg
    yxz = tmp_path / "yxz.tif"
    tifffile.imwrite(yxz, np.zeros((40, 50, 3), np.uint16), metadata={"axes": "YXZ"},
                     photometric="minisblack")
    msg = _error(load_slide, yxz)
    assert "yxz.tif" in msg and "have no Y, X at the end" in msg
    assert "save the stack as (Z, Y, X)" in msg
    row = tmp_path / "row.tif"
    tifffile.imwrite(row, np.zeros((1, 50), np.uint16))
    msg = _error(load_slide, row)
    assert "row.tif" in msg and "image has shape (1, 1, 50)" in msg
    assert "give (Y, X) or (Z, Y, X)" in msg
    rgba = tmp_path / "rgba16.tif"
    tifffile.imwrite(rgba, np.zeros((4, 40, 50), np.uint16))
    msg = _error(load_slide, rgba)
    assert "rgba16.tif" in msg and "may be z planes or colours" in msg
    bare = tmp_path / "bare4d.tif"
    tifffile.imwrite(bare, np.zeros((3, 2, 40, 50), np.uint16))
    msg = _error(load_slide, bare)
    assert "bare4d.tif" in msg and "which axis is z cannot be told" in msg


# -- npz and labels files ----------------------------------------------------------------
def test_the_smallest_image_and_labels_are_2_pixels_a_side(tmp_path):
    """(Y, X) or (Z, Y, X) with at least 2 pixels a side; a 1-pixel row is refused with
    its shape, for the image and for the labels."""
    sf = load_slide(_npz(tmp_path, "thin.npz", image=np.ones((2, 50), np.uint16),
                         labels=np.zeros((2, 50), np.int32)))
    assert sf.image.shape == sf.labels.shape == (1, 2, 50)
    sf = load_slide(_npz(tmp_path, "thin3.npz", image=np.ones((3, 2, 2), np.uint16)))
    assert sf.image.shape == (3, 2, 2)
    for name, arrays, words in (
            ("row.npz", {"image": np.ones((1, 50))}, "image has shape (1, 1, 50)"),
            ("4d.npz", {"image": np.ones((2, 2, 3, 4))}, "image has shape (2, 2, 3, 4)"),
            ("labrow.npz", {"labels": np.ones(50, int)}, "labels has shape (50,)")):
        msg = _error(load_slide, _npz(tmp_path, name, **arrays))
        assert name in msg and words in msg and "give (Y, X) or (Z, Y, X)" in msg


def test_bad_npz_files_get_one_line_naming_the_file_the_problem_and_the_fix(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_text("hello")
    msg = _error(load_slide, junk)
    assert "junk.npz" in msg and "cannot be read as npz" in msg
    assert "numpy.savez(path, image=..., labels=...)" in msg
    msg = _error(load_slide, _savez(tmp_path / "noimg.npz", pixels=np.zeros((4, 4))))
    assert "noimg.npz" in msg and "no 'image' array" in msg and "'pixels'" in msg
    assert "save the image as image=(Y, X) or (Z, Y, X)" in msg
    # an object array is never unpickled: one line saying how to save it instead
    obj = np.empty((40, 50), object)
    obj[:] = 1
    msg = _error(load_slide, _savez(tmp_path / "obj.npz", image=obj))
    assert "obj.npz" in msg and "its 'image' cannot be read" in msg
    assert "save image as a plain numeric array" in msg


def test_a_labels_npz_without_a_labels_key_uses_its_first_array(tmp_path):
    p = _npz(tmp_path)
    masks = np.zeros((40, 50), np.int32)
    masks[5:10, 5:10] = 4
    other = np.zeros((40, 50), np.int32)
    other[20:30, 20:30] = 9
    first = _savez(tmp_path / "first.npz", masks=masks, other=other)
    s = SlideMicroscope(p, pixel_size_um=0.5, labels=first, fov=N, realtime=False)
    assert s.true_cells().ids.tolist() == [4]
    # with a "labels" array, that one, wherever it is
    named = _savez(tmp_path / "named.npz", other=other, labels=masks)
    s = SlideMicroscope(p, pixel_size_um=0.5, labels=named, fov=N, realtime=False)
    assert s.true_cells().ids.tolist() == [4]


def test_a_labels_tiff_is_read_as_channel_0(tmp_path):
    """A multi-channel labels TIFF: its first channel holds the masks."""
    p = _npz(tmp_path)
    cyx = np.zeros((2, 40, 50), np.uint16)
    cyx[0, 5:10, 5:10] = 3
    cyx[1, 20:30, 20:30] = 8
    q = tmp_path / "lab.ome.tif"
    tifffile.imwrite(q, cyx, ome=True, metadata={"axes": "CYX"})
    s = SlideMicroscope(p, pixel_size_um=0.5, labels=q, fov=N, realtime=False)
    assert s.true_cells().ids.tolist() == [3]


def test_bad_labels_files_get_one_line_naming_the_file_the_problem_and_the_fix(tmp_path):
    p = _npz(tmp_path)
    msg = _error(load_slide, p, labels=tmp_path / "none.npz")
    assert "none.npz" in msg and "labels file does not exist" in msg
    assert "check -o labels=FILE" in msg
    msg = _error(load_slide, p, labels=_savez(tmp_path / "empty.npz"))
    assert "empty.npz" in msg and "labels npz is empty" in msg
    assert "save labels=(Z, Y, X) masks" in msg
    junk = tmp_path / "junk.npz"
    junk.write_text("hello")
    msg = _error(load_slide, p, labels=junk)
    assert "junk.npz" in msg and "labels cannot be read as npz" in msg
    assert "numpy.savez(path, labels=(Z, Y, X) masks)" in msg
    obj = np.empty((40, 50), object)
    obj[:] = 1
    msg = _error(load_slide, p, labels=_savez(tmp_path / "obj.npz", labels=obj))
    assert "obj.npz" in msg and "labels cannot be read as npz" in msg
    msg = _error(load_slide, p, labels=_savez(tmp_path / "row.npz", labels=np.ones(50, int)))
    assert "row.npz" in msg and "labels has shape (50,)" in msg


def test_load_slide_errors_name_the_file_and_the_fix(tmp_path):
    missing = tmp_path / "missing.npz"
    msg = _error(load_slide, missing)
    assert "missing.npz" in msg and "does not exist" in msg and "-o path=FILE" in msg
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    msg = _error(load_slide, text)
    assert "notes.txt" in msg and "unknown type (.txt)" in msg
    assert "use .npz, .tif / .ome.tif, .png / .jpg or an NDTiff folder" in msg
    img = np.zeros((40, 50), np.float32)
    cases = {
        "text.npz": ({"image": np.full((40, 50), "a")}, "save a numeric image"),
        "nan.npz": ({"image": np.where(img == 0, np.inf, 0)}, "replace them before use"),
        "mm.npz": ({"image": img, "labels": np.zeros((30, 50), int)},
                   "give labels of shape (Y, X) or the image's (Z, Y, X)"),
        "float.npz": ({"image": img, "labels": np.full((40, 50), 0.5)},
                      "save instance masks as integers"),
        "boxes.npz": ({"image": img, "boxes": np.array([[10, 20, 16, 20]])},
                      "fix the boxes array"),
    }
    for name, (arrays, fix) in cases.items():
        msg = _error(load_slide, _savez(tmp_path / name, **arrays))
        assert name in msg and fix in msg


def test_boxes_need_y1_above_y0_but_may_be_wider_than_tall(tmp_path):
    """A box of zero height is refused; a wide, flat box (y1 - y0 < x1 - x0, and y1
    below x1) is a box."""
    flat = _savez(tmp_path / "flat.npz", image=_img(), boxes=np.array([[10, 20, 16, 20]]))
    assert "boxes must be (N, 4)" in _error(load_slide, flat)
    wide = _savez(tmp_path / "wide.npz", image=_img(), boxes=np.array([[0, 0, 30, 3]]))
    np.testing.assert_array_equal(load_slide(wide).boxes, [[0, 0, 30, 3]])


def test_integer_labels_keep_their_type(tmp_path):
    lab = np.zeros((40, 50), np.uint16)
    lab[5:10, 5:10] = 2
    sf = load_slide(_npz(tmp_path, labels=lab))
    assert sf.labels.dtype == np.uint16
    np.testing.assert_array_equal(sf.labels[0], lab)


# -- NDTiff -------------------------------------------------------------------------------
_NDTIFF_WRITER = """
import json, sys
import numpy as np
from ndstorage import NDTiffDataset
for folder, name, summary, spec in json.loads(sys.argv[1]):
    z = np.load(spec)
    nd = NDTiffDataset(dataset_path=folder, name=name, writable=True,
                       summary_metadata=summary)
    meta = json.loads(str(z["meta"]))
    for k, coords in enumerate(json.loads(str(z["coords"]))):
        nd.put_image(coords, z["images"][k], meta[k])
    nd.finish()
    nd.close()
"""


def _zs(values) -> list[dict]:
    return [{"ZPosition_um_Intended": v} for v in values]


def _plain(n: int) -> list[np.ndarray]:
    return [np.full((40, 50), k, np.uint16) for k in range(n)]


_DATASETS: dict[str, tuple[dict, list[dict], list[np.ndarray], list[dict] | None]] = {
    # two planes, z from the images
    "two": ({"PixelSize_um": 0.25}, [{"z": z} for z in range(2)], _plain(2),
            _zs([1.0, 1.6])),
    # z going up and down: no step can be told
    "zigzag": ({"PixelSize_um": 0.25}, [{"z": z} for z in range(3)], _plain(3),
               _zs([0.0, 0.5, 0.3])),
    # evenly spaced, and spaced at exactly the 5 % tolerance: even
    "even": ({"PixelSize_um": 0.25}, [{"z": z} for z in range(3)], _plain(3),
             _zs([0.0, 0.4, 0.8])),
    "coarse": ({"PixelSize_um": 0.25}, [{"z": z} for z in range(4)], _plain(4),
               _zs([0.0, 20.0, 40.0, 61.0])),
    "uneven": ({"PixelSize_um": 0.25}, [{"z": z} for z in range(4)], _plain(4),
               _zs([0.0, 0.3, 0.7123, 1.0])),
    # two channels, each image with its z, no step in the summary
    "chz": ({"PixelSize_um": 0.25}, [{"channel": c, "z": z} for c in ("DAPI", "FITC")
                                     for z in range(3)],
            [np.full((40, 50), 100 * c + z, np.uint16) for c in range(2) for z in range(3)],
            _zs([0.0, 0.4, 0.8]) * 2),
    # time points: the first is the slide
    "time": ({"PixelSize_um": 0.25, "z-step_um": 0.3},
             [{"time": t, "z": z} for t in range(2) for z in range(3)],
             [np.full((40, 50), 10 * t + z, np.uint16) for t in range(2) for z in range(3)],
             None),
    # a second channel imaged on planes 0 and 2 only
    "gap": ({"PixelSize_um": 0.25, "z-step_um": 0.3},
            [{"channel": "DAPI", "z": z} for z in range(3)]
            + [{"channel": "FITC", "z": z} for z in (0, 2)],
            [np.full((40, 50), 7, np.uint16) for _ in range(5)], None),
    # no pixel size in the summary
    "nopx": ({"z-step_um": 0.3}, [{"z": z} for z in range(2)], _plain(2), None),
    # one-row images
    "row": ({"PixelSize_um": 0.25}, [{"z": 0}], [np.zeros((1, 50), np.uint16)], None),
}


@pytest.fixture(scope="module")
def ndtiff(tmp_path_factory) -> dict[str, Path]:
    """Every NDTiff dataset above, written by ndstorage (pycro-manager's writer) in one
    child process (its writer threads must not live on in the test process); name ->
    the folder a user gives (the dataset is its one subfolder NAME_1, as pycro-manager
    writes it)."""
    pytest.importorskip("ndstorage")
    root = tmp_path_factory.mktemp("ndtiff")
    jobs = []
    for name, (summary, coords, images, meta) in _DATASETS.items():
        spec = root / f"{name}.spec.npz"
        np.savez(spec, images=np.stack(images), coords=json.dumps(coords),
                 meta=json.dumps(meta or [{} for _ in coords]))
        jobs.append([str(root / name), name, summary, str(spec)])
    subprocess.run([sys.executable, "-c", _NDTIFF_WRITER, json.dumps(jobs)], check=True,
                   capture_output=True, timeout=120)
    return {name: root / name for name in _DATASETS}


def _shown(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The slide's notes of which part of a file it shows."""
    return [r.getMessage() for r in caplog.records if "the slide shows" in r.getMessage()]


def test_the_channel_and_time_point_a_slide_shows_of_a_larger_file_are_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A two-channel, two-time-point file opens on channel 0 and time point 0 - a choice
    made for the user, so it is said, with the option that picks another channel; a file
    with nothing left out says nothing."""
    tczyx = np.stack([np.stack([_img((3, 40, 50), seed=s), _img((3, 40, 50), seed=s + 1)])
                      for s in (1, 3)])
    hyper = tmp_path / "hyper.tif"  # (ImageJ's order is TZCYX)
    tifffile.imwrite(hyper, tczyx.transpose(0, 2, 1, 3, 4), imagej=True,
                     metadata={"axes": "TZCYX"})
    with caplog.at_level("INFO", logger="inscope.acquisition.slide"):
        sf = load_slide(hyper)
    np.testing.assert_array_equal(sf.image, tczyx[0, 0])
    assert _shown(caplog) == ["hyper.tif: the slide shows channel 0 of 2 (-o channel=0..1 "
                              "picks another); the first of 2 time points"]
    caplog.clear()
    with caplog.at_level("INFO", logger="inscope.acquisition.slide"):
        load_slide(hyper, 1)
    assert _shown(caplog)[0].startswith("hyper.tif: the slide shows channel 1 of 2 ")
    tyx = tmp_path / "tyx.ome.tif"
    tifffile.imwrite(tyx, tczyx[:, 0, 0], ome=True, metadata={"axes": "TYX"})
    caplog.clear()
    with caplog.at_level("INFO", logger="inscope.acquisition.slide"):
        load_slide(tyx)
    assert _shown(caplog) == ["tyx.ome.tif: the slide shows the first of 2 time points"]
    for name, a, axes in (("zyx.ome.tif", tczyx[0, 0], "ZYX"),
                          ("czyx.ome.tif", tczyx[0, :1], "CZYX"),  # one channel
                          ("tzyx.ome.tif", tczyx[:1, 0], "TZYX")):  # one time point
        tifffile.imwrite(tmp_path / name, a, ome=True, metadata={"axes": axes})
        caplog.clear()
        with caplog.at_level("INFO", logger="inscope.acquisition.slide"):
            load_slide(tmp_path / name)
        assert _shown(caplog) == [], name
    # pages without axis names are the stack's planes: nothing is left out
    tifffile.imwrite(tmp_path / "plain.tif", tczyx[0, 0], photometric="minisblack")
    caplog.clear()
    with caplog.at_level("INFO", logger="inscope.acquisition.slide"):
        assert load_slide(tmp_path / "plain.tif").image.shape == (3, 40, 50)
    assert _shown(caplog) == []


def test_the_ndtiff_channel_and_time_point_shown_are_said(
        ndtiff, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="inscope.acquisition.slide"):
        load_slide(ndtiff["chz"], channel=1)
        load_slide(ndtiff["time"])
        load_slide(ndtiff["nopx"])
    assert _shown(caplog) == [
        "chz_1: the slide shows channel 1 of 2 (-o channel=0..1 picks another)",
        "time_1: the slide shows the first of 2 'time' values"]


def test_the_cli_shows_the_note_of_what_a_slide_shows(tmp_path: Path) -> None:
    """The note reaches a user of every command that opens a slide (``stream`` set up no
    log before, so it was lost there)."""
    p = tmp_path / "two.ome.tif"
    tifffile.imwrite(p, np.stack([_img(), _img(seed=2)]), ome=True,
                     metadata={"axes": "CYX", "PhysicalSizeX": 0.5})
    r = subprocess.run([sys.executable, "-m", "inscope", "stream", "--backend", "slide",
                        "-o", f"path={p}", "-o", "fov=32", "-o", "realtime=false",
                        "--frames", "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert ("INFO inscope.acquisition.slide: two.ome.tif: the slide shows channel 0 of 2 "
            "(-o channel=0..1 picks another)") in r.stderr.splitlines()


def test_ndtiff_planes_missing_from_the_chosen_channel_are_named(
        ndtiff, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="inscope.acquisition.slide"):
        full = load_slide(ndtiff["gap"], channel=0)
    assert full.image.shape == (3, 40, 50)
    assert not [r for r in caplog.records if "no image at z" in r.getMessage()]
    with caplog.at_level("WARNING", logger="inscope.acquisition.slide"):
        gap = load_slide(ndtiff["gap"], channel=1)
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "no image at z index [1]" in msg and "channel=FITC" in msg
    # the plane is there, black (ndstorage's fill), and the others are the images
    assert gap.image[:, 0, 0].tolist() == [7, 0, 7]


def test_a_folder_of_several_ndtiff_datasets_names_them(ndtiff, tmp_path: Path) -> None:
    """Repeated pycro-manager acquisitions leave NAME_1, NAME_2, ... in one folder: the
    error lists them and gives the option that opens one."""
    import shutil

    both = tmp_path / "both"
    both.mkdir()
    for name in ("two", "zigzag"):
        sub = next(p for p in ndtiff[name].iterdir() if (p / "NDTiff.index").is_file())
        shutil.copytree(sub, both / sub.name)
    msg = _error(load_slide, both)
    assert "holds 2 NDTiff datasets" in msg and "two_1" in msg and "zigzag_1" in msg
    assert f"-o path={both / 'two_1'}" in msg
    assert load_slide(both / "two_1").z_step_um == pytest.approx(0.6)
    # the replay backend reads the same folders and says the same, with its own option
    from inscope.acquisition.replay import ReplayMicroscope

    msg = _error(ReplayMicroscope, both)
    assert "holds 2 NDTiff datasets" in msg and f"--file {both / 'two_1'}" in msg


def test_ndtiff_z_step_of_a_two_plane_stack_from_its_images(ndtiff):
    sf = load_slide(ndtiff["two"])
    assert sf.z_step_um == pytest.approx(0.6)
    assert sf.image[:, 0, 0].tolist() == [0, 1]


def test_ndtiff_planes_going_up_and_down_give_no_z_step_and_keep_their_order(ndtiff):
    sf = load_slide(ndtiff["zigzag"])
    assert sf.z_step_um is None
    assert sf.image[:, 0, 0].tolist() == [0, 1, 2]
    s = SlideMicroscope(ndtiff["zigzag"], fov=N, realtime=False)
    assert s.z_step_um == 1.0


def test_ndtiff_evenly_spaced_planes_give_no_warning(ndtiff, caplog):
    """Evenly spaced (and spaced within exactly 5 %): no warning; unevenly spaced: the
    warning lists the planes' z to the nm."""
    with caplog.at_level("WARNING", logger="inscope.acquisition.slide"):
        assert load_slide(ndtiff["even"]).z_step_um == pytest.approx(0.4)
        assert load_slide(ndtiff["coarse"]).z_step_um == pytest.approx(20.0)
    assert "not evenly spaced" not in caplog.text
    with caplog.at_level("WARNING", logger="inscope.acquisition.slide"):
        assert load_slide(ndtiff["uneven"]).z_step_um == pytest.approx(0.3)
    assert "not evenly spaced" in caplog.text
    assert "0.712" in caplog.text and "0.7123" not in caplog.text


def test_ndtiff_z_step_of_a_two_channel_stack_from_the_channels_images(ndtiff):
    for channel in (0, 1):
        sf = load_slide(ndtiff["chz"], channel)
        assert sf.z_step_um == pytest.approx(0.4)
        assert sf.image[:, 0, 0].tolist() == [100 * channel + z for z in range(3)]
    msg = _error(load_slide, ndtiff["chz"], 2)
    assert "chz_1" in msg and "2 channels, channel=2 is not one" in msg


def test_ndtiff_with_time_points_shows_the_first(ndtiff):
    sf = load_slide(ndtiff["time"])
    assert sf.image[:, 0, 0].tolist() == [0, 1, 2]
    assert (sf.pixel_size_um, sf.z_step_um) == pytest.approx((0.25, 0.3))


def test_ndtiff_without_pixel_size_asks_for_it(ndtiff):
    sf = load_slide(ndtiff["nopx"])
    assert sf.pixel_size_um is None and sf.z_step_um == pytest.approx(0.3)
    msg = _error(SlideMicroscope, ndtiff["nopx"], realtime=False)
    assert "does not say its pixel size" in msg and "-o pixel_size_um=P" in msg
    s = SlideMicroscope(ndtiff["nopx"], pixel_size_um=0.5, fov=N, realtime=False)
    assert s.pixel_size_um == 0.5


def test_bad_ndtiff_folders_get_one_line_naming_the_folder_and_the_fix(ndtiff, tmp_path,
                                                                      monkeypatch):
    msg = _error(load_slide, ndtiff["row"])
    assert "row_1" in msg and "image has shape (1, 1, 50)" in msg
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    msg = _error(load_slide, empty)
    assert "empty_folder" in msg and "is a folder without NDTiff.index" in msg
    assert "the one holding NDTiff.index" in msg
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "NDTiff.index").write_bytes(b"\x00\x01garbage")
    msg = _error(load_slide, broken)
    assert "broken" in msg and "cannot be read as NDTiff" in msg
    assert "give the NDTiff dataset folder" in msg
    # ndstorage not installed (it is here: a module set to None in sys.modules makes its
    # import fail, as on a machine without it; nothing else is replaced)
    monkeypatch.setitem(sys.modules, "ndstorage", None)
    msg = _error(load_slide, ndtiff["two"])
    assert "two" in msg and "'ndstorage' is not installed" in msg
    assert "pip install ndstorage" in msg


# -- options ------------------------------------------------------------------------------
@pytest.mark.parametrize("word,want", [
    ("1", True), ("true", True), ("yes", True), ("on", True), ("TRUE", True),
    (" Yes ", True), ("On", True), ("0", False), ("false", False), ("no", False),
    ("off", False), ("OFF", False), ("No", False), ("FALSE", False), (True, True),
    (1, True), (0, False), (False, False)])
def test_yes_no_option_words_in_any_case(tmp_path, word, want):
    s = SlideMicroscope(_npz(tmp_path), pixel_size_um=0.5, fov=N, realtime=word)
    assert s.realtime is want


@pytest.mark.parametrize("name,top,above", [
    ("exposure_ms", 1e5, 1e5 + 0.5), ("xy_settle_ms", 1e5, 1e5 + 0.5),
    ("z_settle_ms", 1e5, 1e5 + 0.5), ("pixel_size_um", 1e6, 1e6 + 0.5),
    ("z_step_um", 1e6, 1e6 + 0.5), ("channel", 1e6, 1e6 + 1), ("seed", 2**63, 3 * 2**62),
])
def test_each_option_upper_bound_is_allowed_and_beyond_it_refused(tmp_path, name, top,
                                                                  above):
    p = _npz(tmp_path)
    base = {"pixel_size_um": 0.5, "fov": N, "realtime": False}
    SlideMicroscope(p, **(base | {name: top}))
    msg = _error(SlideMicroscope, p, **(base | {name: above}))
    assert f"{name}=" in msg and "is not allowed" in msg


@pytest.mark.parametrize("seed", [0, 127, 2**32])
def test_any_whole_seed_from_0_is_allowed(tmp_path, seed):
    s = SlideMicroscope(_npz(tmp_path), pixel_size_um=0.5, fov=N, seed=seed,
                        realtime=False)
    assert s.snap().shape == (N, N)


def test_option_defaults(tmp_path):
    """What ``-o path=FILE`` alone gives beyond fov and noise: 0.35 µm/µm defocus,
    10 ms frames, 20 ms / 10 ms settle times, real time, channel 0, noise seed 0, a
    clock starting at 0, the planes held as float32."""
    p = tmp_path / "d.npz"
    np.savez(p, image=_img(), pixel_size_um=0.5)
    s = SlideMicroscope(p)
    assert s.defocus == 0.35 and s.exposure_ms == 10.0
    assert (s.xy_settle_ms, s.z_settle_ms) == (20.0, 10.0)
    assert s.realtime is True and s.sim_time_s == 0.0
    assert s._stack.dtype == np.float32
    a = SlideMicroscope(p, fov=N, noise=0.05, realtime=False)
    b = SlideMicroscope(p, fov=N, noise=0.05, seed=0, realtime=False)
    f = a.snap()
    np.testing.assert_array_equal(f.pixels, b.snap().pixels)
    assert f.metadata["sim_time_s"] == 0.0


@pytest.mark.parametrize("dtype", [np.float64, np.int16, np.int32])
def test_frames_are_float32_unless_the_file_is_8_or_16_bit_unsigned(tmp_path, dtype):
    p = _npz(tmp_path, image=_img().astype(dtype))
    s = SlideMicroscope(p, pixel_size_um=0.5, fov=N, noise=0, realtime=False)
    assert s.snap().pixels.dtype == np.float32


def test_a_two_plane_stack_is_a_stack(tmp_path):
    """Two planes are optical sections with a z range of one step (not a 2-D image's
    +/- 50 µm defocus range)."""
    p = _npz(tmp_path, image=_img((2, 40, 50)))
    s = SlideMicroscope(p, pixel_size_um=0.5, z_step_um=0.4, fov=N, realtime=False)
    assert s.optical_sectioning is True
    assert s.guard.limits.z == pytest.approx((0.0, 0.4))
    with pytest.raises(MoveRefused):
        s.move_z(0.5)


def test_background_and_bright_are_exact_percentiles_of_a_small_image(tmp_path):
    """Every pixel of a small image counts (no subsampling); the background is the 10th
    percentile of the image smoothed by a Gaussian of BACKGROUND_SMOOTH_PX (its pixel
    noise averaged away, reflected at the border), the bright level that of the image."""
    from scipy.ndimage import gaussian_filter

    from inscope.acquisition.slide import BACKGROUND_SMOOTH_PX

    img = np.random.default_rng(5).uniform(0, 1000, (300, 300)).astype(np.float32)
    s = SlideMicroscope(_npz(tmp_path, image=img), pixel_size_um=0.5, fov=N, noise=0,
                        realtime=False)
    smooth = gaussian_filter(img.astype(np.float64), BACKGROUND_SMOOTH_PX, mode="reflect")
    assert s.background == pytest.approx(np.percentile(smooth, 10), rel=1e-5)
    assert s.bright == pytest.approx(np.percentile(img, 99.9))


def test_noise_is_relative_to_the_range_of_a_normalised_image(tmp_path):
    """An image scaled to [0, 0.2] (as after normalisation): noise=0.1 is 10 % of its
    signal range, not of one grey level."""
    img = np.random.default_rng(6).uniform(0, 0.2, (100, 100)).astype(np.float32)
    p = _npz(tmp_path, image=img)
    s = SlideMicroscope(p, pixel_size_um=1.0, fov=64, noise=0.1, realtime=False)
    d = s.snap().pixels.astype(np.float64) - s.snap().pixels
    rng_ = s.bright - s.background
    assert rng_ < 0.2
    assert float(d.std()) == pytest.approx(np.sqrt(2) * 0.1 * rng_, rel=0.15)


def test_own_soft_limits_replace_the_defaults_and_an_open_axis_is_not_refused(tmp_path):
    """A virtual stage needs no limit on every axis: with the user's limits for x and y
    only, z moves freely (within the usual step size)."""
    p = _npz(tmp_path)
    lim = SoftLimits(x=(0.0, 10.0), y=(0.0, 10.0))
    s = SlideMicroscope(p, pixel_size_um=0.5, fov=N, limits=lim, realtime=False)
    assert s.guard.limits is lim
    assert s.move_z(30.0) and s.position().z == 30.0
    assert s.move_xy(5.0, 5.0)
    with pytest.raises(MoveRefused):
        s.move_xy(11.0, 5.0)


def test_dry_run_checks_moves_but_makes_none(tmp_path):
    s = SlideMicroscope(_npz(tmp_path), pixel_size_um=0.5, fov=N, dry_run=True,
                        realtime=False)
    p0 = s.position()
    assert s.move_xy(p0.x + 1.0, p0.y) is False
    assert s.position() == p0


# -- truth of boxes and of thin stacks ----------------------------------------------------
def test_no_labels_no_boxes_is_an_empty_truth_of_the_right_shapes(tmp_path):
    s = SlideMicroscope(_npz(tmp_path), pixel_size_um=0.5, fov=N, realtime=False)
    t = s.true_cells()
    assert t.ids.shape == (0,) and t.ids.dtype.kind == "i"
    assert t.xyz_um.shape == (0, 3) and t.z_range_um.shape == (0, 2)
    assert t.boxes_px.shape == (0, 4)
    assert s.has_truth is False


def test_boxes_of_a_stack_are_numbered_from_1_at_the_middle_plane(tmp_path):
    p = _savez(tmp_path / "b.npz", image=_img((5, 40, 50)),
               boxes=np.array([[10, 12, 16, 20], [20, 5, 30, 9]]))
    s = SlideMicroscope(p, pixel_size_um=0.5, z_step_um=0.25, fov=N, noise=0,
                        realtime=False)
    t = s.true_cells()
    assert t.ids.tolist() == [1, 2]
    np.testing.assert_allclose(t.xyz_um, [[12.5 * 0.5, 15.5 * 0.5, 0.5],
                                          [24.5 * 0.5, 6.5 * 0.5, 0.5]])
    assert t.z_range_um.shape == (2, 2) and np.isnan(t.z_range_um).all()
    s.move_xy(12.5 * 0.5, 12.5 * 0.5)  # both boxes in view, on every plane
    for z in (0.0, 1.0):
        s.move_z(z)
        assert s.snap().metadata["truth_ids"] == [1, 2]


def test_labels_of_a_two_plane_stack_are_3d(tmp_path):
    p = _npz(tmp_path, image=_img((2, 40, 50)))
    lab = np.zeros((2, 40, 50), np.int32)
    lab[1, 10:20, 10:20] = 5  # only in the upper plane
    s = SlideMicroscope(p, pixel_size_um=0.5, z_step_um=0.4, labels=_savez(
        tmp_path / "l.npz", labels=lab), fov=N, realtime=False)
    t = s.true_cells()
    np.testing.assert_allclose(t.xyz_um, [[14.5 * 0.5, 14.5 * 0.5, 0.4]])
    np.testing.assert_allclose(t.z_range_um, [[0.4, 0.4]])


# -- extrude_to_stack ---------------------------------------------------------------------
def _disc(shape, centre, r, value=1, lab=None) -> np.ndarray:
    lab = np.zeros(shape, np.int32) if lab is None else lab
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    lab[(xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= r ** 2] = value
    return lab


def _expected_planes(lab, i, zc, px, dz, planes, thickness=0.35):
    """Planes whose section of nucleus *i* is not empty: its centre pixel is inside
    the ellipsoid where |z - zc| <= its half-thickness."""
    hz = thickness * 2 * np.sqrt((lab == i).sum() / np.pi) * px
    return [k for k in range(planes) if abs(k * dz - zc) <= hz]


def test_extrude_defaults(tmp_path):
    lab = _disc((40, 40), (20, 20), 6)
    img = np.where(lab > 0, 1000, 100).astype(np.uint16)
    stack, labs = extrude_to_stack(img, lab, 0.5)
    s2, l2 = extrude_to_stack(img, lab, 0.5, z_step_um=0.5, planes=41, thickness=0.35,
                              z_spread_um=2.0, haze=0.5, haze_sigma_um=2.5, seed=0)
    assert stack.shape == (41, 40, 40)
    np.testing.assert_array_equal(stack, s2)
    np.testing.assert_array_equal(labs, l2)


def test_extrude_each_nucleus_spans_its_half_thickness_exactly():
    """Each nucleus' sections span exactly the planes within its half-thickness of its
    centre: a large disc, a small one and a 3 x 3 one (its centre pixel is its
    middle)."""
    lab = _disc((60, 80), (20, 30), 10)
    lab = _disc((60, 80), (50, 30), 4, value=2, lab=lab)
    lab[29:32, 69:72] = 3
    img = np.where(lab > 0, 1000, 100).astype(np.uint16)
    px, dz, planes = 0.5, 0.05, 161
    _, labs = extrude_to_stack(img, lab, px, z_step_um=dz, planes=planes,
                               z_spread_um=0.0, haze=0.0)
    for i in (1, 2, 3):
        got = np.flatnonzero((labs == i).any(axis=(1, 2))).tolist()
        assert got == _expected_planes(lab, i, (planes - 1) / 2 * dz, px, dz, planes)


def test_extrude_sections_of_a_round_nucleus_are_symmetric():
    """A disc centred in a square image: every section (and the haze around it) is
    symmetric top-bottom, left-right and about the diagonal."""
    lab = _disc((61, 61), (30, 30), 9)
    img = np.where(lab > 0, 1000, 100).astype(np.uint16)
    stack, labs = extrude_to_stack(img, lab, 0.5, z_step_um=0.25, planes=61,
                                   z_spread_um=0.0, haze=0.5)
    for k in range(0, 61, 3):
        for a in (labs[k], stack[k]):
            np.testing.assert_array_equal(a, a[::-1])
            np.testing.assert_array_equal(a, a[:, ::-1])
            np.testing.assert_array_equal(a, a.T)
    assert 0 < (labs[20] > 0).sum() < (labs[30] > 0).sum() == (lab > 0).sum()
    # near a pole the section is a small disc at the nucleus' centre, not its rim
    assert labs[19][30, 30] == 1 and labs[19][30, 21] == 0


def test_extrude_z_centres_are_the_seeded_uniform_draws():
    lab = _disc((40, 80), (15, 20), 7)
    lab = _disc((40, 80), (45, 20), 7, value=2, lab=lab)
    lab = _disc((40, 80), (68, 20), 7, value=3, lab=lab)
    img = np.where(lab > 0, 1000, 100).astype(np.uint16)
    px, dz, planes, spread = 0.5, 0.1, 101, 2.0
    _, labs = extrude_to_stack(img, lab, px, z_step_um=dz, planes=planes,
                               z_spread_um=spread, haze=0.0, seed=11)
    draws = np.random.default_rng(11).uniform(-spread, spread, 3)
    for i in (1, 2, 3):
        got = np.flatnonzero((labs == i).any(axis=(1, 2))).tolist()
        zc = (planes - 1) / 2 * dz + draws[i - 1]
        assert got == _expected_planes(lab, i, zc, px, dz, planes)


def test_extrude_brightness_background_and_types():
    """A section shows the nucleus at its own 2-D brightness over the background (the
    image's 10th percentile), a nucleus pixel darker than the background adds nothing,
    a zero background stays zero; float images give float32, labels are int32."""
    yy, xx = np.mgrid[0:40, 0:50]
    lab = _disc((40, 50), (25, 20), 6)
    img = (xx * 2.0 + np.where(lab > 0, 1000.0, 0.0)).astype(np.float32)
    img[20, 25] = 1.0  # a dark pixel inside the nucleus
    stack, labs = extrude_to_stack(img, lab, 0.5, planes=21, z_spread_um=0.0, haze=0.0)
    bg = np.float32(np.percentile(img, 10))
    assert stack.dtype == np.float32 and labs.dtype == np.int32
    inside = lab > 0
    inside[20, 25] = False
    np.testing.assert_array_equal(stack[10][inside], img[inside])
    assert stack[10][20, 25] == bg
    np.testing.assert_array_equal(stack[10][lab == 0], bg)
    zero_bg = np.where(lab > 0, 1000.0, 0.0)  # float64 in: float32 out
    st, _ = extrude_to_stack(zero_bg, lab, 0.5, planes=21, z_spread_um=0.0, haze=0.0)
    assert st.dtype == np.float32
    assert st[10][lab == 0].max() == 0 and st[0].max() == 0


def test_extrude_without_nuclei_is_the_background_in_every_plane():
    img = np.full((30, 40), 100, np.uint16)
    stack, labs = extrude_to_stack(img, np.zeros((30, 40), np.int32), 0.5, planes=5)
    assert stack.shape == labs.shape == (5, 30, 40)
    assert np.all(stack == 100) and not labs.any()


def test_png_and_jpeg_pictures_are_slides_with_grey_png_labels(tmp_path):
    """A picture (how many nuclei datasets ship: 8 / 16-bit PNG, with grey PNG instance
    masks) is one plane; colour is the mean of its samples, as for an RGB TIFF; it says
    no pixel size, which the microscope then asks for."""
    import cv2

    img = _img()
    cv2.imwrite(str(tmp_path / "grey16.png"), img)
    sf = load_slide(tmp_path / "grey16.png")
    assert sf.image.shape == (1, 40, 50) and sf.image.dtype == np.uint16
    assert np.array_equal(sf.image[0], img) and sf.pixel_size_um is None
    bgr = np.dstack([img // 2, img, img * 0]).astype(np.uint8)  # B, G, R
    cv2.imwrite(str(tmp_path / "colour.PNG"), bgr)
    assert np.allclose(load_slide(tmp_path / "colour.PNG").image[0], bgr.mean(axis=2),
                       atol=0.5)
    cv2.imwrite(str(tmp_path / "pic.jpg"), (img // 2).astype(np.uint8))
    assert load_slide(tmp_path / "pic.jpg").image.shape == (1, 40, 50)
    lab = np.zeros((40, 50), np.uint16)
    lab[5:15, 5:20], lab[20:30, 30:45] = 1, 300
    cv2.imwrite(str(tmp_path / "labels.png"), lab)
    sf = load_slide(tmp_path / "grey16.png", labels=tmp_path / "labels.png")
    assert np.array_equal(sf.labels[0], lab)
    msg = _error(SlideMicroscope, path=tmp_path / "grey16.png", fov=N)
    assert "grey16.png" in msg and "-o pixel_size_um=P" in msg
    scope = SlideMicroscope(path=tmp_path / "grey16.png", pixel_size_um=0.5, fov=N,
                            labels=tmp_path / "labels.png")
    try:
        assert scope.snap().pixels.shape == (N, N)
    finally:
        scope.close()


def test_bad_pictures_get_one_line_naming_the_file_the_problem_and_the_fix(tmp_path):
    import cv2

    (tmp_path / "broken.png").write_bytes(b"not a png")
    msg = _error(load_slide, tmp_path / "broken.png")
    assert "broken.png" in msg and "cannot be read as a PNG picture" in msg
    assert "save it as TIFF or npz" in msg
    cv2.imwrite(str(tmp_path / "img.png"), _img())
    cv2.imwrite(str(tmp_path / "rgb_labels.png"), np.zeros((40, 50, 3), np.uint8))
    msg = _error(load_slide, tmp_path / "img.png", labels=tmp_path / "rgb_labels.png")
    assert "rgb_labels.png" in msg and "labels picture has 3 colour samples" in msg
    assert "grey 8 / 16-bit PNG of integer ids" in msg


def test_a_fiji_two_channel_confocal_hyperstack_opens_with_its_sizes_channel_and_labels(
        tmp_path):
    """The layout of a two-channel confocal stack saved from Fiji (ZCYX, µm sizes in the
    resolution and ``spacing``, labels in a TIFF beside it), as
    ``benchmarks.confocal_stack`` writes it: channel 1 is the nuclei, plane for plane."""
    from benchmarks.confocal_stack import confocal_nuclei_stack, write_confocal_tiff

    kw = {"shape": (11, 48, 64), "z_step_um": 1.0, "seed": 3, "tries": 200}
    img, lab = write_confocal_tiff(tmp_path / "cells.tif", **kw)
    stack, labels = confocal_nuclei_stack(**kw)
    s = SlideMicroscope(img, channel=1, labels=lab, fov=32, noise=0, realtime=False)
    assert s.pixel_size_um == pytest.approx(0.26, rel=1e-6)
    assert s.z_step_um == pytest.approx(1.0, rel=1e-6)
    assert s.optical_sectioning  # a z-stack is read as sectioned by default
    # the middle plane, at the image centre: the file's channel 1 there, not channel 0
    f = s.snap()
    plane = stack[5].astype(np.float32)
    assert f.metadata["plane"] == 5 and plane.max() > 4 * np.median(plane)  # cells here
    # frame pixel k shows image coordinate k - 16 + (n - 1) / 2: half-way between pixels
    # here (an even image), so each frame pixel is the mean of four image pixels
    y0 = np.arange(32) - 16 + (48 - 2) // 2
    x0 = np.arange(32) - 16 + (64 - 2) // 2
    want = 0.25 * (plane[np.ix_(y0, x0)] + plane[np.ix_(y0 + 1, x0)]
                   + plane[np.ix_(y0, x0 + 1)] + plane[np.ix_(y0 + 1, x0 + 1)])
    assert np.allclose(np.asarray(f.pixels, np.float32), want, atol=1.0)
    assert sorted(s.true_cells().ids.tolist()) == sorted(
        int(k) for k in np.unique(labels) if k)
