"""The Micro-Manager backend on the real C++ MMCore with the real demo device adapters."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from inscope.acquisition import (
    DeviceError,
    MicroscopeUnavailable,
    MoveGuard,
    MoveRefused,
    SoftLimits,
)
from inscope.acquisition.micromanager import (
    DEFAULT_CONFIG,
    MicroManagerMicroscope,
    affine_from_mm,
    device_interface_check,
    headless_config,
    headless_core,
)

# A test dependency (the [test] extra), never a skip: without it every test here would
# vanish quietly. mm_core (tests/conftest.py) imports it plainly.


def _f32(frame) -> np.ndarray:
    return frame.pixels.astype(np.float32)


def test_snap_frame_carries_context(mm_scope):
    f = mm_scope.snap()
    h, w = int(mm_scope.core.get_image_height()), int(mm_scope.core.get_image_width())
    assert f.shape == (h, w) and f.pixels.dtype == np.uint16
    assert f.pixels.max() > f.pixels.min()  # beads, not a blank frame
    assert f.position is not None and f.position.x == pytest.approx(0.0, abs=0.01)
    assert f.pixel_size_um == pytest.approx(float(mm_scope.core.get_pixel_size_um()))
    np.testing.assert_allclose(f.affine, np.eye(2) * f.pixel_size_um)
    assert f.metadata["camera"] == mm_scope.camera
    assert f.metadata["exposure_ms"] == pytest.approx(5.0)
    assert f.metadata["binning"] == "1"
    assert mm_scope.snap().index == f.index + 1


def test_stream_indices_and_stamps_increase(mm_scope):
    with mm_scope.stream() as frames:
        got = [frames.get(timeout=5) for _ in range(15)]
    assert all(f is not None for f in got)
    idx = [f.index for f in got]
    ready = [f.stamps["ready"] for f in got]
    assert idx == sorted(set(idx)), idx  # strictly increasing camera image numbers
    assert all(b > a for a, b in zip(ready, ready[1:], strict=False))
    assert frames.produced >= 15
    assert not mm_scope.core.is_sequence_running()  # closing the stream stops the camera


def test_snap_refused_while_streaming(mm_scope):
    with mm_scope.stream() as frames:
        assert frames.get(timeout=5) is not None
        with pytest.raises(DeviceError, match="stream is running"):
            mm_scope.snap()


@pytest.mark.parametrize("dx, dy", [(12.0, 0.0), (0.0, -8.0), (6.0, 9.0)])
def test_xy_move_shifts_image_per_affine(mm_scope, dx, dy):
    """A bead at pixel offset d from the centre is centred by moving to pos + A @ d, so
    moving the stage by s shifts the image content by -A^-1 s."""
    a = mm_scope.snap()
    assert mm_scope.move_xy(dx, dy, relative=True)
    b = mm_scope.snap()
    assert b.position.x == pytest.approx(dx, abs=0.05)
    assert b.position.y == pytest.approx(dy, abs=0.05)
    (sx, sy), response = cv2.phaseCorrelate(_f32(a), _f32(b))
    expected = -np.linalg.inv(a.affine) @ np.array([b.position.x - a.position.x,
                                                    b.position.y - a.position.y])
    assert response > 0.3
    assert (sx, sy) == pytest.approx(tuple(expected), abs=0.5)


def test_stream_frames_carry_position_after_move(mm_scope):
    with mm_scope.stream() as frames:
        assert frames.get(timeout=5) is not None
        mm_scope.move_xy(20.0, 0.0)
        f = frames.get(timeout=5)
        f = frames.get(timeout=5)
    assert f.position.x == pytest.approx(20.0, abs=0.05)


def test_z_move_reads_back_and_blurs(mm_scope):
    sharp = cv2.Laplacian(_f32(mm_scope.snap()), cv2.CV_32F).var()
    assert mm_scope.move_z(15.0)
    assert mm_scope.position().z == pytest.approx(15.0, abs=0.01)
    assert mm_scope.move_z(-5.0, relative=True)
    assert float(mm_scope.core.get_position()) == pytest.approx(10.0, abs=0.01)
    blurred = cv2.Laplacian(_f32(mm_scope.snap()), cv2.CV_32F).var()
    assert blurred < 0.5 * sharp


def test_guard_refuses_out_of_limit_and_nothing_moves(mm_scope):
    mm_scope.guard = MoveGuard(SoftLimits(x=(-100, 100), y=(-100, 100), z=(-50, 50)),
                               require_limits=True)
    with pytest.raises(MoveRefused, match="outside the soft limit"):
        mm_scope.move_xy(500.0, 0.0)
    with pytest.raises(MoveRefused, match="outside the soft limit"):
        mm_scope.move_z(80.0)
    with pytest.raises(MoveRefused, match="not a finite number"):
        mm_scope.move_xy(math.nan, 0.0)
    assert float(mm_scope.core.get_x_position()) == pytest.approx(0.0, abs=0.01)
    assert float(mm_scope.core.get_position()) == pytest.approx(0.0, abs=0.01)
    assert [r.made for r in mm_scope.guard.history] == [False, False, False]


def test_real_stage_without_limits_refuses_every_move(mm_scope):
    """What a non-demo stage gets: require_limits with no limits -> every move refused."""
    mm_scope.guard = MoveGuard(limits=None, require_limits=True)
    with pytest.raises(MoveRefused, match="no soft limits are configured"):
        mm_scope.move_xy(1.0, 1.0)
    assert float(mm_scope.core.get_x_position()) == pytest.approx(0.0, abs=0.01)


def test_demo_stages_get_demo_limits(mm_core):
    scope = MicroManagerMicroscope(mm_core)
    assert scope.demo_stages and scope.guard.require_limits is False
    assert scope.limits is not None and scope.limits.x is not None
    given = SoftLimits(x=(0, 1), y=(0, 1), z=(0, 1))
    assert MicroManagerMicroscope(mm_core, limits=given).limits == given
    assert MicroManagerMicroscope(mm_core, limits={"z": [0, 5]}).limits.z == (0.0, 5.0)


def test_dry_run_moves_nothing(mm_core, mm_scope):
    scope = MicroManagerMicroscope(mm_core, dry_run=True)
    assert scope.move_xy(30.0, 30.0) is False
    assert scope.move_z(7.0) is False
    assert float(mm_core.get_x_position()) == pytest.approx(0.0, abs=0.01)
    assert float(mm_core.get_position()) == pytest.approx(0.0, abs=0.01)
    assert [r.reason for r in scope.guard.history] == ["dry-run", "dry-run"]


def test_device_error_is_wrapped(mm_scope):
    """One line that names the device, its adapter library, what failed and where to
    look, whatever MMCore raised."""
    with pytest.raises(DeviceError, match="Mode.*Device Property Browser") as e:
        mm_scope.set_camera_properties({"Mode": "no such mode"})
    msg = str(e.value)
    assert msg.startswith("Micro-Manager device 'Camera' (DemoCamera) failed to set "
                          "property 'Mode' to 'no such mode': ")
    assert "CoreLog" in msg and "\n" not in msg
    # a call that names no device is the core's own
    with pytest.raises(DeviceError, match="^Micro-Manager device 'core' failed to load"):
        mm_scope._call("", "load", mm_scope.core.get_property, "NoSuchDevice", "Mode")
    # a device the core does not know has no library to name
    with pytest.raises(DeviceError, match="^Micro-Manager device 'Nope' failed to report"):
        mm_scope._call("Nope", "report", mm_scope.core.get_property, "Nope", "Mode")


def test_headless_reuses_the_one_core(mm_scope):
    again = MicroManagerMicroscope.headless(None, DEFAULT_CONFIG)
    assert again.core is mm_scope.core
    assert again.backend == "headless" and not again.attach_running
    assert again.name == f"micromanager-headless:{again.camera}"
    # the options reach the microscope: attach to live mode, limits, dry run
    opts = MicroManagerMicroscope.headless(None, DEFAULT_CONFIG, attach_running=True,
                                           limits={"x": [-1, 1]}, dry_run=True)
    assert opts.attach_running and opts.guard.dry_run and opts.limits.x == (-1.0, 1.0)


def test_bad_config_path_is_clear():
    with pytest.raises(MicroscopeUnavailable, match="config file not found.*--mm-config"):
        headless_core(None, "no_such_config.cfg")


def test_missing_mm_dir_is_clear(tmp_path):
    with pytest.raises(MicroscopeUnavailable, match="folder not found.*--mm-dir"):
        headless_core(str(tmp_path / "nowhere"), DEFAULT_CONFIG)


#: demo devices a test configuration may hold: label -> (DemoCamera device, core role)
_DEMO_DEVICES = {"Camera": ("DCam", "Camera"), "XY": ("DXYStage", "XYStage"),
                 "Z": ("DStage", "Focus")}


def _demo_config(tmp_path, *labels: str):
    """A Micro-Manager configuration file with only the demo devices *labels* (of
    Camera, XY, Z) on the demo hub, each set as the core's device of its kind."""
    lines = ["Property,Core,Initialize,0", "Device,DHub,DemoCamera,DHub",
             *(f"Device,{x},DemoCamera,{_DEMO_DEVICES[x][0]}" for x in labels),
             *(f"Parent,{x},DHub" for x in labels), "Property,Core,Initialize,1",
             *(f"Property,Core,{_DEMO_DEVICES[x][1]},{x}" for x in labels)]
    path = tmp_path / f"demo-{'-'.join(labels)}.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_config_without_camera_is_clear(mm_core, tmp_path):
    cfg = _demo_config(tmp_path, "XY", "Z")
    try:
        with pytest.raises(MicroscopeUnavailable, match="no camera.*Hardware Configuration"):
            MicroManagerMicroscope.headless(None, str(cfg))
        assert headless_config() == str(cfg.resolve())
    finally:
        headless_core(None, DEFAULT_CONFIG)  # give the shared core back as found
    assert mm_core.get_camera_device() == "Camera"


