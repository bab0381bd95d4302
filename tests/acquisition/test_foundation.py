"""The committed acquisition foundation: NewestSlot, FrameStream, MoveGuard, Frame maps."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from inscope.acquisition import (
    BaseMicroscope,
    Frame,
    FrameStream,
    MoveGuard,
    MoveRefused,
    NewestSlot,
    SoftLimits,
    StagePosition,
)

# -- NewestSlot ------------------------------------------------------------------------


def test_newest_slot_returns_newest_and_counts_drops():
    slot: NewestSlot[int] = NewestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True
    assert slot.put(3) is True
    assert slot.get(timeout=0) == 3
    assert slot.get(timeout=0) is None  # read once only
    assert (slot.put_count, slot.dropped) == (3, 2)


def test_newest_slot_get_waits_for_a_put_and_wakes_on_close():
    slot: NewestSlot[str] = NewestSlot()
    threading.Timer(0.05, slot.put, args=("late",)).start()
    assert slot.get(timeout=5) == "late"
    threading.Timer(0.05, slot.close).start()
    assert slot.get(timeout=5) is None and slot.closed


# -- FrameStream -----------------------------------------------------------------------


def _frame(i: int) -> Frame:
    return Frame(np.full((4, 4), i, np.uint16), index=i)


def test_frame_stream_delivers_frames_in_order_and_stops():
    def producer(emit, stop):
        i = 0
        while not stop.is_set():
            emit(_frame(i))
            i += 1
            time.sleep(0.002)

    with FrameStream(producer) as frames:
        got = [frames.get(timeout=5).index for _ in range(5)]
    assert got == sorted(got) and len(set(got)) == 5
    assert not frames.running  # close() stopped the producer thread


def test_frame_stream_reports_drops_when_consumer_is_slow():
    def producer(emit, stop):
        for i in range(50):
            emit(_frame(i))

    frames = FrameStream(producer).start()
    frames._thread.join(5)  # producer done before anyone read
    f = frames.get(timeout=1)
    assert f.index == 49 and frames.dropped == 49 and frames.produced == 50
    assert frames.get(timeout=0.1) is None  # source ended


def test_frame_stream_reraises_producer_exception():
    def producer(emit, stop):
        emit(_frame(0))
        raise RuntimeError("camera fell over")

    frames = FrameStream(producer).start()
    frames._thread.join(5)
    assert frames.get(timeout=1).index == 0
    with pytest.raises(RuntimeError, match="camera fell over"):
        frames.get(timeout=1)


def test_frame_stream_iteration_ends_with_source():
    def producer(emit, stop):
        for i in range(3):
            emit(_frame(i))
            time.sleep(0.02)

    with FrameStream(producer) as frames:
        got = [f.index for f in frames]
    assert got[-1] == 2 and len(got) + frames.dropped == 3


def test_newest_slot_put_wait_blocks_until_read():
    slot: NewestSlot[int] = NewestSlot()
    assert slot.put_wait(1, timeout=0)
    assert slot.put_wait(2, timeout=0.01) is False  # 1 unread: nothing replaced
    threading.Timer(0.05, slot.get).start()
    assert slot.put_wait(2, timeout=5)
    assert slot.get(timeout=0) == 2 and slot.dropped == 0
    slot.close()
    assert slot.put_wait(3, timeout=0) is False


def test_lossless_stream_delivers_every_frame_to_a_slow_consumer():
    def producer(emit, stop):
        for i in range(20):
            emit(_frame(i))

    with FrameStream(producer, lossless=True) as frames:
        got = []
        for f in frames:
            got.append(f.index)
            time.sleep(0.001)
    assert got == list(range(20)) and frames.dropped == 0


def test_lossless_stream_close_unblocks_producer():
    def producer(emit, stop):
        i = 0
        while not stop.is_set():
            emit(_frame(i))
            i += 1

    frames = FrameStream(producer, lossless=True).start()
    assert frames.get(timeout=5).index == 0
    deadline = time.monotonic() + 5.0
    while frames.produced < 2:  # frame 1 waits in the slot, frame 2 in the producer
        assert time.monotonic() < deadline
        time.sleep(0.001)
    time.sleep(0.05)
    t0 = time.monotonic()
    frames.close(timeout=5)
    # the waiting producer sees the stop within its 0.1 s poll: close() does not sit out
    # its whole join timeout (a stop command must not wait on a stuck hand-off)
    assert time.monotonic() - t0 < 2.5
    assert not frames.running


def test_lossless_stream_counts_what_it_handed_over_and_drops_nothing():
    said: list[object] = []

    def producer(emit, stop):
        for i in range(7):
            said.append(emit(_frame(i)))

    with FrameStream(producer, lossless=True) as frames:
        got = [f.index for f in frames]
    assert got == list(range(7))
    assert frames.produced == 7 and frames.dropped == 0
    assert said == [False] * 7  # emit answers "was a frame dropped?": never, lossless


def test_get_gives_up_after_its_timeout_when_no_frame_comes():
    """A camera that stops delivering must not hang the consumer: get(timeout) returns
    None, and the stream closes promptly."""
    def producer(emit, stop):
        stop.wait()  # a camera that never delivers

    frames = FrameStream(producer).start()
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(frames.get(timeout=0.2)), daemon=True)
    t.start()
    t.join(10.0)
    assert not t.is_alive(), "get(timeout=0.2) is still waiting"
    assert result == [None]
    frames.close()
    assert not frames.running


# -- MoveGuard / SoftLimits ------------------------------------------------------------


def _guard(**kw) -> MoveGuard:
    kw.setdefault("limits", SoftLimits(x=(-100, 100), y=(-50, 50), z=(0, 20),
                                       max_step_xy_um=60, max_step_z_um=5, max_rate_hz=1e6))
    return MoveGuard(**kw)


def test_guard_limits_and_steps():
    made = []
    g = _guard(require_limits=True)
    assert g.run("xy", (0, 0), (50, 10), lambda: made.append("a"))
    for target in [(101, 0), (0, -51)]:
        with pytest.raises(MoveRefused, match="outside the soft limit"):
            g.run("xy", (0, 0), target, lambda: made.append("b"))
    with pytest.raises(MoveRefused, match="max_step_xy_um"):
        g.run("xy", (0, 0), (61, 0), lambda: made.append("c"))
    assert g.run("z", (10,), (14,), lambda: made.append("d"))
    with pytest.raises(MoveRefused, match="outside the soft limit"):
        g.run("z", (1,), (-1,), lambda: made.append("e"))
    with pytest.raises(MoveRefused, match="max_step_z_um"):
        g.run("z", (10,), (16,), lambda: made.append("f"))
    assert made == ["a", "d"]
    assert [r.made for r in g.history] == [True, False, False, False, True, False, False]


def test_guard_nan_refused():
    g = _guard()
    for target in [(math.nan, 0.0), (0.0, math.inf)]:
        with pytest.raises(MoveRefused, match="not a finite number"):
            g.run("xy", (0, 0), target, lambda: pytest.fail("moved"))
    with pytest.raises(MoveRefused, match="not a finite number"):
        g.run("z", (0,), (math.nan,), lambda: pytest.fail("moved"))


def test_guard_dry_run_records_but_never_moves():
    g = _guard(dry_run=True)
    assert g.run("xy", (0, 0), (1, 1), lambda: pytest.fail("moved")) is False
    assert g.history[-1].reason == "dry-run" and not g.history[-1].made
    with pytest.raises(MoveRefused):  # still checked
        g.run("xy", (0, 0), (500, 0), lambda: pytest.fail("moved"))


def test_guard_require_limits():
    g = MoveGuard(limits=None, require_limits=True)
    with pytest.raises(MoveRefused, match="no soft limits are configured"):
        g.run("z", (0,), (1,), lambda: pytest.fail("moved"))
    free = MoveGuard(limits=None, require_limits=False)
    assert free.run("xy", (0, 0), (1000, 1000), lambda: None)


def test_guard_rate_limit_throttles():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    g = MoveGuard(SoftLimits(max_rate_hz=10), require_limits=False, clock=lambda: now[0],
                  sleep=sleep)
    g.run("z", (0,), (1,), lambda: None)
    g.run("z", (1,), (2,), lambda: None)
    assert slept == [pytest.approx(0.1)]


def test_guard_listener_sees_records_and_broken_listener_is_ignored():
    seen = []
    g = _guard()
    g.moved.connect(lambda r: 1 / 0)
    g.moved.connect(seen.append)
    g.run("xy", (0, 0), (1, 2), lambda: None)
    assert seen and seen[0].target == (1.0, 2.0)


def test_soft_limits_validation():
    with pytest.raises(ValueError, match="low < high"):
        SoftLimits(x=(5, 1))
    with pytest.raises(ValueError, match="positive"):
        SoftLimits(max_step_z_um=0)
    with pytest.raises(ValueError, match="Unknown soft-limit"):
        SoftLimits.from_dict({"xx": [0, 1]})
    assert SoftLimits.from_dict({"z": [0, 3]}).z == (0.0, 3.0)


# -- Frame maps ------------------------------------------------------------------------


def test_frame_validation():
    with pytest.raises(ValueError, match="2-D numpy array"):
        Frame(np.zeros((4, 4, 3), np.uint8), index=0)
    f = Frame(np.zeros((10, 20), np.uint8), index=0, pixel_size_um=0.5)
    np.testing.assert_allclose(f.affine, np.eye(2) * 0.5)
    assert f.center == (10.0, 5.0) and "ready" in f.stamps
    with pytest.raises(ValueError, match="no stage position"):
        f.pixel_to_stage([[0, 0]])


def test_pixel_stage_roundtrip_with_rotated_affine():
    th = np.deg2rad(30.0)
    a = 0.5 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    a[:, 1] *= -1.0  # a mirrored axis as well
    f = Frame(np.zeros((100, 200), np.uint16), index=0,
              position=StagePosition(1000.0, -500.0, 3.0), affine=a)
    px = np.array([[100.0, 50.0], [0.0, 0.0], [199.0, 99.0], [37.5, 80.25]])
    st = f.pixel_to_stage(px)
    np.testing.assert_allclose(st[0], [1000.0, -500.0])  # centre -> current position
    np.testing.assert_allclose(st[1], [1000.0, -500.0] + a @ [-100.0, -50.0])
    np.testing.assert_allclose(f.stage_to_pixel(st), px, atol=1e-9)


# -- BaseMicroscope routes every move through the guard --------------------------------


class _Toy(BaseMicroscope):
    def __init__(self, guard):
        super().__init__(guard)
        self.p = StagePosition(0.0, 0.0, 0.0)
        self.calls = []

    def snap(self):
        return Frame(np.zeros((2, 2), np.uint8), 0, position=self.p)

    def stream(self):
        raise NotImplementedError

    def _read_position(self):
        return self.p

    def _set_xy(self, x, y):
        self.calls.append(("xy", x, y))
        self.p = StagePosition(x, y, self.p.z)

    def _set_z(self, z):
        self.calls.append(("z", z))
        self.p = StagePosition(self.p.x, self.p.y, z)

    @property
    def pixel_size_um(self):
        return 2.0


def test_base_microscope_relative_moves_and_affine_override():
    toy = _Toy(_guard())
    assert toy.move_xy(10, 5) and toy.move_xy(-4, 1, relative=True)
    assert toy.move_z(3) and toy.move_z(1.5, relative=True)
    # absolute is the default, also from a position away from the origin
    assert toy.move_xy(7, 2) and toy.move_z(4)
    assert toy.calls == [("xy", 10.0, 5.0), ("xy", 6, 6), ("z", 3.0), ("z", 4.5),
                         ("xy", 7.0, 2.0), ("z", 4.0)]
    # the guard records each move under its axis, from where to where
    assert [(r.axis, r.start, r.target) for r in toy.guard.history] == [
        ("xy", (0.0, 0.0), (10.0, 5.0)), ("xy", (10.0, 5.0), (6.0, 6.0)),
        ("z", (0.0,), (3.0,)), ("z", (3.0,), (4.5,)),
        ("xy", (6.0, 6.0), (7.0, 2.0)), ("z", (4.5,), (4.0,))]
    assert toy.move_xy(6, 6) and toy.move_z(4.5)
    with pytest.raises(MoveRefused, match="max_step_xy_um"):
        toy.move_xy(61, 0, relative=True)
    assert toy.position() == StagePosition(6, 6, 4.5)
    np.testing.assert_allclose(toy.affine, np.eye(2) * 2.0)
    toy.affine = [[0, 1], [1, 0]]
    np.testing.assert_allclose(toy.affine, [[0, 1], [1, 0]])
    toy.affine = None
    np.testing.assert_allclose(toy.affine, np.eye(2) * 2.0)


class _BusyToy(_Toy):
    """A stage and focus drive that report busy while the test says so, as a real
    device does until it arrives (the demo adapters' focus drive never reports busy)."""

    def __init__(self, guard):
        super().__init__(guard)
        self.busy = {"xy": False, "z": False}
        self.settled = 0
        self.poll_while_waiting = False
        self.poll_inside_busy = False

    def _busy_xy(self):
        if self.poll_inside_busy:  # another thread's poll lands between check and pop
            self.poll_inside_busy = False
            assert not self.moving()
        return self.busy["xy"]

    def _busy_z(self):
        return self.busy["z"]

    def _on_settled(self):
        self.settled += 1

    def _wait_xy(self):
        self._arrive("xy")

    def _wait_z(self):
        self._arrive("z")

    def _arrive(self, axis):
        self.busy[axis] = False
        if self.poll_while_waiting:  # as a camera thread may, while the move is waited
            assert not self.moving()


def test_a_synchronous_stage_is_settled_at_the_first_look_after_an_unwaited_move():
    # backends whose moves are done when the setter returns (simulator, slide) keep
    # BaseMicroscope's busy flags: an unwaited move must not read "moving" for ever
    toy = _Toy(_guard())
    assert toy.move_xy(5, 5, wait=False) and not toy.moving()
    assert toy.move_z(2, wait=False) and not toy.moving()
    t = time.monotonic_ns()
    assert not toy.motion_during(t)


@pytest.mark.parametrize("poll", [False, True], ids=["", "polled-meanwhile"])
@pytest.mark.parametrize("axis", ["xy", "z"])
def test_a_waited_move_leaves_nothing_pending(axis, poll):
    # a frame exposed after a waited move returned shows a still stage, also when a
    # camera thread saw the device arrive (moving() polled) while the move was waited
    toy = _BusyToy(_guard())
    toy.busy[axis], toy.poll_while_waiting = True, poll
    assert toy.move_xy(5, 5) if axis == "xy" else toy.move_z(2)
    assert toy.settled == int(poll)
    t = time.monotonic_ns()
    assert not toy.moving() and not toy.motion_during(t)
    assert toy.settled == int(poll)  # nothing was left for moving() to find settled


def test_two_threads_polling_moving_at_once_both_see_the_move_end():
    # the camera thread (flagging frames) and the control thread both call moving(); the
    # second to find the move finished must not fail on the entry the first removed
    toy = _BusyToy(_guard())
    assert toy.move_xy(5, 5, wait=False) and not toy.moving()
    toy.busy["xy"] = True
    assert toy.move_xy(6, 5, wait=False) and toy.moving()
    toy.busy["xy"], toy.poll_inside_busy = False, True
    assert not toy.moving()


@pytest.mark.parametrize("axis", ["xy", "z"])
def test_an_unwaited_move_is_pending_until_its_device_is_idle(axis):
    toy = _BusyToy(_guard())
    other = "z" if axis == "xy" else "xy"
    toy.busy[other] = True  # the other device's busy flag is not this move's business
    before = time.monotonic_ns()
    time.sleep(0.002)
    toy.busy[axis] = True
    assert toy.move_xy(5, 5, wait=False) if axis == "xy" else toy.move_z(2, wait=False)
    assert toy.moving() and toy.moving()  # polled twice: still travelling
    # an exposure that ended before the move was commanded did not see it; one that
    # runs now does
    assert not toy.motion_during(before - 1000, before)
    assert toy.motion_during(before)
    toy.busy[axis] = False
    settled_from = time.monotonic_ns()
    assert not toy.moving() and toy.settled == 1
    assert not toy.moving() and toy.settled == 1  # the hook runs once per move
    # an exposure that overlapped the end of the move is flagged, a later one is not
    assert toy.motion_during(before)
    time.sleep(0.002)
    assert not toy.motion_during(time.monotonic_ns())
    assert settled_from <= toy._settled_ns


def test_close_returns_after_its_timeout_even_if_the_producer_is_stuck():
    """A producer stuck in a device call ignores the stop: close() still returns after
    its timeout (the service's stop must always answer), leaving the thread to end."""
    release = threading.Event()

    def producer(emit, stop):
        release.wait(10.0)  # a driver call that does not come back

    frames = FrameStream(producer).start()
    t0 = time.monotonic()
    frames.close(timeout=0.2)
    assert time.monotonic() - t0 < 5.0
    assert frames.running  # still stuck: close did not pretend otherwise
    release.set()
