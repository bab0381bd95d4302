"""What a recording's own metadata tells the replay, read the way the file means it.

A replayed recording is only as good as its metadata: each frame's stage position (the
records, the control loop and every benchmark score on it) and the pixel size (every
move in µm). Real files written with tifffile in tmp_path, in the layouts Micro-Manager,
Bio-Formats / Fiji and plain TIFF writers use; each value is known.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile

from inscope.acquisition.replay import ReplayMicroscope, ome_sizes
from inscope.acquisition.slide import SlideMicroscope


def _planes(n: int, shape=(2, 3)) -> np.ndarray:
    """Planes whose first pixel is their index in the file (to tell frames apart)."""
    a = np.zeros((n, 8, 8), np.uint16)
    a[:, 0, 0] = np.arange(n)
    return a.reshape(*shape, 8, 8) if shape else a


def _positions(scope: ReplayMicroscope, n: int) -> list[tuple[int, float, float, float]]:
    out = []
    for _ in range(n):
        f = scope.snap()
        assert f.position is not None
        out.append((int(f.pixels[0, 0]), f.position.x, f.position.y, f.position.z))
    return out


@pytest.mark.parametrize("axes", ["TZYX", "ZTYX"])
def test_each_frame_gets_the_position_of_its_own_plane_whatever_the_axis_order(tmp_path,
                                                                             axes):
    """OME DimensionOrder XYCTZ (z slowest, tifffile axes ZT...) stores the planes of a
    time point apart; the positions must still follow the frames (they went in (T, Z)
    order whatever the file's order, so a ZT stack's frame 1 read the z of plane 3)."""
    a = _planes(6)  # 2 x 3 planes, file order
    # plane k of the file sits at x = k, and z = 10 x its Z index
    zi = [k // 3 if axes == "ZTYX" else k % 3 for k in range(6)]
    path = tmp_path / "rec.ome.tif"
    tifffile.imwrite(path, a, metadata={
        "axes": axes, "PhysicalSizeX": 0.5,
        "Plane": {"PositionX": [float(k) for k in range(6)], "PositionY": [7.0] * 6,
                  "PositionZ": [10.0 * z for z in zi]}})
    got = _positions(ReplayMicroscope(path, fps=0), 6)
    assert got == [(k, float(k), 7.0, 10.0 * zi[k]) for k in range(6)]


@pytest.mark.parametrize(("unit", "size", "um"), [
    ("µm", 0.65, 0.65), ("μm", 0.65, 0.65), ("um", 0.65, 0.65),  # micro sign, Greek mu
    ("nm", 325.0, 0.325), ("mm", 0.0011, 1.1), ("cm", 0.00011, 1.1), ("m", 1.1e-6, 1.1),
])
def test_the_ome_pixel_size_is_read_in_its_own_unit(tmp_path, unit, size, um):
    path = tmp_path / "unit.ome.tif"
    tifffile.imwrite(path, _planes(2, None), metadata={
        "axes": "TYX", "PhysicalSizeX": size, "PhysicalSizeXUnit": unit,
        "PhysicalSizeY": size, "PhysicalSizeYUnit": unit})
    assert ReplayMicroscope(path).pixel_size_um == pytest.approx(um)


def test_a_pixel_size_not_in_a_length_unit_is_not_guessed(tmp_path, caplog):
    path = tmp_path / "pixel.ome.tif"
    tifffile.imwrite(path, _planes(2, None), metadata={
        "axes": "TYX", "PhysicalSizeX": 2.0, "PhysicalSizeXUnit": "pixel"})
    with caplog.at_level(logging.WARNING, logger="inscope.acquisition.replay"), \
            pytest.warns(UserWarning, match="records no pixel size"):
        scope = ReplayMicroscope(path)
    assert scope.pixel_size_um == 1.0  # not 2.0 "µm" read from a size in pixels
    assert any("PhysicalSizeX is given in 'pixel'" in r.getMessage() for r in caplog.records)


def test_ome_sizes_read_x_and_z_each_in_its_unit_with_or_without_the_namespace():
    ns = ('<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0">'
          '<Pixels ID="Pixels:0" PhysicalSizeX="0.26" PhysicalSizeZ="290" '
          'PhysicalSizeZUnit="nm" SizeX="8" SizeY="8" SizeZ="1" SizeC="1" SizeT="1" '
          'DimensionOrder="XYZCT" Type="uint16"/></Image></OME>')
    assert ome_sizes(ns) == pytest.approx((0.26, 0.29))
    bare = ('<OME><Image><Pixels PhysicalSizeX="650" PhysicalSizeXUnit="nm"/></Image>'
            '</OME>')
    assert ome_sizes(bare) == (pytest.approx(0.65), None)
    assert ome_sizes("<OME><Image/></OME>") == (None, None)  # no Pixels element
    assert ome_sizes("not xml <") == (None, None)
    assert ome_sizes('<OME><Image><Pixels PhysicalSizeX="0"/></Image></OME>') == (None, None)


def test_a_slide_z_stack_takes_its_z_step_in_the_files_unit(tmp_path):
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(path, np.zeros((3, 64, 64), np.uint16), metadata={
        "axes": "ZYX", "PhysicalSizeX": 260.0, "PhysicalSizeXUnit": "nm",
        "PhysicalSizeZ": 0.5, "PhysicalSizeZUnit": "µm"})
    with SlideMicroscope(path, fov=32) as scope:
        assert scope.pixel_size_um == pytest.approx(0.26)
        assert scope.z_step_um == pytest.approx(0.5)


def test_a_zero_time_increment_is_no_frame_rate(tmp_path):
    path = tmp_path / "t0.ome.tif"
    tifffile.imwrite(path, _planes(2, None), metadata={
        "axes": "TYX", "PhysicalSizeX": 0.5, "TimeIncrement": 0.0})
    scope = ReplayMicroscope(path)
    assert scope.fps == 10.0  # replay's default rate, not 1/0


def test_channel_zero_of_a_multi_channel_recording(tmp_path):
    a = _planes(4, (2, 2))  # T, C
    path = tmp_path / "c.ome.tif"
    tifffile.imwrite(path, a, metadata={
        "axes": "TCYX", "PhysicalSizeX": 0.5,
        "Plane": {"PositionX": [0.0, 100.0, 1.0, 101.0], "PositionY": [0.0] * 4,
                  "PositionZ": [0.0] * 4}})
    got = _positions(ReplayMicroscope(path, fps=0, channel=0), 2)
    assert got == [(0, 0.0, 0.0, 0.0), (2, 1.0, 0.0, 0.0)]


# ImageJ writes ASCII: the micro sign or Greek mu as an escape (any case); "microns" and
# "UM" as a user typed them in Image > Properties. The slide reads all of them, so must the
# replay of the same file (it took 1 µm per pixel for the last four).
@pytest.mark.parametrize("unit", ["micron", "\\u00B5m", "um", "microns", "\\u00b5m",
                                  "\\u03BCm", "UM"])
def test_imagej_pixel_sizes_in_every_spelling_fiji_writes(tmp_path, unit):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, _planes(2, None), imagej=True, resolution=(1 / 0.4, 1 / 0.4),
                     metadata={"axes": "TYX", "unit": unit})
    assert ReplayMicroscope(path).pixel_size_um == pytest.approx(0.4, rel=1e-4)


def test_a_plain_tiff_resolution_in_pixels_per_centimetre(tmp_path):
    path = tmp_path / "cm.tif"
    # 0.5 µm pixels = 20,000 pixels per cm
    tifffile.imwrite(path, _planes(2, None), resolution=(20_000, 20_000),
                     resolutionunit="CENTIMETER")
    assert ReplayMicroscope(path).pixel_size_um == pytest.approx(0.5)


def test_a_plain_tiff_resolution_in_inches_is_not_a_pixel_size(tmp_path):
    """Dots per inch (72 by default in many writers) describe printing, not optics."""
    path = tmp_path / "dpi.tif"
    tifffile.imwrite(path, _planes(2, None), resolution=(72, 72), resolutionunit="INCH")
    with pytest.warns(UserWarning, match="records no pixel size"):
        assert ReplayMicroscope(path).pixel_size_um == 1.0


def test_an_rgba_recording_plays_as_grey(tmp_path):
    rgba = np.zeros((2, 8, 8, 4), np.uint8)
    rgba[0, ..., 0] = 90  # frame 0 red, frame 1 green; alpha opaque
    rgba[1, ..., 1] = 60
    rgba[..., 3] = 255
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
    with pytest.warns(UserWarning, match="records no pixel size"):
        scope = ReplayMicroscope(path, fps=0)
    f0, f1 = scope.snap(), scope.snap()
    assert f0.pixels.shape == (8, 8) and f1.pixels.shape == (8, 8)
    assert float(f0.pixels.mean()) > float(f1.pixels.mean()) > 0


_OME = ('<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" '
        'SizeX="8" SizeY="8" SizeZ="1" SizeC="1" SizeT="3" PhysicalSizeX="0.5">'
        '<Channel ID="Channel:0:0" SamplesPerPixel="1"/>{planes}'
        '<TiffData/></Pixels></Image></OME>')


def test_ome_planes_are_matched_by_their_indices_not_their_order_in_the_xml(tmp_path):
    """OME-XML may list its Plane elements in any order, and may leave out what has its
    default: TheC / TheZ (0) and PositionY / PositionZ (0 here: not given)."""
    planes = ('<Plane TheT="2" PositionX="20.0" PositionY="1.5"/>'
              '<Plane TheT="0" TheZ="0" TheC="0" PositionX="0.0" PositionZ="4.0"/>'
              '<Plane TheT="1" PositionX="10.0"/>')
    path = tmp_path / "hand.ome.tif"
    tifffile.imwrite(path, _planes(3, None), photometric="minisblack", metadata=None,
                     description=_OME.format(planes=planes))
    scope = ReplayMicroscope(path, fps=0)
    assert scope.pixel_size_um == pytest.approx(0.5)
    assert _positions(scope, 3) == [(0, 0.0, 0.0, 4.0), (1, 10.0, 0.0, 0.0),
                                    (2, 20.0, 1.5, 0.0)]


def test_a_recording_of_pixels_that_are_not_square_is_played_with_a_warning(tmp_path,
                                                                          caplog):
    # the slide refuses such a file (it moves a stage by it); a recording's µm are only
    # the boxes', so it is said and played
    from inscope.acquisition.factory import open_microscope

    path = tmp_path / "aniso.ome.tif"
    tifffile.imwrite(path, np.zeros((3, 32, 32), np.uint16), ome=True,
                     metadata={"axes": "TYX", "PhysicalSizeX": 0.4, "PhysicalSizeY": 0.8})
    with caplog.at_level("WARNING", logger="inscope.acquisition.replay"):
        scope = open_microscope("replay", path=str(path))
    try:
        assert scope.pixel_size_um == pytest.approx(0.4)
        said = [r.getMessage() for r in caplog.records if "not square" in r.getMessage()]
        assert len(said) == 1 and "0.4 µm in x, 0.8 in y" in said[0] and "2x" in said[0]
    finally:
        scope.close()
    square = tmp_path / "square.ome.tif"
    tifffile.imwrite(square, np.zeros((3, 32, 32), np.uint16), ome=True,
                     metadata={"axes": "TYX", "PhysicalSizeX": 0.4, "PhysicalSizeY": 0.4})
    caplog.clear()
    with caplog.at_level("WARNING", logger="inscope.acquisition.replay"):
        open_microscope("replay", path=str(square)).close()
    assert not [r for r in caplog.records if "not square" in r.getMessage()]