def test_broken_config_is_clear(mm_core, tmp_path):
    cfg = tmp_path / "broken.cfg"
    cfg.write_text("Device,Camera,NoSuchLibrary,DCam\n")
    try:
        with pytest.raises(MicroscopeUnavailable, match="could not load config") as e:
            headless_core(None, str(cfg))
        # one line: MMCore puts its reason on a line of its own after the config line
        assert "\n" not in str(e.value)
        assert "Line 1: Device,Camera,NoSuchLibrary,DCam Failed to load device adapter " \
               '"NoSuchLibrary"' in str(e.value)
    finally:
        headless_core(None, DEFAULT_CONFIG)
    assert mm_core.get_camera_device() == "Camera"


def test_unreachable_gui_fails_fast():
    from _support.sockets import free_port

    port = free_port()
    with pytest.raises(MicroscopeUnavailable, match="Run pycro-manager server") as e:
        MicroManagerMicroscope.connect(port=port)
    assert str(e.value).startswith(f"No Micro-Manager pycro-manager server on 127.0.0.1:{port}")


def test_the_stream_thread_is_named_after_the_camera(mm_scope):
    # the CPU report of `inscope bench` lists threads by name
    import threading

    with mm_scope.stream() as s:
        assert s.get(timeout=5.0) is not None
        names = {t.name for t in threading.enumerate()}
    assert "inscope-mm-Camera" in names


