"""What the pipeline hands to its outputs, and the thread that drives each output.

Every output (ZMQ publisher, overlay/video writer, records) runs in its own thread and is
fed through its own small queue. The pipeline's control thread only appends a reference
to that queue (no copy, no encoding), so a slow output — a stalled subscriber, a slow
disk, a video encoder — never slows the loop: when its queue is full the *oldest* item is
dropped and counted for that output alone.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from inscope.acquisition.frame import Frame
from inscope.enums import Stamp

log = logging.getLogger(__name__)

T = TypeVar("T")

# the loop's time-stamp names (inscope.enums.Stamp), as plain str dict keys
STAMP_DEQUEUED: str = Stamp.DEQUEUED.value
STAMP_CONTROL_START: str = Stamp.CONTROL_START.value
STAMP_CONTROL_END: str = Stamp.CONTROL_END.value
STAMP_MOVE_COMMANDED: str = Stamp.MOVE_COMMANDED.value
STAMP_PUBLISHED: str = Stamp.PUBLISHED.value  # the result was handed to every output
STAMP_SENT: str = Stamp.SENT.value  # the ZMQ detections message left the PUB socket


@dataclass(slots=True)
class Result:
    """One processed frame: detections plus what control made of them.

    ``stamps`` is the frame's own stamp dict (shared, not copied), so every stage adds
    to one record of the frame's life.
    """

    frame: Frame
    detections: Any  # detector.Detections
    tracks: list = field(default_factory=list)
    target_id: int | None = None
    control: dict | None = None  # JSON-able summary of the steering action
    focus: dict | None = None  # JSON-able focus state
    seq: int = 0  # running number of processed frames (0, 1, 2, ...)
    _ids: tuple[int | None, ...] | None = field(default=None, init=False, repr=False,
                                               compare=False)
    _wire: tuple[dict, bytes] | None = field(default=None, init=False, repr=False,
                                              compare=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False,
                                   repr=False, compare=False)

    def track_ids(self) -> tuple[int | None, ...]:
        """The track id of each detection (:func:`inscope.schema.match_track_ids`),
        matched once and shared by the message, the overlay, the eyepiece and the
        display-lag predictor (each matched them on its own)."""
        with self._lock:
            if self._ids is None:
                from inscope.schema import match_track_ids

                self._ids = tuple(match_track_ids(self.detections.boxes, self.tracks))
            return self._ids

    def message(self) -> tuple[dict, bytes]:
        """The detections message (:func:`inscope.schema.detections_message`) and its
        JSON bytes, built once by whichever output asks first and shared by the others
        (the publisher and the records wrote the same message; building it for ~100
        detections was most of what each of them did per frame)."""
        with self._lock:
            if self._wire is None:
                from inscope import schema

                msg = schema.detections_message(
                    self.frame, self.detections, tracks=self.tracks,
                    target_id=self.target_id, control=self.control, focus=self.focus,
                    extra={"seq": self.seq}, track_ids=self.track_ids())
                self._wire = (msg, schema.dumps(msg))
            return self._wire

    @property
    def stamps(self) -> dict[str, int]:
        return self.frame.stamps

    @property
    def index(self) -> int:
        return self.frame.index


class BoundedQueue(Generic[T]):
    """FIFO of at most *maxsize* items that drops the oldest when full (and counts it).

    ``maxsize=1`` is a newest-item slot. Waiting uses a Condition, never a polling sleep.
    """

    def __init__(self, maxsize: int = 8) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1; got {maxsize}")
        self._q: deque[T] = deque()
        self._max = maxsize
        self._cond = threading.Condition()
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Append *item*; returns False if an older item had to be dropped."""
        with self._cond:
            ok = True
            if len(self._q) >= self._max:
                self._q.popleft()
                self.dropped += 1
                ok = False
            self._q.append(item)
            self.put_count += 1
            self._cond.notify()
            return ok

    def get(self, timeout: float | None = None) -> T | None:
        """Oldest item, waiting up to *timeout*; None on timeout or when closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._q or self._closed, timeout):
                return None
            return self._q.popleft() if self._q else None

    def close(self) -> None:
        """No more puts are expected; ``get`` drains what is left, then returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._q)


class Output:
    """Base class of a threaded output.

    Subclasses implement :meth:`open`, :meth:`handle` (runs in the output's own thread)
    and :meth:`close`. The pipeline calls :meth:`start`, :meth:`submit` per result and
    :meth:`stop`, which drains the queue before closing so that nothing already handed
    over is lost on a clean stop or Ctrl-C.
    """

    name = "output"
    queue_size = 8

    def __init__(self, queue_size: int | None = None) -> None:
        self._queue: BoundedQueue = BoundedQueue(queue_size or self.queue_size)
        self._thread: threading.Thread | None = None
        self.handled = 0
        self.errors = 0
        self.last_error: str | None = None
        #: why this output stopped for good (disk full, ...); None while it works
        self.failed: str | None = None
        self.discarded = 0  # items handed over after it stopped

    # -- to override -------------------------------------------------------------------
    def open(self) -> None:
        """Acquire resources (runs in the caller's thread, so errors surface at start)."""

    def handle(self, item: Any) -> None:
        """Consume one item (a :class:`Result` unless a subclass says otherwise)."""

    def close(self) -> None:
        """Flush and release resources (runs in the output thread after the last item)."""

    def stats(self) -> dict:
        return {"handled": self.handled, "dropped": self.dropped, "errors": self.errors,
                "last_error": self.last_error, "failed": self.failed,
                "discarded": self.discarded}

    # -- machinery ---------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def start(self) -> None:
        self.open()
        self._thread = threading.Thread(target=self._run, name=f"inscope-out-{self.name}",
                                        daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Hand *item* over without blocking; False if an older item was dropped."""
        return self._queue.put(item)

    def _fail(self, e: OSError) -> None:
        """The output cannot write any more (disk full, file too large, I/O error): say so
        in one line, close it so what it wrote stays readable, and drop what follows."""
        what = e.strerror or str(e) or type(e).__name__
        if e.errno is None:  # e.g. a short write: "16384 requested and 2472 written"
            what = f"a write failed ({what}): the disk is full or a file-size limit reached"
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        self.failed = f"{what}{where}"
        self.errors += 1
        self.last_error = f"{type(e).__name__}: {e}"
        log.error("output %s stopped: %s; it is closed and what it wrote stays readable; "
                  "the loop and the other outputs go on.", self.name, self.failed)
        try:
            self.close()
        except Exception as e2:  # noqa: BLE001 - closing a broken file may fail too
            log.debug("output %s close after failure: %s", self.name, e2)

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                if self.failed is not None:
                    self.discarded += 1
                    continue
                try:
                    self.handle(item)
                    self.handled += 1
                except OSError as e:  # disk full & co: this output cannot go on
                    self._fail(e)
                except Exception as e:  # noqa: BLE001 - an output must not kill the loop
                    self.errors += 1
                    if self.last_error is None:
                        log.warning("output %s failed: %s (it keeps running; further "
                                    "errors are counted)", self.name, e)
                    self.last_error = f"{type(e).__name__}: {e}"
        finally:
            try:
                if self.failed is None:
                    self.close()
            except OSError as e:  # e.g. the last flush hits a full disk
                self._fail(e)
            except Exception as e:  # noqa: BLE001
                self.last_error = f"close: {type(e).__name__}: {e}"
                log.warning("output %s failed to close cleanly: %s", self.name, e)

    def stop(self, timeout: float = 30.0) -> None:
        """Drain the queue, close, and wait for the thread."""
        self._queue.close()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("output %s did not finish within %.0f s", self.name, timeout)
