"""Newest-frame hand-off between a producer thread and one consumer.

Low latency beats completeness beside a live microscope: when the consumer is slower than
the camera it should always get the *newest* frame, never work through a backlog. The slot
holds one item; putting over an unread item drops it and counts the drop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from inscope.acquisition.frame import STAMP_READY, Frame

T = TypeVar("T")


def pace(frame: Frame, next_t: float, interval_s: float, stop: threading.Event) -> float:
    """Hold *frame* until its read-out, one *interval_s* after *next_t* (a camera delivers
    a frame at the end of its exposure), and stamp it ready then. A producer running late
    does not try to catch up: the next interval starts now. Returns the new *next_t*.

    The pacing of the simulated cameras (the simulator and the slide), defined once.
    """
    next_t += interval_s
    wait = next_t - time.monotonic()
    if wait <= 0:
        return time.monotonic()
    stop.wait(wait)
    frame.stamps[STAMP_READY] = time.monotonic_ns()
    return next_t


class NewestSlot(Generic[T]):
    """A one-item, overwrite-on-put queue that counts what it drops."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has = False
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Store *item*; returns True if an unread older item was dropped to make room."""
        with self._cond:
            dropped = self._has
            if dropped:
                self.dropped += 1
            self._item, self._has = item, True
            self.put_count += 1
            self._cond.notify()
            return dropped

    def put_wait(self, item: T, timeout: float | None = None) -> bool:
        """Store *item* once the previous one has been read (lossless hand-off for offline
        sources such as file replay); False if it timed out or the slot closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._has or self._closed, timeout):
                return False
            if self._closed:
                return False
            self._item, self._has = item, True
            self.put_count += 1
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """Newest unread item, waiting up to *timeout* s; None on timeout or when closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has or self._closed, timeout):
                return None
            if not self._has:
                return None
            item, self._item, self._has = self._item, None, False
            self._cond.notify_all()  # wakes a producer waiting in put_wait
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


Producer = Callable[[Callable[[Frame], object], threading.Event], None]


class FrameStream:
    """Frames from a producer thread, newest first.

    The backend supplies ``producer(emit, stop)``: it calls ``emit(frame)`` for every frame
    and returns when ``stop`` is set (or when its source ends). Use as a context manager
    and iterate, or call :meth:`get`::

        with scope.stream() as frames:
            for frame in frames:
                ...
            print(frames.dropped)

    An exception in the producer is re-raised in the consumer, so a camera failure is
    seen where the frames are used rather than lost in a thread.

    ``lossless=True`` makes ``emit`` wait until the consumer has taken the previous frame
    instead of dropping it: for offline sources (file replay as fast as possible) where
    every frame should be processed and the source, not a camera, can wait.
    """

    def __init__(self, producer: Producer, name: str = "frames",
                 lossless: bool = False) -> None:
        self._producer = producer
        self._slot: NewestSlot[Frame] = NewestSlot()
        self._stop = threading.Event()
        self.lossless = lossless
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"inscope-{name}", daemon=True)
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> FrameStream:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._producer(self._emit_lossless if self.lossless else self._slot.put,
                           self._stop)
        except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
            self._error = e
        finally:
            self._slot.close()

    def _emit_lossless(self, frame: Frame) -> bool:
        while not self._slot.put_wait(frame, timeout=0.1):
            if self._stop.is_set() or self._slot.closed:
                return False
        return False  # nothing was dropped

    def close(self, timeout: float = 5.0) -> None:
        """Stop the producer and wait for its thread to end."""
        self._stop.set()
        if self._started:
            self._thread.join(timeout)
        self._slot.close()

    def __enter__(self) -> FrameStream:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- consuming ---------------------------------------------------------------------
    def get(self, timeout: float | None = 5.0) -> Frame | None:
        """The newest frame not yet returned; None if none arrived in time or the stream
        ended. Raises the producer's exception if it failed."""
        self.start()
        frame = self._slot.get(timeout)
        if frame is None and self._error is not None:
            err, self._error = self._error, None
            raise err
        return frame

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.get(timeout=None if not self._stop.is_set() else 0)
            if frame is None:
                return
            yield frame

    @property
    def dropped(self) -> int:
        """Frames the producer made that no consumer ever saw."""
        return self._slot.dropped

    @property
    def produced(self) -> int:
        return self._slot.put_count

    @property
    def running(self) -> bool:
        return self._thread.is_alive()