def test_close_stops_any_acquisition_and_frees_the_camera(mm_scope):
    """``close`` leaves no sequence running (e.g. one left by the GUI's live mode), and
    the camera can snap again."""
    mm_scope.core.start_continuous_sequence_acquisition(0.0)
    s = mm_scope.stream()
    assert s.get(timeout=5.0) is not None
    s.close()
    mm_scope.core.start_continuous_sequence_acquisition(0.0)
    mm_scope.close()
    assert not mm_scope.core.is_sequence_running()
    assert mm_scope.snap().pixels.size > 0


def test_affine_conversion():
    np.testing.assert_allclose(affine_from_mm([1, 0, 0, 0, 1, 0], 0.5), np.eye(2) * 0.5)
    np.testing.assert_allclose(affine_from_mm([], 0.25), np.eye(2) * 0.25)
    m = affine_from_mm([0, -0.3, 5.0, 0.3, 0, 7.0], 0.3)
    np.testing.assert_allclose(m, [[0, -0.3], [0.3, 0]])
    # no affine, a singular one or one with NaN: the pixel size, never a broken map
    np.testing.assert_allclose(affine_from_mm(None, 0.5), np.eye(2) * 0.5)
    np.testing.assert_allclose(affine_from_mm([1, 1, 0, 1, 1, 0], 0.5), np.eye(2) * 0.5)
    np.testing.assert_allclose(affine_from_mm([float("nan"), 0, 0, 0, 0.3, 0], 0.3),
                               np.eye(2) * 0.3)


