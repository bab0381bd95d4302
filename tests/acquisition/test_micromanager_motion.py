"""Moves the live loop commands without waiting, on the real MMCore and DemoCamera adapters.

The live loop moves the stage with ``wait=False`` and relies on the backend to flag every
frame exposed while the stage is still travelling (``Frame.moving``) and to tag it with
where the stage really was, not a cached reading from before the move. The demo XY stage
(DXYStage) travels at its ``Velocity`` property (mm/s) and reports itself busy until it
arrives, so a slow velocity gives a move that lasts many frames.
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest

from inscope.acquisition import DeviceError, MicroscopeUnavailable
from inscope.acquisition.micromanager import MicroManagerMicroscope

TRAVEL_UM = 300.0
VELOCITY_MM_S = 1.0  # 300 µm take ~0.3 s: tens of 5 ms frames


@pytest.fixture
def slow_xy(mm_scope):
    """The demo XY stage slowed down, restored afterwards."""
    c, dev = mm_scope.core, mm_scope.xy_device
    old = c.get_property(dev, "Velocity")
    c.set_property(dev, "Velocity", str(VELOCITY_MM_S))
    yield mm_scope
    c.set_property(dev, "Velocity", old)


def _frames_through_a_move(scope, stream) -> tuple[list, list]:
    """Frames taken while a commanded move is pending, then three after it settled."""
    before = stream.get(timeout=5.0)
    assert before is not None and not before.moving
    assert scope.move_xy(TRAVEL_UM, 0.0, wait=False)
    assert scope.moving()  # commanded, not finished: the call did not wait
    during = []
    deadline = time.monotonic() + 10.0
    while scope.moving():
        assert time.monotonic() < deadline, "the stage never reported the move finished"
        f = stream.get(timeout=5.0)
        if f is not None:
            during.append(f)
    after = [stream.get(timeout=5.0) for _ in range(3)]
    return during, after


def _check_move(during: list, after: list) -> None:
    moving = [f for f in during if f.moving]
    assert len(moving) >= 3, [f.moving for f in during]
    xs = [f.position.x for f in moving]
    # positions read from the stage while it travels, not a reading cached before the move
    assert all(-0.01 <= x <= TRAVEL_UM + 0.01 for x in xs)
    # the stage travels ~5 µm per 5 ms frame: each moving frame has its own reading
    assert xs == sorted(xs) and len(set(xs)) >= 0.5 * len(xs), xs
    assert any(1.0 < x < TRAVEL_UM - 1.0 for x in xs), xs
    last = after[-1]  # exposed well after the stage settled
    assert not last.moving
    assert last.position.x == pytest.approx(TRAVEL_UM, abs=0.05)
    assert last.position.y == pytest.approx(0.0, abs=0.05)


def _raised(stream, timeout_s: float = 5.0) -> BaseException | None:
    """What the stream's producer raised, re-raised by get() (None if it ran on)."""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            stream.get(timeout=0.1)
    except Exception as e:  # noqa: BLE001 - returned for the test to check
        return e
    return None


@contextlib.contextmanager
def _live_mode(scope, attached: bool = True):
    """With *attached*: a sequence running on the camera as the GUI's live mode would,
    and the microscope set to read it instead of starting its own; both undone after."""
    c = scope.core
    if attached:
        c.start_continuous_sequence_acquisition(0.0)
        scope.attach_running = True
    try:
        yield
    finally:
        scope.attach_running = False
        if attached and c.is_sequence_running():
            c.stop_sequence_acquisition()


@pytest.mark.parametrize("attached", [False, True], ids=["own-sequence", "attached"])
def test_frames_exposed_during_an_unwaited_move_are_flagged_with_live_positions(slow_xy,
                                                                               attached):
    """In inscope's own sequence and when it reads the GUI's live mode instead
    (``attach_running``) alike."""
    scope = slow_xy
    with _live_mode(scope, attached):
        with scope.stream() as s:
            during, after = _frames_through_a_move(scope, s)
        if attached:
            assert scope.core.is_sequence_running()  # left running for its owner
    _check_move(during, after)
    assert all(bool(f.metadata.get("attached")) == attached for f in during + after)
    assert not scope.moving()


