"""The simulated cameras' pacing (``acquisition.stream.pace``, shared by the simulator's
thread camera and the slide): a frame is held until the end of its interval and stamped
ready then; a late producer does not try to catch up; a stop ends the wait."""

from __future__ import annotations

import threading
import time

import numpy as np

from inscope.acquisition.frame import STAMP_READY, Frame
from inscope.acquisition.stream import pace


def _frame() -> Frame:
    return Frame(np.zeros((4, 4), np.uint16), 0, stamps={STAMP_READY: 123})


def test_frame_is_held_to_the_end_of_its_interval_and_stamped_then():
    f, stop = _frame(), threading.Event()
    start = time.monotonic()
    next_t = start + 0.15
    due = next_t + 0.05  # next_t plus a 0.05 s interval
    nxt = pace(f, next_t, 0.05, stop)
    assert nxt == due  # the next interval starts at this frame's read-out
    assert time.monotonic() >= due
    assert f.stamps[STAMP_READY] >= int(due * 1e9)  # ready when read out, not rendered


def test_a_late_frame_keeps_its_stamp_and_the_clock_restarts_now():
    f, stop = _frame(), threading.Event()
    before = time.monotonic()
    nxt = pace(f, before - 10.0, 0.05, stop)
    assert before <= nxt <= time.monotonic()  # no catching up on 10 s of backlog
    assert f.stamps[STAMP_READY] == 123


def test_stop_ends_the_wait():
    f, stop = _frame(), threading.Event()
    stop.set()
    start = time.monotonic()
    next_t = start + 30.0
    nxt = pace(f, next_t, 0.05, stop)
    assert nxt == next_t + 0.05
    assert time.monotonic() - start < 20.0  # did not sit out the 30 s