def test_affine_read_through_the_java_bridge():
    """The Java bridge returns Micro-Manager's DoubleVector as an object with ``size()``
    and ``get(i)``, not a sequence. The bridge needs the Java GUI, which cannot run here,
    so this stand-in has exactly that interface and nothing else."""
    from inscope.acquisition.micromanager import _as_list

    class JavaDoubleVector:
        def __init__(self, values):
            self._v = list(values)

        def size(self):
            return len(self._v)

        def get(self, i):
            return self._v[i]

    vec = JavaDoubleVector([0, -0.3, 5.0, 0.3, 0, 7.0])
    assert _as_list(vec) == [0.0, -0.3, 5.0, 0.3, 0.0, 7.0]
    assert _as_list((1, 2)) == [1.0, 2.0]  # pymmcore: a tuple
    np.testing.assert_allclose(affine_from_mm(_as_list(vec), 0.3), [[0, -0.3], [0.3, 0]])


def test_device_interfaces_match_and_mismatch_names_the_fix(monkeypatch):
    import mm_test_adapters
    import pymmcore

    path = mm_test_adapters.device_adapter_path()
    assert device_interface_check(path) is None
    ours = int(pymmcore.__version__.split(".")[3])
    monkeypatch.setattr(pymmcore, "__version__", f"11.0.0.{ours - 1}.0")
    msg = device_interface_check(path)
    assert msg and f"mm-test-adapters>={ours - 1},<{ours}" in msg


@pytest.mark.mm_gui
def test_gui_snap_and_position():
    """Against a real Micro-Manager GUI (opt in with --run-mm-gui)."""
    scope = MicroManagerMicroscope.connect(dry_run=True)
    f = scope.snap()
    assert f.pixels.ndim == 2 and f.position is not None
    with scope.stream() as frames:
        assert frames.get(timeout=10) is not None


def test_factory_headless_and_options(mm_scope):
    from inscope.acquisition.factory import open_microscope

    scope = open_microscope("headless", exposure_ms=3.0, limits={"x": [-5, 5]}, dry_run=True)
    assert scope.core is mm_scope.core and scope.exposure_ms == pytest.approx(3.0)
    assert scope.limits.x == (-5.0, 5.0) and scope.guard.dry_run
    with pytest.raises(TypeError, match="Unknown option.*'port'.*allowed"):
        open_microscope("headless", port=4827)
    # how its planes are recorded: widefield unless told (decides where z extents end)
    assert not scope.optical_sectioning
    for word in ("sectioned", "Confocal", "spinning disk", "light_sheet"):
        assert open_microscope("headless", exposure_ms=3.0, sectioning=word).optical_sectioning
    assert not open_microscope("headless", sectioning="widefield").optical_sectioning
    from inscope.acquisition.errors import MicroscopeUnavailable

    with pytest.raises(MicroscopeUnavailable, match="'sectioned'.*or 'widefield'"):
        open_microscope("headless", sectioning="phase contrast")


