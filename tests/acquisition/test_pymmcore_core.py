"""A pymmcore ``CMMCore`` / pymmcore-plus ``CMMCorePlus`` the user already holds, as a
backend: the real C++ MMCore with the real DemoCamera / DXYStage / DStage adapters
(mm-test-adapters), in its own core beside the session's pycromanager core.

DemoCamera's "Fluorescent Beads" mode with an RGB pixel type segfaults inside the adapter
(with or without inscope), so colour is tested with "Color Test Pattern" / "Noise" only.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest

from inscope.acquisition.errors import DeviceError, MoveRefused
from inscope.acquisition.frame import colour_to_grey
from inscope.acquisition.micromanager import MicroManagerMicroscope
from inscope.acquisition.pymmcore_core import (
    PixelFormat,
    SnakeCaseCore,
    as_snake_case_core,
    snake_to_camel,
    to_gray,
)


def _load_demo(core) -> None:
    import mm_test_adapters

    path = str(mm_test_adapters.device_adapter_path())
    core.setDeviceAdapterSearchPaths([path])
    core.loadSystemConfiguration(os.path.join(path, "MMConfig_demo.cfg"))
    cam = core.getCameraDevice()
    core.setProperty(cam, "PixelType", "16bit")  # before the mode (see module doc)
    core.setProperty(cam, "Mode", "Fluorescent Beads")
    core.setExposure(5.0)


@pytest.fixture(scope="module")
def pm_core():
    """A plain pymmcore CMMCore (camelCase API) with the demo configuration."""
    import pymmcore

    core = pymmcore.CMMCore()
    _load_demo(core)
    yield core
    if core.isSequenceRunning():
        core.stopSequenceAcquisition()
    core.unloadAllDevices()


@pytest.fixture
def core(pm_core):
    cam = pm_core.getCameraDevice()
    if pm_core.isSequenceRunning():
        pm_core.stopSequenceAcquisition()
    pm_core.setProperty(cam, "PixelType", "16bit")
    pm_core.setProperty(cam, "Mode", "Fluorescent Beads")
    pm_core.setXYPosition(0.0, 0.0)
    pm_core.setPosition(0.0)
    pm_core.waitForSystem()
    return pm_core


def test_snake_to_camel_names_micro_managers_acronyms():
    assert snake_to_camel("get_camera_device") == "getCameraDevice"
    assert snake_to_camel("get_xy_stage_device") == "getXYStageDevice"
    assert snake_to_camel("set_xy_position") == "setXYPosition"
    assert snake_to_camel("get_pixel_size_um") == "getPixelSizeUm"
    assert snake_to_camel("start_continuous_sequence_acquisition") == \
        "startContinuousSequenceAcquisition"


def test_adapter_forwards_to_the_users_core(core):
    snake = as_snake_case_core(core)
    assert isinstance(snake, SnakeCaseCore) and snake.wrapped is core
    assert snake.get_xy_stage_device() == core.getXYStageDevice() == "XY"
    assert snake.get_camera_device() == "Camera"
    with pytest.raises(AttributeError, match=r"^CMMCore has no 'getNoSuchThing' "
                       r"\(asked as 'get_no_such_thing'\)$"):
        snake.get_no_such_thing()
    # a pycromanager core already speaks snake_case: used unwrapped
    assert as_snake_case_core(snake) is snake
    with pytest.raises(TypeError, match="^object is not a Micro-Manager core"):
        SnakeCaseCore(object())
    # Python's own protocol names are never taken for Micro-Manager calls
    with pytest.raises(AttributeError, match="^__array__$"):
        snake.__array__  # noqa: B018 - the lookup is the test
    assert repr(snake) == "SnakeCaseCore(CMMCore)"


def test_popped_images_carry_the_cores_metadata_tags(core):
    # the pymmcore path of pycromanager's pop_next_tagged_image: the frame's camera,
    # size and number come from the tags
    snake = as_snake_case_core(core)
    core.startSequenceAcquisition(2, 0.0, True)
    try:
        deadline = time.monotonic() + 5.0
        while core.getRemainingImageCount() < 1:
            assert time.monotonic() < deadline, "the camera delivered no image"
            time.sleep(0.005)
        img = snake.pop_next_tagged_image()
    finally:
        if core.isSequenceRunning():
            core.stopSequenceAcquisition()
    assert img.pix.shape == (512, 512)
    assert img.tags["Camera"] == "Camera"
    assert (int(img.tags["Width"]), int(img.tags["Height"])) == (512, 512)
    assert "ImageNumber" in img.tags


# -- to_gray: what a core hands over, as a Frame's pixels -----------------------------
# The Java bridge (pycromanager's Core() talking to the GUI) hands flat native-endian
# arrays (pyjavaz: byte / short / int / float arrays); in-process cores give (H, W).
# Shapes are 2 x 3 so that height and width cannot stand in for each other.


@pytest.mark.parametrize("pix", [np.arange(6, dtype=np.uint16) * 1000,
                                 (np.arange(6) * 1000).astype(">u2")])
def test_a_flat_bridge_image_becomes_height_by_width_in_native_order(pix):
    out = to_gray(pix, 2, 3, PixelFormat(2, 1))
    assert out.shape == (2, 3) and out.dtype == np.uint16 and out.dtype.isnative
    np.testing.assert_array_equal(out, np.arange(6).reshape(2, 3) * 1000)


def test_a_2d_image_of_the_wrong_shape_but_the_right_size_is_laid_out_as_reported():
    out = to_gray(np.arange(6, dtype=np.uint8).reshape(3, 2), 2, 3, PixelFormat(1, 1))
    np.testing.assert_array_equal(out, [[0, 1, 2], [3, 4, 5]])


@pytest.mark.parametrize("dtype", [np.int32, np.int16, np.float64, np.uint32])
def test_grey_pixels_of_other_types_become_float32_with_their_values(dtype):
    pix = np.array([[0, 1, 2], [3, 4, 70]], dtype)
    out = to_gray(pix, 2, 3, None if dtype == np.uint32 else PixelFormat(2, 1))
    if dtype == np.uint32:  # no description: a uint32 array is packed BGRA
        np.testing.assert_array_equal(out, colour_to_grey(pix.view(np.uint8)
                                                          .reshape(2, 3, 4)))
        return
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, pix.astype(np.float32))


def test_packed_colour_without_a_description_is_read_as_bgra():
    # an old bridge without getBytesPerPixel(): a uint32 array, or bytes four per pixel
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 30, 60, 90, 255
    want = np.full((2, 3), 60, np.uint8)  # the mean of B, G, R; alpha ignored
    np.testing.assert_array_equal(to_gray(bgra.view(np.uint32).reshape(2, 3), 2, 3, None),
                                  want)
    np.testing.assert_array_equal(to_gray(bgra.reshape(-1), 2, 3, None), want)


def test_a_colour_image_of_the_wrong_size_names_the_size_and_the_fix():
    with pytest.raises(DeviceError) as e:
        to_gray(np.zeros(5, np.uint32), 2, 3, PixelFormat(4, 4))
    assert "20 channel values, expected 4x2x3" in str(e.value)
    assert "ROI/binning" in str(e.value)


def test_plain_cmmcore_is_a_backend_snap_and_move(core):
    scope = MicroManagerMicroscope(core)  # failed before: no attribute get_camera_device
    assert scope.camera == "Camera" and scope.xy_device == "XY" and scope.z_device == "Z"
    f = scope.snap()
    # the frame holds exactly the image the core exposed, in its own dtype
    assert f.pixels.dtype == np.uint16 and f.pixels.shape == (512, 512)
    np.testing.assert_array_equal(f.pixels, core.getImage())
    assert f.pixel_size_um == pytest.approx(core.getPixelSizeUm())
    assert f.metadata["exposure_ms"] == pytest.approx(5.0)
    assert scope.move_xy(12.0, -7.0) is True
    assert core.getXPosition() == pytest.approx(12.0, abs=0.01)
    assert core.getYPosition() == pytest.approx(-7.0, abs=0.01)
    assert scope.move_z(3.0) and core.getPosition() == pytest.approx(3.0, abs=0.01)
    # demo soft limits still apply to the user's core
    with pytest.raises(MoveRefused):
        scope.move_xy(60_000.0, 0.0)
    assert core.getXPosition() == pytest.approx(12.0, abs=0.01)


def test_from_core_leaves_the_users_camera_settings(core):
    cam = core.getCameraDevice()
    core.setProperty(cam, "Mode", "Noise")
    scope = MicroManagerMicroscope.from_core(core)
    assert scope.backend == "pymmcore" and scope.name == "micromanager-pymmcore:Camera"
    assert core.getProperty(cam, "Mode") == "Noise"  # no DemoCamera defaults forced
    scope.close()
    assert core.getProperty(cam, "PixelType") == "16bit"  # the core is still usable
    core.snapImage()


def test_32bit_grayscale_is_float_not_packed_bgra(core):
    """DemoCamera PixelType=32bit: 4 bytes, 1 component, IEEE floats in a uint32 array."""
    cam = core.getCameraDevice()
    scope = MicroManagerMicroscope.from_core(core)
    ref16 = scope.snap().pixels.astype(float)
    core.setProperty(cam, "PixelType", "32bit")
    assert PixelFormat.of(as_snake_case_core(core)) == PixelFormat(4, 1)
    f = scope.snap()
    assert f.pixels.dtype == np.float32 and f.pixels.shape == (512, 512)
    np.testing.assert_array_equal(f.pixels, core.getImage().view(np.float32))
    assert np.all(np.isfinite(f.pixels)) and 0.0 <= f.pixels.min() and f.pixels.max() <= 1.0
    # the same beads as in the 16-bit image (read as BGRA they were noise around 38)
    r = np.corrcoef(ref16.ravel(), f.pixels.astype(float).ravel())[0, 1]
    assert r > 0.4


def test_rgb_camera_becomes_the_mean_of_its_colours(core):
    cam = core.getCameraDevice()
    core.setProperty(cam, "Mode", "Color Test Pattern")  # never beads with RGB
    core.setProperty(cam, "PixelType", "32bitRGB")
    try:
        scope = MicroManagerMicroscope.from_core(core)
        assert PixelFormat.of(scope.core) == PixelFormat(4, 4)
        f = scope.snap()
        bgra = core.getImage().view(np.uint8).reshape(512, 512, 4).astype(float)
        mean = bgra[..., :3].mean(axis=2)  # alpha ignored
        assert f.pixels.dtype == np.uint8
        assert np.abs(f.pixels.astype(float) - mean).max() <= 0.5
        assert f.pixels.std() > 1.0  # a pattern, not a constant
    finally:
        core.setProperty(cam, "PixelType", "16bit")


def test_to_gray_by_description_with_known_values():
    px = np.array([[0x000000FF, 0x0000FF00], [0x00FF0000, 0]], np.uint32)  # B, G, R, 0
    gray = to_gray(px, 2, 2, PixelFormat(4, 4))
    np.testing.assert_array_equal(gray, [[85, 85], [85, 0]])  # 255 / 3 whatever the colour
    floats = np.array([[0.25, 1.5]], np.float32)
    out = to_gray(floats.view(np.uint32), 1, 2, PixelFormat(4, 1))
    np.testing.assert_array_equal(out, floats)
    rgb64 = np.zeros((1, 1, 4), np.uint16)
    rgb64[0, 0, 2] = 1000  # R
    out = to_gray(rgb64.view(np.uint64).reshape(1, 1), 1, 1, PixelFormat(8, 4))
    assert out.dtype == np.uint16 and out[0, 0] == 333  # 1000 / 3, rounded
    with pytest.raises(DeviceError, match="expected 3x3"):
        to_gray(np.zeros(5, np.uint16), 3, 3, PixelFormat(2, 1))


def test_stream_on_a_plain_core_and_live_mode_is_announced(core, caplog):
    scope = MicroManagerMicroscope.from_core(core)
    core.startContinuousSequenceAcquisition(0.0)  # what the GUI's live mode does
    with caplog.at_level(logging.WARNING, logger="inscope"):
        with scope.stream() as s:
            frames = [s.get(timeout=5.0) for _ in range(3)]
    assert any("camera 'Camera' was acquiring" in r.getMessage()
               and "live mode" in r.getMessage() for r in caplog.records)
    idx = [f.index for f in frames]
    assert idx == sorted(idx) and len(set(idx)) == 3
    assert all(f.pixels.shape == (512, 512) for f in frames)
    assert not core.isSequenceRunning()


def test_cmmcoreplus_is_a_backend():
    import pymmcore_plus  # in the test extra: never a silent skip

    mmc = pymmcore_plus.CMMCorePlus()
    _load_demo(mmc)
    try:
        scope = MicroManagerMicroscope.from_core(mmc)
        f = scope.snap()
        np.testing.assert_array_equal(f.pixels, mmc.getImage())
        assert scope.move_xy(5.0, 5.0) and mmc.getXPosition() == pytest.approx(5.0, abs=0.01)
        with scope.stream() as s:
            a, b = s.get(timeout=5.0), s.get(timeout=5.0)
        assert b.index > a.index
    finally:
        mmc.unloadAllDevices()


def test_attach_to_a_running_sequence_instead_of_stopping_it(core, caplog):
    core.startContinuousSequenceAcquisition(0.0)  # the GUI's live mode
    try:
        scope = MicroManagerMicroscope.from_core(core, attach_running=True)
        with caplog.at_level(logging.INFO, logger="inscope"):
            with scope.stream() as s:
                frames = [s.get(timeout=5.0) for _ in range(3)]
        assert core.isSequenceRunning()  # still running for its owner
        assert any("attaching to the sequence already running on camera 'Camera'"
                   in r.getMessage() for r in caplog.records)
        assert not any("was acquiring" in r.getMessage() for r in caplog.records)
        idx = [f.index for f in frames]
        assert idx == sorted(idx) and len(set(idx)) == 3
        assert all(f.metadata.get("attached") for f in frames)
        assert frames[0].pixels.dtype == np.uint16 and frames[0].pixels.std() > 0
    finally:
        core.stopSequenceAcquisition()


def test_attach_on_pycromanagers_headless_core(mm_scope):
    from inscope.acquisition.factory import open_microscope

    c = mm_scope.core  # pycromanager's snake_case CMMCore subclass
    c.start_continuous_sequence_acquisition(0.0)
    try:
        scope = open_microscope("headless", attach_running=True, camera_properties={})
        with scope.stream() as s:
            a, b = s.get(timeout=5.0), s.get(timeout=5.0)
        assert b.index > a.index and c.is_sequence_running()
    finally:
        c.stop_sequence_acquisition()


def test_from_core_takes_the_callers_limits_and_dry_run(core):
    """Limits and dry-run given with a user's core are the ones its moves obey."""
    scope = MicroManagerMicroscope.from_core(core, limits={"x": [-10, 10], "y": [-10, 10]})
    assert scope.limits.x == (-10.0, 10.0)
    with pytest.raises(MoveRefused):
        scope.move_xy(20.0, 0.0)
    assert core.getXPosition() == pytest.approx(0.0, abs=0.01)
    dry = MicroManagerMicroscope.from_core(core, dry_run=True)
    assert dry.guard.dry_run
    dry.move_xy(8.0, 4.0)
    assert (core.getXPosition(), core.getYPosition()) == pytest.approx((0.0, 0.0), abs=0.01)
    assert not MicroManagerMicroscope.from_core(core).attach_running


def test_a_new_democamera_gets_its_beads_and_the_exposure_asked_for(core):
    """Wrapping a core directly (not from_core) applies the DemoCamera defaults - beads
    that move with the stage, not noise - and the exposure given."""
    cam = core.getCameraDevice()
    core.setProperty(cam, "Mode", "Noise")
    scope = MicroManagerMicroscope(core, exposure_ms=12.0)
    assert core.getProperty(cam, "Mode") == "Fluorescent Beads"
    assert core.getExposure() == pytest.approx(12.0)
    assert scope.snap().metadata["backend"] == "headless"  # the constructor's default
    core.setExposure(5.0)
    kept = MicroManagerMicroscope(core, camera_properties={"Mode": "Noise"})
    assert core.getProperty(cam, "Mode") == "Noise" and kept.exposure_ms == pytest.approx(5.0)
    core.setProperty(cam, "Mode", "Fluorescent Beads")