def test_attached_frames_carry_the_same_context_as_owned_ones(mm_scope):
    """Pixels, pixel size, affine and stage position of an attached frame are those of the
    core, exactly as for a frame of inscope's own sequence."""
    assert mm_scope.move_xy(25.0, -10.0)
    assert mm_scope.move_z(3.0)
    with mm_scope.stream() as s:
        own = s.get(timeout=5.0)
    with _live_mode(mm_scope), mm_scope.stream() as s:
        got = [s.get(timeout=5.0) for _ in range(2)]
    for f in got:
        assert f.pixels.shape == own.pixels.shape and f.pixels.dtype == own.pixels.dtype
        assert f.pixels.std() > 0
        assert f.pixel_size_um == pytest.approx(own.pixel_size_um)
        np.testing.assert_allclose(f.affine, own.affine)
        assert (f.position.x, f.position.y, f.position.z) == pytest.approx(
            (25.0, -10.0, 3.0), abs=0.05)
        assert not f.moving
        assert f.metadata["camera"] == mm_scope.camera
        assert f.metadata["exposure_ms"] == pytest.approx(own.metadata["exposure_ms"])
        assert f.stamps["ready"] > own.stamps["ready"]
    assert got[1].index > got[0].index


def test_attached_stream_ends_with_one_clear_error_when_live_mode_stops(mm_scope):
    with _live_mode(mm_scope):
        s = mm_scope.stream()
        assert s.get(timeout=5.0) is not None
        mm_scope.core.stop_sequence_acquisition()  # the user stops live mode in the GUI
        err = _raised(s)
        assert isinstance(err, DeviceError), repr(err)
        assert "attached to has stopped" in str(err)
        s.close()
        # the camera is free again: inscope's own stream starts
        mm_scope.attach_running = False
        with mm_scope.stream() as own:
            assert own.get(timeout=5.0) is not None


class _CoreWithoutLastImage:
    """The real core seen through a wrapper that has no way to read the newest image
    without popping it (as a user's own core wrapper, or an old bridge, may be): every
    call it has goes to MMCore."""

    def __init__(self, core) -> None:
        self._core = core

    def __getattr__(self, name: str):
        if name == "get_last_tagged_image":
            raise AttributeError(name)
        return getattr(self._core, name)


def test_a_sequence_stopped_from_outside_ends_the_stream_with_one_clear_error(mm_scope):
    # the user stops acquisition in the GUI, or the circular buffer overflowed
    s = mm_scope.stream()
    assert s.get(timeout=5.0) is not None
    mm_scope.core.stop_sequence_acquisition()
    err = _raised(s)
    s.close()
    assert isinstance(err, DeviceError), repr(err)
    assert "Camera 'Camera' stopped acquiring" in str(err) and "CoreLog" in str(err)
    with mm_scope.stream() as again:  # the camera is free for the next stream
        assert again.get(timeout=5.0) is not None


def test_attaching_through_a_core_that_cannot_read_the_newest_image_says_so(mm_scope):
    # it used to wait for ever, taking the missing call for an empty buffer
    real = mm_scope.core
    with _live_mode(mm_scope):
        mm_scope.core = _CoreWithoutLastImage(real)
        try:
            s = mm_scope.stream()
            err = _raised(s)
            s.close()
        finally:
            mm_scope.core = real
    assert isinstance(err, DeviceError), repr(err)
    msg = str(err)
    assert "Cannot read the newest image of camera 'Camera'" in msg
    assert "_CoreWithoutLastImage" in msg and "attach_running=False" in msg


@pytest.mark.parametrize("attached", [False, True], ids=["own-sequence", "attached"])
def test_a_second_stream_on_the_camera_is_refused(mm_scope, attached):
    with _live_mode(mm_scope, attached), mm_scope.stream() as s:
        assert s.get(timeout=5.0) is not None
        second = mm_scope.stream()
        err = _raised(second)
        assert isinstance(err, DeviceError) and "already running" in str(err), repr(err)
        second.close()
        assert s.get(timeout=5.0) is not None  # the first one is unharmed