def test_factory_headless_config_names(mm_scope, caplog):
    """``mm_config`` names the Micro-Manager config; ``config`` (its name before) still
    works with a warning, and where both are given ``mm_config`` wins."""
    from inscope.acquisition.factory import open_microscope
    from inscope.acquisition.micromanager import DEFAULT_CONFIG, headless_config

    with caplog.at_level("WARNING", logger="inscope"):
        scope = open_microscope("headless", mm_config=DEFAULT_CONFIG, exposure_ms=3.0)
    assert scope.core is mm_scope.core and not caplog.records
    assert headless_config().endswith(DEFAULT_CONFIG)
    with caplog.at_level("WARNING", logger="inscope"):
        open_microscope("headless", config=DEFAULT_CONFIG, exposure_ms=3.0)
    assert "backend option 'config' is deprecated; use 'mm_config'" in caplog.text
    assert headless_config().endswith(DEFAULT_CONFIG)
    with pytest.raises(Exception, match="nope.cfg"):  # mm_config wins over config
        open_microscope("headless", config=DEFAULT_CONFIG, mm_config="nope.cfg")
    assert headless_config().endswith(DEFAULT_CONFIG)  # the core keeps its config


def test_cli_stream_headless(mm_scope, capsys):
    from inscope.cli import main

    assert main(["stream", "--backend", "headless", "--frames", "20", "--exposure-ms", "2",
                 "-p", "Mode=Color Test Pattern"]) == 0
    out = capsys.readouterr().out
    assert "micromanager-headless" in out and "20 frames" in out
    assert mm_scope.core.get_property(mm_scope.camera, "Mode") == "Color Test Pattern"
    assert main(["stream", "--backend", "headless", "--frames", "2", "-p", "Mode=Nope"]) == 1
    assert "failed to set property 'Mode'" in capsys.readouterr().err
    assert not mm_scope.core.is_sequence_running()


