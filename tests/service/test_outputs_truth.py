"""The machinery every output runs on (inscope.outputs), behaviour by behaviour.

Every result leaves the loop through an :class:`~inscope.outputs.Output`: its own thread,
fed through a :class:`~inscope.outputs.BoundedQueue` that drops the oldest item instead of
making the loop wait. What must hold: the queue keeps the newest items and counts what it
dropped; a failing output is counted and goes on; one that cannot write any more (disk
full) says so once, closes, and discards the rest; a stop drains what was handed over;
a stuck output cannot hang the stop. Real threads, outputs written here as small
subclasses (the base class is what is under test).
"""

from __future__ import annotations

import errno
import logging
import threading
import time

import numpy as np
import pytest

from inscope.acquisition.frame import Frame, StagePosition
from inscope.control.tracking import Track
from inscope.detector.base import Detections
from inscope.outputs import BoundedQueue, Output, Result

# -- BoundedQueue -----------------------------------------------------------------------


def test_queue_keeps_the_newest_eight_by_default_and_counts_the_dropped():
    q: BoundedQueue[int] = BoundedQueue()
    assert [q.put(i) for i in range(8)] == [True] * 8
    assert q.put(8) is False and q.put(9) is False  # the 9th and 10th push two out
    assert (q.dropped, q.put_count, len(q)) == (2, 10, 8)
    assert [q.get(0) for _ in range(8)] == list(range(2, 10))
    assert len(q) == 0


def test_a_one_item_queue_is_a_newest_item_slot():
    q: BoundedQueue[str] = BoundedQueue(1)
    assert q.put("a") is True and q.put("b") is False
    assert (q.get(0), q.dropped, q.put_count) == ("b", 1, 2)


@pytest.mark.parametrize("size", [0, -3])
def test_a_queue_of_no_items_is_refused_naming_the_size(size):
    with pytest.raises(ValueError, match=rf"queue size must be >= 1; got {size}"):
        BoundedQueue(size)


def test_get_waits_only_its_timeout_on_an_empty_queue():
    q: BoundedQueue[int] = BoundedQueue(2)
    t0 = time.monotonic()
    assert q.get(0.2) is None
    waited = time.monotonic() - t0
    assert 0.15 < waited < 5  # it waited, and it came back (not an endless wait)


def test_get_wakes_for_an_item_put_from_another_thread():
    q: BoundedQueue[int] = BoundedQueue(2)
    threading.Timer(0.1, q.put, (42,)).start()
    assert q.get(10) == 42


def test_a_closed_queue_drains_then_returns_none_at_once():
    q: BoundedQueue[int] = BoundedQueue(4)
    q.put(1)
    q.put(2)
    q.close()
    assert (q.get(), q.get()) == (1, 2)
    t0 = time.monotonic()
    assert q.get() is None  # closed and empty: no wait, even without a timeout
    assert time.monotonic() - t0 < 1


def test_close_wakes_a_waiting_get():
    q: BoundedQueue[int] = BoundedQueue(4)
    threading.Timer(0.1, q.close).start()
    t0 = time.monotonic()
    assert q.get(10) is None
    assert time.monotonic() - t0 < 5


# -- Output -----------------------------------------------------------------------------


class _Collect(Output):
    """Keeps what it handles; fails on the items it is told to."""

    name = "collect"

    def __init__(self, raise_on: dict | None = None, close_raises: BaseException | None = None,
                 queue_size: int | None = None) -> None:
        super().__init__(queue_size)
        self.raise_on = raise_on or {}
        self.close_raises = close_raises
        self.seen: list = []
        self.closed = 0

    def handle(self, item):
        if item in self.raise_on:
            raise self.raise_on[item]
        self.seen.append(item)

    def close(self):
        self.closed += 1
        if self.close_raises is not None:
            raise self.close_raises


def _run_items(out: Output, items) -> Output:
    out.start()
    for i in items:
        out.submit(i)
    out.stop(10)
    return out


def test_the_output_thread_is_named_after_the_output_and_does_not_hold_the_process():
    out = _Collect()
    out.start()
    try:
        assert out._thread is not None
        assert out._thread.name == "inscope-out-collect"
        assert out._thread.daemon is True  # a stuck output cannot keep the process alive
    finally:
        out.stop(10)


def test_stop_drains_everything_handed_over_then_closes_once():
    out = _run_items(_Collect(queue_size=64), range(20))
    assert out.seen == list(range(20))
    assert out.closed == 1
    assert out.stats() == {"handled": 20, "dropped": 0, "errors": 0, "last_error": None,
                           "failed": None, "discarded": 0}


def test_stop_of_an_output_never_started_is_harmless():
    out = _Collect()
    out.stop(1)  # nothing to join
    assert out.closed == 0


def test_a_failing_item_is_counted_logged_once_and_the_output_goes_on(caplog):
    out = _Collect(raise_on={2: ValueError("bad item two"), 4: KeyError("four")})
    with caplog.at_level(logging.WARNING, logger="inscope.outputs"):
        _run_items(out, range(6))
    assert out.seen == [0, 1, 3, 5]
    assert (out.handled, out.errors) == (4, 2)
    assert out.last_error == "KeyError: 'four'"  # the latest error is kept
    warned = [r.getMessage() for r in caplog.records]
    # the first error is logged with the output's name and the error; later ones only counted
    assert len(warned) == 1
    assert "output collect failed: bad item two" in warned[0]
    assert out.failed is None and out.closed == 1


