"""`SimulatedMicroscope`: a virtual specimen, camera, XY stage and focus drive.

It implements the same :class:`~inscope.acquisition.microscope.Microscope` protocol as the
Micro-Manager backend, and adds what no real microscope has: ground truth (every object's
box and stage position, the true focus, the true pixel-to-stage map) and a simulated clock,
so control loops can be scored exactly and run faster than real time.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time

import numpy as np

from inscope.acquisition.frame import STAMP_READY, Frame, StagePosition
from inscope.acquisition.microscope import BaseMicroscope
from inscope.acquisition.safety import MoveGuard, SoftLimits
from inscope.acquisition.simulated import motion
from inscope.acquisition.simulated.config import SimConfig
from inscope.acquisition.simulated.render import GroundTruth, Renderer
from inscope.acquisition.simulated.specimen import Specimen
from inscope.acquisition.stream import FrameStream, pace


class SimulatedMicroscope(BaseMicroscope):
    """A seeded, deterministic virtual fluorescence microscope.

    Parameters
    ----------
    config
        :class:`SimConfig`; keyword overrides (e.g. ``seed=3, realtime=False``) are applied
        on top of it.
    guard
        Move guard; by default the slide extent and the Z range as soft limits.
    specimen
        A :class:`Specimen`, e.g. ``Specimen.from_cells([...])`` for a known layout.

    Notes
    -----
    With ``realtime=True`` the simulated clock is the wall clock (``time.monotonic`` since
    the microscope was made), snaps and streams are paced by the exposure, and a stream
    renders in a separate camera process (``SimConfig.camera_process``) writing frames
    into shared memory, so the loop pays what a real camera costs it, not the renderer.
    With ``realtime=False`` nothing sleeps and nothing is spawned; the simulated clock
    (:attr:`sim_time_s`) advances by the frame intervals and the moves' settle times, so
    "time to focus" or "cells per minute" are measured in simulated time.

    A move takes its settle time (``xy_settle_ms`` / ``z_settle_ms``) whether or not the
    caller waits for it (``wait=False`` returns at once, as Micro-Manager's setters do);
    frames exposed meanwhile see an intermediate position and are flagged ``moving``
    (:mod:`inscope.acquisition.simulated.motion`).
    """

    name = "simulated"

    def __init__(self, config: SimConfig | None = None, *, guard: MoveGuard | None = None,
                 specimen: Specimen | None = None, **overrides) -> None:
        cfg = config or SimConfig()
        if overrides:
            names = {f.name for f in dataclasses.fields(SimConfig)}
            bad = set(overrides) - names
            if bad:
                raise TypeError(f"Unknown SimConfig field(s) {sorted(bad)}; known: "
                                f"{sorted(names)}.")
            cfg = dataclasses.replace(cfg, **overrides)
        self.config = cfg
        self._t = 0.0
        self._t_origin = time.monotonic()  # realtime: sim time = monotonic - origin
        self._lock = threading.RLock()
        if guard is None:
            hw, hh = cfg.slide_um[0] / 2, cfg.slide_um[1] / 2
            guard = MoveGuard(SoftLimits(x=(-hw, hw), y=(-hh, hh), z=cfg.z_limits_um),
                              require_limits=False)
        guard.clock, guard.sleep = self._clock, self._sleep
        super().__init__(guard)
        self.specimen = specimen or Specimen(cfg)
        theta = math.radians(cfg.camera_rotation_deg)
        rot = np.array([[math.cos(theta), -math.sin(theta)],
                        [math.sin(theta), math.cos(theta)]])
        flip = np.diag([-1.0 if cfg.camera_flip_x else 1.0, 1.0])
        self._true_affine = cfg.binned_pixel_um * rot @ flip
        self._renderer = Renderer(cfg, self._true_affine)
        x, y = map(float, cfg.start_xy_um)
        # stage kinematics; a process camera swaps in a shared-memory copy while it runs
        z = cfg.focus_z0_um if cfg.start_z_um is None else cfg.start_z_um
        self._motion = motion.new_state(x, y, float(z))
        self._index = 0
        self._last_truth: GroundTruth | None = None
        self.camera_process = None  # the running ProcessCamera, if any

    # -- clock -------------------------------------------------------------------------
    @property
    def sim_time_s(self) -> float:
        """Simulated time since start (s): the wall clock when realtime, else frame
        intervals plus move settle times."""
        return self._clock()

    def _clock(self) -> float:
        if self.config.realtime:
            return time.monotonic() - self._t_origin
        return self._t

    def _sleep(self, s: float) -> None:
        self.advance(s)

    def advance(self, seconds: float) -> None:
        """Let *seconds* of simulated time pass (sleeping them when realtime)."""
        if seconds <= 0:
            return
        if self.config.realtime:
            time.sleep(seconds)
        else:
            with self._lock:
                self._t += seconds

    # -- truth -------------------------------------------------------------------------
    @property
    def true_affine(self) -> np.ndarray:
        """The real pixel-to-stage map (camera rotation and flip included)."""
        return self._true_affine.copy()

    def true_focus_z(self, x_um: float | None = None, y_um: float | None = None,
                     t_s: float | None = None) -> float:
        """Z of the focal surface under (x, y) (default: the current stage XY) at
        simulated time *t_s* (default: now)."""
        cfg = self.config
        if x_um is None or y_um is None:
            p = self.position()
            x_um = p.x if x_um is None else x_um
            y_um = p.y if y_um is None else y_um
        t = self._clock() if t_s is None else t_s
        return true_focus(cfg, x_um, y_um, t)

    def true_z_range(self, cell_id: int, t_s: float | None = None) -> tuple[float, float]:
        """Stage z of the bottom and top of object *cell_id* at its position: its centre
        is on the focal surface, its half-thickness ``SimConfig.thickness_ratio`` x its
        short semi-axis (thin nuclei: both ends are the focal plane)."""
        t = self._clock() if t_s is None else t_s
        c = self.specimen.get(cell_id)
        z = true_focus(self.config, *c.position(t), t)
        h = self._renderer.half_thickness_um(c)
        return (z - h, z + h)

    def ground_truth(self) -> GroundTruth:
        """Labelled objects in the current field of view, now."""
        p, t = self.position(), self._clock()
        cells = self.specimen.cells_near(*self._renderer.field_rect_um((p.x, p.y)), t)
        return self._renderer.truth(cells, (p.x, p.y), t)

    # -- camera ------------------------------------------------------------------------
    @property
    def pixel_size_um(self) -> float:
        return self.config.binned_pixel_um

    def _render_frame(self, t: float | None = None) -> Frame:
        """Render the field exposed from sim time *t* (default now); ``moving`` is set
        for a move already under way, and the caller adds one started later."""
        cfg = self.config
        with self._lock:
            t = self._clock() if t is None else t
            st = motion.read(self._motion)
            x, y, z = motion.position(st, t, cfg.xy_quantum_um, cfg.z_quantum_um)
            dz = z - true_focus(cfg, x, y, t)
            cells = self.specimen.cells_near(*self._renderer.field_rect_um((x, y)), t)
            rate, gt = self._renderer.render(cells, (x, y), t, dz)
            pixels = self._renderer.expose(rate)
            index = self._index
            self._index += 1
        moving = motion.moving_during(st, t, t + cfg.exposure_ms / 1000)
        self._last_truth = gt
        return make_frame(cfg, pixels, index, time.monotonic_ns(), (x, y, z), t, dz, gt,
                          self.affine, moving)

    def snap(self) -> Frame:
        """Expose one frame: takes one frame interval (simulated, and real if realtime)."""
        t0 = time.monotonic()
        frame = self._render_frame()
        interval = self.config.interval_ms / 1000
        if self.config.realtime:
            rest = interval - (time.monotonic() - t0)
            if rest > 0:
                time.sleep(rest)
        else:
            with self._lock:
                self._t += interval
        return frame

    def stream(self) -> FrameStream:
        """Continuous acquisition paced at the frame interval (when realtime).

        Realtime with ``SimConfig.camera_process`` (the default): frames are rendered in
        a separate process (:class:`~inscope.acquisition.simulated.camera_process.
        ProcessCamera`); otherwise in this stream's thread.
        """
        if self.config.realtime and self.config.camera_process:
            from inscope.acquisition.simulated.camera_process import ProcessCamera

            return FrameStream(ProcessCamera(self).produce, name="sim-camera")

        def produce(emit, stop) -> None:
            interval = self.config.interval_ms / 1000
            next_t = time.monotonic()
            while not stop.is_set():
                t_exp = self._clock()
                frame = self._render_frame(t_exp)
                if self.config.realtime:
                    next_t = pace(frame, next_t, interval, stop)  # read out at its end
                    # a move commanded during the exposure smears this frame too
                    frame.moving = frame.moving or motion.moving_during(
                        motion.read(self._motion), t_exp, self._clock())
                else:
                    with self._lock:
                        self._t += interval
                emit(frame)

        return FrameStream(produce, name="sim-camera")

    # -- stage -------------------------------------------------------------------------
    def _read_position(self) -> StagePosition:
        cfg = self.config
        return StagePosition(*motion.position(motion.read(self._motion), self._clock(),
                                              cfg.xy_quantum_um, cfg.z_quantum_um))

    def _set_xy(self, x: float, y: float) -> None:
        q = self.config.xy_quantum_um
        tx, ty = (round(x / q) * q, round(y / q) * q) if q > 0 else (x, y)
        with self._lock:
            motion.command(self._motion, "xy", (tx, ty), self._clock(),
                           self.config.xy_settle_ms / 1000)

    def _set_z(self, z: float) -> None:
        q = self.config.z_quantum_um
        with self._lock:
            motion.command(self._motion, "z", round(z / q) * q if q > 0 else z,
                           self._clock(), self.config.z_settle_ms / 1000)

    def _wait_xy(self) -> None:
        st = motion.read(self._motion)
        self.advance(st[motion.T_XY1] - self._clock())

    def _wait_z(self) -> None:
        st = motion.read(self._motion)
        self.advance(st[motion.T_Z1] - self._clock())

    def _busy_xy(self) -> bool:
        return motion.busy(motion.read(self._motion), self._clock())[0]

    def _busy_z(self) -> bool:
        return motion.busy(motion.read(self._motion), self._clock())[1]

    def close(self) -> None:
        cam = self.camera_process
        if cam is not None:
            cam.stop()


def true_focus(cfg: SimConfig, x_um: float, y_um: float, t_s: float) -> float:
    """Z of the focal surface under (x, y) at simulated time *t_s*: a tilted plane that
    drifts (``SimConfig.tilt``, ``drift_um_per_s``)."""
    return cfg.focus_z0_um + cfg.tilt[0] * x_um + cfg.tilt[1] * y_um + cfg.drift_um_per_s * t_s


def make_frame(cfg: SimConfig, pixels: np.ndarray, index: int, ready_ns: int,
               pos: tuple[float, float, float], t: float, dz: float, gt: GroundTruth,
               affine: np.ndarray, moving: bool) -> Frame:
    """The :class:`Frame` of one simulated exposure (shared with the camera process)."""
    return Frame(
        pixels=pixels, index=index, stamps={STAMP_READY: ready_ns},
        position=StagePosition(*pos), pixel_size_um=cfg.binned_pixel_um, affine=affine,
        metadata={"camera": "simulated", "exposure_ms": cfg.exposure_ms,
                  "binning": cfg.binning, "sim_time_s": t, "defocus_um": dz,
                  "truth_ids": gt.ids.tolist(),
                  "truth_visible_fraction": gt.visible_fraction.tolist()},
        truth=gt.boxes, moving=bool(moving),
    )