def test_pixel_size_and_affine_come_from_micro_manager(mm_scope):
    core = mm_scope.core
    cfg = core.get_current_pixel_size_config()
    try:
        core.set_pixel_size_affine(cfg, [0.0, -1.0, 0.0, 1.0, 0.0, 0.0])  # 90° rotation
        f = mm_scope.snap()
        np.testing.assert_allclose(f.affine, [[0.0, -1.0], [1.0, 0.0]])
        mm_scope.affine = np.eye(2) * 2.0  # a calibration overrides Micro-Manager's
        np.testing.assert_allclose(mm_scope.snap().affine, np.eye(2) * 2.0)
        mm_scope.affine = None
    finally:
        core.set_pixel_size_affine(cfg, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    core.set_config("Objective", "20X")
    core.wait_for_config("Objective", "20X")
    f = mm_scope.snap()
    assert f.pixel_size_um == pytest.approx(0.5)
    np.testing.assert_allclose(f.affine, np.eye(2) * 0.5)


def test_bridge_shapes_and_rgb_camera(mm_scope):
    """The Java bridge hands flat arrays; an RGB camera packs BGRA: both become 2-D."""
    from inscope.acquisition.micromanager import _as_2d

    f = mm_scope.snap()
    h, w = f.shape
    np.testing.assert_array_equal(_as_2d(f.pixels.ravel(), h, w), f.pixels)
    with pytest.raises(DeviceError, match="expected"):
        _as_2d(f.pixels.ravel()[:-1], h, w)
    # (DemoCamera segfaults rendering "Fluorescent Beads" in RGB: use another mode)
    mm_scope.set_camera_properties({"Mode": "Artificial Waves", "PixelType": "32bitRGB"})
    g = mm_scope.snap()
    assert g.shape == (h, w) and g.pixels.dtype == np.uint8 and g.pixels.max() > 0


def test_a_camera_only_config_gets_no_demo_limits(mm_core, tmp_path):
    # the demo limits are for demo stages only: with no stage at all there are none
    cfg = _demo_config(tmp_path, "Camera")
    try:
        scope = MicroManagerMicroscope.headless(None, str(cfg))
        assert (scope.xy_device, scope.z_device) == ("", "")
        assert scope.demo_stages is False and scope.limits is None
    finally:
        headless_core(None, DEFAULT_CONFIG)
    assert mm_core.get_xy_stage_device() == "XY"


def test_config_without_focus_refuses_z_with_device_error(mm_core, tmp_path):
    cfg = _demo_config(tmp_path, "Camera", "XY")
    try:
        scope = MicroManagerMicroscope.headless(None, str(cfg))
        assert scope.z_device == "" and scope.position().z == 0.0  # an axis without a device
        with pytest.raises(DeviceError, match="No focus device.*Core-Focus"):
            scope.move_z(1.0)
        assert not scope.moving()
        assert scope.move_xy(3.0, 0.0) and scope.position().x == pytest.approx(3.0)
        assert scope.position().z == 0.0
    finally:
        headless_core(None, DEFAULT_CONFIG)
    assert mm_core.get_focus_device() == "Z"


def test_config_without_xy_stage_refuses_xy_with_device_error(mm_core, tmp_path):
    cfg = _demo_config(tmp_path, "Camera", "Z")
    try:
        scope = MicroManagerMicroscope.headless(None, str(cfg))
        p0 = scope.position()
        assert scope.xy_device == "" and (p0.x, p0.y) == (0.0, 0.0)
        with pytest.raises(DeviceError, match="No XY stage"):
            scope.move_xy(1.0, 0.0)
        assert scope.move_z(2.0) and scope.position().z == pytest.approx(2.0)
        with pytest.warns(UserWarning, match="no pixel size configured"):
            f = scope.snap()  # this config defines no pixel size either
        assert f.position.z == pytest.approx(2.0)
        assert f.pixel_size_um == 1.0 and f.metadata["pixel_size_configured"] is False
    finally:
        headless_core(None, DEFAULT_CONFIG)
    assert mm_core.get_xy_stage_device() == "XY"


def _notices(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "inscope.acquisition.micromanager" and r.levelname == "WARNING"]


def test_a_real_stage_that_will_refuse_every_move_says_why_at_start(mm_core, mm_scope, caplog):
    """Steering and the focus lock count refused moves and go on: a run on a real stage
    without soft limits only showed ``refused 58`` in its summary. The reason and the fix
    are said once, when the microscope is opened; dry-run (nothing moves) says nothing."""
    caplog.set_level("INFO", logger="inscope.acquisition.micromanager")
    MicroManagerMicroscope(mm_core, guard=MoveGuard(limits=None, require_limits=True))
    (line,) = _notices(caplog)
    assert "No soft limits for the stage(s) XY, Z" in line and "refuses every move" in line
    assert "[microscope.limits]" in line and "limits option" in line and "dry run" in line
    caplog.clear()
    MicroManagerMicroscope(mm_core, guard=MoveGuard(
        SoftLimits(x=(-100, 100), y=(-100, 100)), require_limits=True))
    (line,) = _notices(caplog)
    assert "No soft limit for z" in line and "every focus move" in line
    caplog.clear()
    MicroManagerMicroscope(mm_core, guard=MoveGuard(limits=None, require_limits=True,
                                                    dry_run=True))
    assert _notices(caplog) == []


def test_a_stage_parked_outside_its_soft_limits_is_named_at_start(mm_core, mm_scope, caplog):
    """A focus drive left 50 µm up with z limits of [-20, 20]: every focus move is
    refused, and the run must say so before it starts, not count refusals."""
    mm_scope.core.set_position(50.0)
    mm_scope.core.wait_for_device(mm_scope.z_device)
    caplog.set_level("INFO", logger="inscope.acquisition.micromanager")
    lim = SoftLimits(x=(-200, 200), y=(-200, 200), z=(-20, 20))
    MicroManagerMicroscope(mm_core, limits=lim)
    (line,) = _notices(caplog)
    assert "outside its soft limits (z=50.00 µm outside [-20, 20])" in line
    assert "move it inside first" in line
    caplog.clear()
    MicroManagerMicroscope(mm_core, limits=SoftLimits(x=(-200, 200), y=(-200, 200),
                                                      z=(0, 100)))
    assert _notices(caplog) == []


def test_a_config_without_stages_says_what_cannot_move(mm_core, tmp_path, caplog):
    cfg = _demo_config(tmp_path, "Camera")
    caplog.set_level("INFO", logger="inscope.acquisition.micromanager")
    try:
        MicroManagerMicroscope.headless(None, str(cfg))
    finally:
        headless_core(None, DEFAULT_CONFIG)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "no XY stage (Core-XYStage is empty)" in said
    assert "no focus device (Core-Focus is empty)" in said