@pytest.mark.parametrize(("err", "failed"), [
    (OSError(errno.ENOSPC, "No space left on device", "/data/run/detections.csv"),
     "No space left on device (/data/run/detections.csv)"),
    (OSError(errno.EFBIG, "File too large"), "File too large"),
    # a short write: no errno, only the numbers (io's BlockingIOError-free message)
    (OSError("16384 requested and 2472 written"),
     "a write failed (16384 requested and 2472 written): the disk is full or a file-size "
     "limit reached"),
    (OSError(), "a write failed (OSError): the disk is full or a file-size limit reached"),
])
def test_an_output_that_cannot_write_says_why_once_closes_and_discards_the_rest(
        caplog, err, failed):
    out = _Collect(raise_on={1: err}, queue_size=64)
    with caplog.at_level(logging.ERROR, logger="inscope.outputs"):
        _run_items(out, range(5))
    assert out.seen == [0]  # nothing after the failure is handled ...
    assert out.discarded == 3  # ... and what followed is counted, every item of it
    assert out.failed == failed
    assert (out.handled, out.errors) == (1, 1)
    assert out.last_error == f"OSError: {err}"
    assert out.closed == 1  # closed at the failure, so what it wrote stays readable; not again
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith(f"output collect stopped: {failed}; it is closed")
    assert out.stats()["failed"] == failed


def test_the_failure_adds_to_the_errors_already_counted():
    full = OSError(errno.ENOSPC, "No space left on device")
    out = _run_items(_Collect(raise_on={0: ValueError("bad"), 2: full}, queue_size=64),
                     range(4))
    assert out.seen == [1] and out.discarded == 1
    assert out.errors == 2  # one bad item, then the failure
    assert out.failed == "No space left on device"


def test_a_close_that_hits_a_full_disk_marks_the_output_failed():
    out = _run_items(_Collect(close_raises=OSError(errno.ENOSPC, "No space left on device",
                                                   "/data/run/frames.ome.tif")), range(3))
    assert out.seen == [0, 1, 2]
    assert out.failed == "No space left on device (/data/run/frames.ome.tif)"
    assert out.errors == 1
    assert out.last_error is not None and out.last_error.startswith("OSError: ")


def test_a_close_that_fails_otherwise_is_reported_not_raised(caplog):
    out = _Collect(close_raises=RuntimeError("encoder gone"))
    with caplog.at_level(logging.WARNING, logger="inscope.outputs"):
        _run_items(out, range(2))
    assert out.seen == [0, 1] and out.failed is None
    assert out.last_error == "close: RuntimeError: encoder gone"
    assert any(r.getMessage() == "output collect failed to close cleanly: encoder gone"
               for r in caplog.records)


class _Stuck(Output):
    name = "stuck"

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def handle(self, item):
        self.entered.set()
        self.release.wait(30)


def test_stop_gives_up_on_a_stuck_output_after_its_timeout(caplog):
    out = _Stuck()
    out.start()
    out.submit(1)
    assert out.entered.wait(10)
    done = threading.Event()

    def stop():
        out.stop(timeout=0.3)
        done.set()

    with caplog.at_level(logging.WARNING, logger="inscope.outputs"):
        threading.Thread(target=stop, daemon=True).start()
        came_back = done.wait(10)
        out.release.set()
    assert came_back, "stop() waited for a stuck output beyond its timeout"
    assert any(r.getMessage() == "output stuck did not finish within 0 s"
               for r in caplog.records)


def test_the_default_queue_of_an_output_holds_eight_and_counts_drops_as_its_own():
    out = _Stuck()
    out.start()
    out.submit(0)
    assert out.entered.wait(10)  # the thread holds item 0; the queue is empty again
    sent = [out.submit(i) for i in range(1, 12)]
    assert sent == [True] * 8 + [False] * 3
    assert out.dropped == 3 and out.stats()["dropped"] == 3
    out.release.set()
    out.stop(10)


# -- Result -----------------------------------------------------------------------------


def _result() -> Result:
    f = Frame(np.zeros((40, 60), np.uint16), 5, {"ready": 1_000}, StagePosition(100.0, 50.0, 2.0),
              0.5)
    boxes = np.array([[10, 10, 20, 30], [40, 5, 50, 15]], np.float32)
    d = Detections(boxes, np.array([0.9, 0.5]), np.array([0, 0]), ("nucleus",), 5)
    tracks = [Track(3, boxes[1].astype(float), np.zeros(2), np.ones(2))]
    return Result(f, d, tracks=tracks, target_id=3, control={"action": "move", "dx_um": 1.5},
                  focus={"state": "locked", "z_um": 2.0}, seq=17)


def test_the_message_carries_what_control_and_focus_made_of_the_frame():
    r = _result()
    msg, wire = r.message()
    assert msg["target_id"] == 3
    assert msg["control"] == {"action": "move", "dx_um": 1.5}
    assert msg["focus"] == {"state": "locked", "z_um": 2.0}
    assert msg["seq"] == 17 and msg["frame_index"] == 5
    assert [d["track_id"] for d in msg["detections"]] == [None, 3]
    assert b'"target_id":3' in wire and b'"seq":17' in wire


def test_the_message_is_built_once_and_shared():
    r = _result()
    m1, w1 = r.message()
    m2, w2 = r.message()
    assert m1 is m2 and w1 is w2
    assert r.track_ids() == (None, 3)
    assert r.stamps is r.frame.stamps and r.index == 5
