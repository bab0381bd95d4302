"""The simulated camera in its own process: renders at the camera's pace into shared memory.

Rendering a 512x512 frame costs ~5 ms of CPU; done in the loop's own process it competes
with detection and control for the GIL and the cores, so a benchmark on the simulator
would measure the renderer. Here a child process (started with ``spawn``, so it works on
Windows too) owns a :class:`~inscope.acquisition.simulated.render.Renderer` and a copy of
the specimen, paces itself at the frame interval, and for each frame:

1. waits until the end of the exposure, then reads the stage/focus state from shared
   memory (written by the microscope in the parent, :mod:`.motion`): the position at the
   middle of the exposure, and whether a move was under way during it (``moving``);
2. renders and exposes the frame into the next slot of a ring of shared-memory buffers;
3. sends a small message (slot, index, stamps, position, ground truth) over a pipe.

The child renders at a lower CPU priority than the loop (``NICE``): a real camera costs
the host nothing, so the loop gets the cores first and the renderer the rest.

The parent's stream thread copies the pixels out of the slot (~0.05 ms) and emits a
:class:`~inscope.acquisition.frame.Frame`. The clock is shared: simulated time is
``time.monotonic()`` minus the microscope's origin in both processes.

Scripts that stream from a realtime simulator need the usual ``if __name__ ==
"__main__":`` guard of ``spawn`` (the child imports the main module); or set
``SimConfig.camera_process = False`` to render in a thread.

No orphan: the child ignores SIGINT (the parent stops it cleanly), sleeps in ``poll`` on
the pipe so that a stop message or the parent's death (the pipe closes) wakes it at once,
and also checks that its parent is alive; it is a daemon process, and the parent
terminates it if it does not end within a second of the stop.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading
import time
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from inscope.acquisition.errors import AcquisitionError
from inscope.acquisition.simulated import motion

log = logging.getLogger(__name__)

SLOTS = 4  # ring of frame buffers; the parent copies a frame out as soon as it is told


class ProcessCamera:
    """Runs the simulated camera of *scope* in a child process while a stream is open.

    Use through :meth:`SimulatedMicroscope.stream()
    <inscope.acquisition.simulated.SimulatedMicroscope.stream>`; :meth:`produce` is a
    :class:`~inscope.acquisition.stream.FrameStream` producer.
    """

    def __init__(self, scope) -> None:
        self.scope = scope
        self.process: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._shm_state: shared_memory.SharedMemory | None = None
        self._shm_frames: shared_memory.SharedMemory | None = None
        self._frames: np.ndarray | None = None  # the ring, a view of _shm_frames
        self._lock = threading.Lock()
        self.frames = 0
        self.pid: int | None = None  # the camera process's id (kept after it ended)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        scope, cfg = self.scope, self.scope.config
        h, w = cfg.binned_shape
        dtype = np.uint8 if cfg.bit_depth == 8 else np.uint16
        self._shm_state = shared_memory.SharedMemory(create=True, size=motion.SIZE * 8)
        self._shm_frames = shared_memory.SharedMemory(
            create=True, size=SLOTS * h * w * np.dtype(dtype).itemsize)
        state = np.ndarray(motion.SIZE, np.float64, buffer=self._shm_state.buf)
        with scope._lock:
            state[:] = motion.read(scope._motion)
            scope._motion = state  # moves now write where the camera reads
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        self._conn = parent
        self.process = ctx.Process(
            target=camera_main, name="inscope-sim-camera", daemon=True,
            args=(cfg, scope.specimen, scope.true_affine, scope._t_origin,
                  self._shm_state.name, self._shm_frames.name, child))
        self.process.start()
        self.pid = self.process.pid
        child.close()
        scope.camera_process = self
        self._frames = np.ndarray((SLOTS, h, w), dtype, buffer=self._shm_frames.buf)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the child (message, then terminate if needed) and free the shared memory;
        idempotent."""
        with self._lock:
            proc, conn = self.process, self._conn
            self.process = self._conn = None
            if proc is not None:
                if conn is not None:
                    try:
                        conn.send("stop")
                    except (OSError, ValueError):
                        pass
                proc.join(timeout)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(timeout)
                if conn is not None:
                    conn.close()
            scope = self.scope
            if self._shm_state is not None:
                with scope._lock:
                    scope._motion = motion.read(scope._motion)  # back to a private copy
                self._frames = None
                for shm in (self._shm_state, self._shm_frames):
                    if shm is None:
                        continue
                    try:
                        shm.close()
                        shm.unlink()
                    except (FileNotFoundError, BufferError):
                        pass
                self._shm_state = self._shm_frames = None
            if scope.camera_process is self:
                scope.camera_process = None

    # -- the stream's producer ---------------------------------------------------------
    def produce(self, emit, stop: threading.Event) -> None:
        from inscope.acquisition.simulated.microscope import make_frame
        from inscope.acquisition.simulated.render import GroundTruth

        if self.scope.camera_process is not None:
            raise AcquisitionError("A stream is already running on this simulated camera; "
                                   "close it before starting another.")
        try:
            self.start()
            cfg, conn, proc = self.scope.config, self._conn, self.process
            assert conn is not None and proc is not None, "start() sets both"
            while not stop.is_set():
                if not conn.poll(0.25):
                    if not proc.is_alive():
                        raise AcquisitionError(
                            f"the simulated camera process ended (exit code "
                            f"{proc.exitcode}); see the log above for its error.")
                    continue
                try:
                    msg = conn.recv()
                except EOFError:
                    raise AcquisitionError("the simulated camera process ended unexpectedly; "
                                           "see the log above for its error.") from None
                if isinstance(msg, str):  # an error report from the child
                    raise AcquisitionError(f"simulated camera process failed: {msg}")
                pixels = self._copy_slot(msg["slot"])
                gt = GroundTruth(*msg["truth"])
                self.frames += 1
                frame = make_frame(cfg, pixels, msg["index"], msg["ready_ns"], msg["pos"],
                                   msg["t"], msg["dz"], gt, self.scope.affine, msg["moving"])
                frame.metadata["exposure_end_ns"] = msg["exposure_end_ns"]
                emit(frame)
        finally:
            self.stop()

    def _copy_slot(self, slot: int) -> np.ndarray:
        """A copy of ring slot *slot* (no view: ``stop`` must be able to free the ring)."""
        if self._frames is None:
            raise AcquisitionError("the simulated camera was stopped while streaming "
                                   "(its microscope was closed); open a new stream.")
        return np.array(self._frames[slot])


