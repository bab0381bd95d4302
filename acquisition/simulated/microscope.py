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
from inscope.acquisition.simulated.config import SimConfig
from inscope.acquisition.simulated.render import GroundTruth, Renderer
from inscope.acquisition.simulated.specimen import Specimen
from inscope.acquisition.stream import FrameStream


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
    With ``realtime=True`` snaps and streams are paced by the exposure and moves take their
    settle time in wall time. With ``realtime=False`` nothing sleeps; the simulated clock
    (:attr:`sim_time_s`) still advances by the same amounts, so "time to focus" or "cells
    per minute" are measured in simulated time.
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
        self._x, self._y = map(float, cfg.start_xy_um)
        self._z = float(cfg.focus_z0_um)
        self._index = 0
        self._last_truth: GroundTruth | None = None

    # -- clock -------------------------------------------------------------------------
    @property
    def sim_time_s(self) -> float:
        """Simulated time since start (s): frame intervals plus move settle times."""
        return self._t

    def _clock(self) -> float:
        return time.monotonic() if self.config.realtime else self._t

    def _sleep(self, s: float) -> None:
        self.advance(s)

    def advance(self, seconds: float) -> None:
        """Let *seconds* of simulated time pass (sleeping them too when realtime)."""
        if seconds <= 0:
            return
        with self._lock:
            self._t += seconds
        if self.config.realtime:
            time.sleep(seconds)

    # -- truth -------------------------------------------------------------------------
    @property
    def true_affine(self) -> np.ndarray:
        """The real pixel-to-stage map (camera rotation and flip included)."""
        return self._true_affine.copy()

    def true_focus_z(self, x_um: float | None = None, y_um: float | None = None) -> float:
        """Z of the focal surface under (x, y) (default: the current stage XY) now."""
        cfg = self.config
        x = self._x if x_um is None else x_um
        y = self._y if y_um is None else y_um
        return cfg.focus_z0_um + cfg.tilt[0] * x + cfg.tilt[1] * y + cfg.drift_um_per_s * self._t

    def ground_truth(self) -> GroundTruth:
        """Labelled objects in the current field of view, now."""
        cells = self.specimen.cells_near(*self._renderer.field_rect_um((self._x, self._y)),
                                         self._t)
        return self._renderer.truth(cells, (self._x, self._y), self._t)

    # -- camera ------------------------------------------------------------------------
    @property
    def pixel_size_um(self) -> float:
        return self.config.binned_pixel_um

    def _render_frame(self) -> Frame:
        cfg = self.config
        with self._lock:
            xy, t = (self._x, self._y), self._t
            dz = self._z - self.true_focus_z()
            cells = self.specimen.cells_near(*self._renderer.field_rect_um(xy), t)
            rate, gt = self._renderer.render(cells, xy, t, dz)
            pixels = self._renderer.expose(rate)
            index = self._index
            self._index += 1
            pos = StagePosition(self._x, self._y, self._z)
        self._last_truth = gt
        frame = Frame(
            pixels=pixels, index=index, stamps={STAMP_READY: time.monotonic_ns()},
            position=pos, pixel_size_um=self.pixel_size_um, affine=self.affine,
            metadata={"camera": "simulated", "exposure_ms": cfg.exposure_ms,
                      "binning": cfg.binning, "sim_time_s": t, "defocus_um": dz,
                      "truth_ids": gt.ids.tolist(),
                      "truth_visible_fraction": gt.visible_fraction.tolist()},
            truth=gt.boxes,
        )
        return frame

    def snap(self) -> Frame:
        """Expose one frame: takes one frame interval (simulated, and real if realtime)."""
        t0 = time.monotonic()
        frame = self._render_frame()
        interval = self.config.interval_ms / 1000
        with self._lock:
            self._t += interval
        if self.config.realtime:
            rest = interval - (time.monotonic() - t0)
            if rest > 0:
                time.sleep(rest)
        return frame

    def stream(self) -> FrameStream:
        """Continuous acquisition paced at the frame interval (when realtime)."""

        def produce(emit, stop) -> None:
            interval = self.config.interval_ms / 1000
            next_t = time.monotonic()
            while not stop.is_set():
                frame = self._render_frame()
                with self._lock:
                    self._t += interval
                if self.config.realtime:
                    next_t += interval
                    wait = next_t - time.monotonic()
                    if wait > 0:
                        # frame is "read out" at the end of its interval, as a camera would
                        stop.wait(wait)
                        frame.stamps[STAMP_READY] = time.monotonic_ns()
                    else:
                        next_t = time.monotonic()  # running late: don't try to catch up
                emit(frame)

        return FrameStream(produce, name="sim-camera")

    # -- stage -------------------------------------------------------------------------
    def _read_position(self) -> StagePosition:
        return StagePosition(self._x, self._y, self._z)

    def _set_xy(self, x: float, y: float) -> None:
        q = self.config.xy_quantum_um
        with self._lock:
            self._x = round(x / q) * q if q > 0 else x
            self._y = round(y / q) * q if q > 0 else y
        self.advance(self.config.xy_settle_ms / 1000)

    def _set_z(self, z: float) -> None:
        q = self.config.z_quantum_um
        with self._lock:
            self._z = round(z / q) * q if q > 0 else z
        self.advance(self.config.z_settle_ms / 1000)