# pyjavaz's socket thread, ended by the timeout, tries to join itself ("cannot join current
# thread"): its own warning, raised after inscope has already given its error
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_gui_port_open_but_not_micro_manager_is_one_clear_error():
    """Something else listens on the port (no Micro-Manager behind it): the connection
    gives up after its timeout with the fix, instead of hanging the service's start."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    result: dict[str, BaseException] = {}
    accepted: list[socket.socket] = []
    listening = threading.Event()
    listening.set()

    def accept() -> None:  # who knocked: the port check, then the core's own socket
        while listening.is_set():
            try:
                accepted.append(srv.accept()[0])
            except OSError:
                pass

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()

    waited: list[float] = []

    def attempt() -> None:
        t0 = time.monotonic()
        try:
            # longer than pyjavaz's own 1 s default: the time-out given is the one used
            MicroManagerMicroscope.connect(port=port, timeout_ms=2500)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result["error"] = e
        waited.append(time.monotonic() - t0)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(30.0)
    listening.clear()
    acceptor.join(5.0)
    for conn in accepted:
        conn.close()
    srv.close()
    assert not t.is_alive(), "connect() hung on a port where nothing answers"
    # the core was asked for on this port, not on the default one
    assert len(accepted) >= 2, len(accepted)
    e = result.get("error")
    assert isinstance(e, MicroscopeUnavailable), repr(e)
    assert f"Port {port} is open but no Micro-Manager core answered" in str(e)
    assert "pycro-manager server" in str(e)
    assert waited[0] >= 2.4, waited  # it waited as long as asked (a lower bound only)


def test_owned_stream_frames_carry_the_cameras_own_clock(mm_scope):
    """``camera_elapsed_ms`` (Micro-Manager's ElapsedTime-ms tag) lets a recording be
    timed by the camera rather than by when the host read each image."""
    with mm_scope.stream() as s:
        frames = [s.get(timeout=5.0) for _ in range(4)]
    t = [f.metadata["camera_elapsed_ms"] for f in frames]
    assert all(isinstance(v, float) for v in t)
    assert all(b > a for a, b in zip(t, t[1:], strict=False))
    # consecutive images of a 5 ms exposure: the camera's clock advances by at least it
    steps = np.diff(t) / np.diff([f.index for f in frames])
    assert np.all(steps >= 0.9 * frames[0].metadata["exposure_ms"])


def test_an_unwaited_focus_move_settles_and_its_frames_are_read_at_the_new_plane(mm_scope):
    """``move_z(wait=False)`` polls the focus drive's busy flag like the XY stage's."""
    with mm_scope.stream() as s:
        assert s.get(timeout=5.0) is not None
        assert mm_scope.move_z(4.0, wait=False)
        deadline = time.monotonic() + 5.0
        while mm_scope.moving():
            assert time.monotonic() < deadline, "the focus move never finished"
            time.sleep(0.001)
        frames = [s.get(timeout=5.0) for _ in range(4)]
    assert float(mm_scope.core.get_position()) == pytest.approx(4.0, abs=0.01)
    assert not frames[-1].moving
    assert frames[-1].position.z == pytest.approx(4.0, abs=0.01)


def test_moves_made_outside_inscope_reach_the_frames_within_the_refresh_time(mm_scope):
    """A joystick or the GUI moves the stage behind inscope's back: stream frames carry
    a cached position (a stage query costs ms on a serial line), re-read at least every
    ``position_refresh_s``."""
    mm_scope.position_refresh_s = 0.1
    c = mm_scope.core
    with mm_scope.stream() as s:
        first = s.get(timeout=5.0)
        assert first.position.x == pytest.approx(0.0, abs=0.05)
        c.set_xy_position(40.0, -20.0)  # not through inscope
        c.wait_for_device(mm_scope.xy_device)
        moved = time.monotonic()
        while True:
            f = s.get(timeout=5.0)
            assert f is not None and f.position is not None
            if f.position.x == pytest.approx(40.0, abs=0.05):
                break
            assert time.monotonic() - moved < 1.0, "the frames never saw the move"
        assert f.position.y == pytest.approx(-20.0, abs=0.05)
        # the cache does not go stale the other way: later frames keep the new place
        later = [s.get(timeout=5.0) for _ in range(5)]
    assert all(g.position.x == pytest.approx(40.0, abs=0.05) for g in later)


def test_a_stream_hands_out_frames_as_the_camera_makes_them(mm_scope):
    """The newest frame, promptly: a consumer that keeps up sees (nearly) every image
    number, not one image in many (the buffer is polled every ``poll_s``)."""
    with mm_scope.stream() as s:
        frames = [s.get(timeout=5.0) for _ in range(12)]
    gaps = np.diff([f.index for f in frames])
    assert np.all(gaps >= 1) and np.median(gaps) <= 3, gaps
    assert frames[0].metadata["backend"] == "headless"


def _count_position_queries(monkeypatch, core) -> list[str]:
    """Count the stage queries made through the real core (a spy on three of its
    methods, not a stand-in: every call still goes to MMCore, and the core keeps its
    type, which the attached stream's image read depends on)."""
    calls: list[str] = []
    for name in ("get_x_position", "get_y_position", "get_position"):
        real = getattr(core, name)

        def counted(*args, _real=real, _name=name):
            calls.append(_name)
            return _real(*args)

        monkeypatch.setattr(core, name, counted)
    return calls


@pytest.mark.parametrize("attached", [False, True], ids=["own-sequence", "attached"])
def test_a_still_stage_is_not_queried_for_every_frame(mm_scope, attached, monkeypatch):
    """Stage queries cost milliseconds on a serial line: frames of a still stage reuse
    the last reading until ``position_refresh_s`` has passed (in inscope's own sequence
    and reading one the GUI runs)."""
    mm_scope.position_refresh_s = 60.0
    with _live_mode(mm_scope, attached):
        queries = _count_position_queries(monkeypatch, mm_scope.core)
        with mm_scope.stream() as s:
            frames = [s.get(timeout=5.0) for _ in range(20)]
    assert all(f.position is not None and not f.moving for f in frames)
    assert len(queries) <= 3, queries  # one reading (x, y, z) for all 20 frames


@pytest.mark.parametrize("attached", [False, True], ids=["own-sequence", "attached"])
def test_colour_and_binned_cameras_stream_grey_frames_of_their_own_size(mm_scope, attached):
    """A stream reads the camera's pixel format and binning as a snap does: an RGB camera
    gives 2-D grey frames (not its packed BGRA bytes), binning 2 halves each side and
    is recorded in the frame's metadata."""
    full = mm_scope.snap()
    h, w = full.shape
    # (DemoCamera segfaults rendering "Fluorescent Beads" in RGB: use another mode)
    mm_scope.set_camera_properties({"Mode": "Artificial Waves", "PixelType": "32bitRGB",
                                    "Binning": "2"})
    f = _stream_one(mm_scope, attached)
    assert f.shape == (h // 2, w // 2) and f.pixels.dtype == np.uint8
    assert f.pixels.max() > f.pixels.min()
    assert f.metadata["binning"] == "2"
    assert f.metadata["backend"] == "headless" and f.metadata["pixel_size_configured"] is True


def test_demo_beads_in_colour_are_refused_in_one_line_not_a_crash(mm_scope):
    """DemoCamera kills the process (segfault / free(): invalid pointer) streaming
    "Fluorescent Beads" in 32bitRGB: the stream refuses it, naming the working pixel
    types, and the camera is left idle for the next stream."""
    mm_scope.set_camera_properties({"PixelType": "32bitRGB", "Mode": "Fluorescent Beads"})
    with mm_scope.stream() as s:
        err = _raised(s)
    assert isinstance(err, DeviceError), err
    assert "crashes streaming Mode 'Fluorescent Beads' in PixelType '32bitRGB'" in str(err)
    assert "-p PixelType=16bit" in str(err)
    assert not mm_scope.core.is_sequence_running()


def _stream_one(scope, attached: bool):
    """One frame of inscope's own sequence, or of a running one it attaches to."""
    # (a generous wait: the first image of a binned colour sequence took 0.5 s here, and
    # once over 5 s in a full suite run beside other test runs on two cores)
    with _live_mode(scope, attached), scope.stream() as s:
        f = s.get(timeout=30.0)
    assert f is not None, "no frame in 30 s"
    return f


@pytest.mark.parametrize("attached", [False, True], ids=["own-sequence", "attached"])
def test_streamed_frames_carry_the_objectives_pixel_size_and_affine(mm_scope, attached):
    """Every streamed frame maps pixels to the stage with the objective in use (20X: 0.5
    µm/pixel in the demo config) and Micro-Manager's calibrated affine (a rotation)."""
    c = mm_scope.core
    c.set_config("Objective", "20X")
    c.wait_for_config("Objective", "20X")
    cfg = c.get_current_pixel_size_config()
    try:
        f = _stream_one(mm_scope, attached)
        assert f.pixel_size_um == pytest.approx(0.5)
        np.testing.assert_allclose(f.affine, np.eye(2) * 0.5)
        c.set_pixel_size_affine(cfg, [0.0, -0.5, 0.0, 0.5, 0.0, 0.0])
        g = _stream_one(mm_scope, attached)
        np.testing.assert_allclose(g.affine, [[0.0, -0.5], [0.5, 0.0]])
    finally:
        c.set_pixel_size_affine(cfg, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize("attached", [False, True], ids=["own-sequence", "attached"])
def test_an_objective_or_exposure_changed_mid_stream_reaches_the_frames(mm_scope, attached):
    """The microscopist turns the nosepiece to 20X or lengthens the exposure in
    Micro-Manager while inscope streams: within ``position_refresh_s`` the frames carry
    the new pixel size and affine (steering by the old ones moves the stage 2x too far)
    and the new exposure (the window a move blurs a frame in)."""
    mm_scope.position_refresh_s = 0.05
    c = mm_scope.core
    with _live_mode(mm_scope, attached), mm_scope.stream() as s:
        first = s.get(timeout=5.0)
        assert first.pixel_size_um == pytest.approx(1.0)
        c.set_config("Objective", "20X")
        c.wait_for_config("Objective", "20X")
        c.set_exposure(12.0)
        changed = time.monotonic()
        while True:
            f = s.get(timeout=5.0)
            assert f is not None
            if f.pixel_size_um == pytest.approx(0.5):
                break
            assert time.monotonic() - changed < 2.0, "the frames kept the 10X pixel size"
    np.testing.assert_allclose(f.affine, np.eye(2) * 0.5)
    assert f.metadata["exposure_ms"] == pytest.approx(12.0)


@pytest.mark.parametrize("attached", [False, True], ids=["own-sequence", "attached"])
def test_a_32bit_grey_camera_streams_floats_not_packed_colour(mm_scope, attached):
    """DemoCamera's 32-bit grey pixels are IEEE floats in 4 bytes, like packed BGRA: the
    stream reads the camera's own format (1 component) as a snap does."""
    mm_scope.set_camera_properties({"PixelType": "32bit"})
    f = _stream_one(mm_scope, attached)
    assert f.pixels.dtype == np.float32 and f.pixels.ndim == 2
    assert np.all(np.isfinite(f.pixels)) and 0.0 <= f.pixels.min() and f.pixels.max() <= 1.0
    assert f.pixels.std() > 0


def test_a_snap_is_stamped_when_its_image_was_read(mm_scope):
    t0 = time.monotonic_ns()
    f = mm_scope.snap()
    t1 = time.monotonic_ns()
    assert t0 < f.stamps["ready"] < t1
    assert f.index == 0 and mm_scope.snap().index == 1


def test_reset_stops_a_running_sequence_and_recentres(mm_scope):
    c = mm_scope.core
    assert mm_scope.move_xy(30.0, 20.0) and mm_scope.move_z(2.0)
    c.start_continuous_sequence_acquisition(0.0)
    mm_scope.reset()
    assert not c.is_sequence_running()
    p = mm_scope.position()
    assert (p.x, p.y, p.z) == pytest.approx((0.0, 0.0, 0.0), abs=0.01)