#: How much lower the rendering process runs than the loop (POSIX nice increment).
NICE = 10


def _lower_priority() -> None:
    """Render at a lower CPU priority than the loop. A camera's frames cost the host
    nothing (the sensor and its electronics make them), but the simulator's cost a
    core's worth on a small machine; at equal priority the renderer took CPU from the
    detector and the control thread, and ``inscope bench`` on ``sim`` measured their
    contention with it. Now the loop gets the CPU it needs, and the renderer the rest:
    on a saturated machine the camera then delivers fewer frames (its fps says so)."""
    import os

    if hasattr(os, "nice"):
        try:
            os.nice(NICE)
        except OSError:  # not allowed here: render at the same priority
            pass


def camera_main(cfg, specimen, true_affine: np.ndarray, t_origin: float, state_name: str,
                frames_name: str, conn: Any) -> None:
    """The child process: render frames at the camera's pace until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _lower_priority()
    from inscope.acquisition.simulated.microscope import true_focus
    from inscope.acquisition.simulated.render import Renderer

    shm_state = shared_memory.SharedMemory(name=state_name)
    shm_frames = shared_memory.SharedMemory(name=frames_name)
    state = ring = None
    try:
        state = np.ndarray(motion.SIZE, np.float64, buffer=shm_state.buf)
        h, w = cfg.binned_shape
        dtype = np.uint8 if cfg.bit_depth == 8 else np.uint16
        ring = np.ndarray((SLOTS, h, w), dtype, buffer=shm_frames.buf)
        renderer = Renderer(cfg, true_affine)
        parent = mp.parent_process()
        interval = cfg.interval_ms / 1000
        exposure = cfg.exposure_ms / 1000
        next_t = time.monotonic() + interval
        index = 0
        while True:
            wait = next_t - time.monotonic()
            if conn.poll(max(wait, 0.0)):  # a stop message, or the parent is gone
                break
            if parent is not None and not parent.is_alive():
                break
            t_end = time.monotonic()
            t = t_end - t_origin  # simulated time at the end of the exposure
            st = motion.read(state)
            x, y, z = motion.position(st, t - exposure / 2, cfg.xy_quantum_um,
                                      cfg.z_quantum_um)
            moving = motion.moving_during(st, t - exposure, t)
            dz = z - true_focus(cfg, x, y, t)
            cells = specimen.cells_near(*renderer.field_rect_um((x, y)), t)
            rate, gt = renderer.render(cells, (x, y), t, dz)
            slot = index % SLOTS
            ring[slot] = renderer.expose(rate)
            ready = time.monotonic_ns()
            try:
                conn.send({"slot": slot, "index": index, "ready_ns": ready,
                           "exposure_end_ns": int(t_end * 1e9), "pos": (x, y, z),
                           "t": t, "dz": dz, "moving": moving,
                           "truth": (gt.boxes, gt.ids, gt.visible_fraction, gt.centers_um,
                                     gt.sizes_um)})
            except (BrokenPipeError, OSError):
                break
            index += 1
            next_t += interval
            # running late (the render took longer than a frame): the next exposure has
            # already happened, as on a camera that exposes continuously; don't try to
            # catch up either
            next_t = max(next_t, time.monotonic())
    except Exception as e:  # noqa: BLE001 - reported to the parent in one line
        try:
            conn.send(f"{type(e).__name__}: {e}")
        except OSError:
            pass
    finally:
        del state, ring  # release the views before closing the mappings
        shm_state.close()
        shm_frames.close()
