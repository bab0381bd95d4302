"""The pipeline's control stage: tracking, steering and focus lock behind one ``step``.

Wraps :mod:`inscope.control` (Tracker, Steerer, FocusLock) so the pipeline's control thread makes
one call per frame and gets back JSON-able summaries for the outputs. Mode and target
can change at any time from the command API; the lock keeps a change from landing in the
middle of a step.

Moves are commanded and not waited for (:class:`CommandedMoves`): the control thread
goes straight back to the newest detections. A frame exposed while a move was under way
(``Frame.moving``), or whose exposure ended before the newest move was commanded, still
updates the tracker but is never used to decide a move or to measure focus.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Any

import numpy as np

from inscope.config import ControlConfig
from inscope.schema import MODES


def target_spec(target: str | int, target_class: str | None = None) -> str | int:
    """Config/command target -> what :meth:`inscope.control.steering.Steerer.select` takes."""
    if isinstance(target, bool):
        raise ValueError("target must be a policy name or a track id, not true/false.")
    if isinstance(target, int):
        return target
    t = str(target).strip()
    if t.isdigit():
        return int(t)
    if t == "class":
        if not target_class:
            raise ValueError("target 'class' needs a class name: send "
                             "{\"cmd\": \"set_target\", \"target\": \"class\", "
                             "\"class\": \"mitotic\"} or use 'class:<name>'.")
        return f"class:{target_class}"
    if t == "track":
        raise ValueError("target 'track' needs a track id: send {\"cmd\": \"set_target\", "
                         "\"target\": 7} (an integer).")
    return t


class CommandedMoves:
    """The microscope as the live loop's control sees it: every move is commanded and
    returns at once (``wait=False``); everything else is the microscope's own."""

    def __init__(self, scope) -> None:
        self._scope = scope

    def move_xy(self, x: float, y: float, *, relative: bool = False,
                wait: bool = False) -> bool:
        return self._scope.move_xy(x, y, relative=relative, wait=False)

    def move_z(self, z: float, *, relative: bool = False, wait: bool = False) -> bool:
        return self._scope.move_z(z, relative=relative, wait=False)

    def __getattr__(self, name: str):
        return getattr(self._scope, name)


class ControlStage:
    """Tracking + steering + focus lock for the live loop.

    Parameters
    ----------
    scope
        The microscope whose stage/focus is moved (through its guard).
    config
        :class:`inscope.config.ControlConfig`.
    director
        Optional object whose ``step(stage, frame, tracks)`` runs before steering on
        every usable frame and may change the target (``stage.steerer.select``), e.g.
        the demo's tour (:class:`inscope.tour.Tour`); its ``status()`` dict goes into
        the published steering state.
    """

    def __init__(self, scope, config: ControlConfig | None = None, director=None) -> None:
        from inscope.control.focus import FocusLock
        from inscope.control.steering import Steerer
        from inscope.control.tracking import Tracker

        self.config = config = config or ControlConfig()
        self.scope = scope
        self.moves = CommandedMoves(scope)
        self.tracker = Tracker()
        self.steerer = Steerer(self.moves, policy="nearest", tracker=self.tracker,
                               gain=config.gain, deadband_um=config.deadband_um,
                               max_step_um=config.max_step_um, settle_s=config.settle_s)
        self.steerer.select(target_spec(config.target, config.target_class))
        self.focus = FocusLock(self.moves, dither_um=config.focus_dither_um,
                               max_step_um=config.focus_step_um, dof_um=config.focus_dof_um,
                               na=config.objective_na, wavelength_um=config.wavelength_um,
                               immersion_index=config.immersion_index,
                               check_every_s=config.focus_check_s)
        self.director = director
        self._lock = threading.Lock()
        self.mode = "off"
        self.set_mode(config.mode)
        self.steer_status: Counter[str] = Counter()
        self.focus_status: Counter[str] = Counter()
        self.centred_targets: set[int] = set()
        self.focus_moves = 0
        self.frames_moving = 0
        self.frames_before_move = 0
        self.last_steer: dict | None = None
        self.last_focus: dict | None = None
        self.last_frame = None  # the newest frame control used, and its tracks
        self.last_tracks: list = []
        self._last_move_ns = 0
        self._wait_from: int | None = None
        self._guard = getattr(scope, "guard", None)
        if self._guard is not None:
            self._guard.listeners.append(self._on_move)

    def _on_move(self, rec) -> None:
        if rec.made:
            self._last_move_ns = max(self._last_move_ns, rec.t_ns)

    def close(self) -> None:
        """Stop listening to the guard (the stage is done with)."""
        g = self._guard
        if g is not None and self._on_move in g.listeners:
            g.listeners.remove(self._on_move)

    # -- commands ----------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown control mode {mode!r}; use one of {', '.join(MODES)}.")
        with self._lock:
            if "steer" in self.mode and "steer" not in mode:
                self.steerer.reset()
            if "focus" in self.mode and "focus" not in mode:
                self.focus.reset()
            self.mode = mode

    def set_target(self, target: str | int, target_class: str | None = None) -> str | int:
        spec = target_spec(target, target_class)
        with self._lock:
            self.steerer.select(spec)  # raises ValueError for an unknown policy
        return spec

    @property
    def target_policy(self) -> str:
        return getattr(self.steerer.policy, "name", str(self.steerer.policy))

    # -- the loop ----------------------------------------------------------------------
    def usable(self, frame) -> str | None:
        """Why *frame* must not drive a move or a focus measure (None: it may)."""
        if getattr(frame, "moving", False):
            return "moving"
        exposed = frame.metadata.get("exposure_end_ns") if frame.metadata else None
        if exposed is None:
            exposed = frame.stamps.get("ready", 0)
        if exposed < self._last_move_ns:
            return "settling"  # exposed before the newest move was commanded
        return None

    def step(self, frame, detections) -> tuple[list, int | None, dict | None, dict | None]:
        """One frame: ``(tracks, target_id, steer action dict, focus action dict)``."""
        with self._lock:
            mode = self.mode
            if mode == "off":
                return [], None, None, None
            tracks = self.tracker.update(frame, detections)
            steer = focus = None
            target_id = self.steerer.target_id
            why = self.usable(frame)
            if why is not None:
                if why == "moving":
                    self.frames_moving += 1
                else:
                    self.frames_before_move += 1
                reason = ("exposed during a move" if why == "moving"
                          else "exposed before the last move was commanded")
                if "steer" in mode:
                    steer = {"frame_index": frame.index, "status": why,
                             "target_id": target_id, "reason": reason, "made": False}
                    self.steer_status[why] += 1
                if "focus" in mode:
                    focus = {"frame_index": frame.index, "status": why, "state": why,
                             "z_center": self.focus.z_center, "locked": self.focus.locked,
                             "reason": reason, "made": False}
                    self.focus_status[why] += 1
                self._add_director(steer)
                self._record(frame, steer, focus)
                return tracks, target_id, steer, focus
            self.last_frame, self.last_tracks = frame, tracks
            waited = self._focus_wait(frame, "steer" in mode and "focus" in mode
                                      and self.focus.cycling)
            if waited is not None and waited < self.FOCUS_WAIT_S:
                # a dither cycle compares sharpness across z in one scene: the stage
                # waits for it (a few frames) instead of voiding it
                steer = {"frame_index": frame.index, "status": "waiting-focus",
                         "target_id": target_id, "made": False,
                         "reason": "the focus lock is measuring"}
                self.steer_status["waiting-focus"] += 1
                self._add_director(steer)
            elif "steer" in mode:
                if self.director is not None:
                    self.director.step(self, frame, tracks)
                act = self.steerer.step(frame, detections, tracks)
                steer = act.to_dict()
                target_id = act.target_id
                self.steer_status[act.status] += 1
                if act.status == "centred" and act.target_id is not None:
                    self.centred_targets.add(act.target_id)
                self._add_director(steer)
                self.last_steer = steer
            if "focus" in mode:
                fa = self.focus.step(frame, detections)
                focus = fa.to_dict()
                focus["state"] = self.focus.state if fa.status not in (
                    "refused", "failed", "dry-run", "disabled", "no-position") else fa.status
                focus["locked"] = self.focus.locked
                self.focus_status[fa.status] += 1
                self.focus_moves += int(bool(fa.made))
                self.last_focus = focus
            self._record(frame, steer, focus)
            return tracks, target_id, steer, focus

    #: Longest the stage waits for a focus cycle (s of frame time) before it steers anyway
    #: (a target moving away matters more than a clean focus measure).
    FOCUS_WAIT_S = 0.25

    def _focus_wait(self, frame, cycling: bool) -> float | None:
        """Seconds the stage has waited for the current focus cycle (None: no cycle)."""
        if not cycling:
            self._wait_from = None
            return None
        t = frame.stamps.get("ready", 0)
        if self._wait_from is None:
            self._wait_from = t
        return (t - self._wait_from) * 1e-9

    def _record(self, frame, steer, focus) -> None:
        rec = getattr(self.director, "record", None)
        if rec is not None:
            rec(self, frame, steer, focus)

    def _add_director(self, steer: dict | None) -> None:
        if steer is not None and self.director is not None:
            steer["tour"] = self.director.status()

    # -- reporting ---------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        s = self.steer_status
        fl = self.focus
        out = {
            "mode": self.mode,
            "target_policy": self.target_policy,
            "steer": dict(s),
            "moves_made": s.get("moved", 0),
            "moves_refused": s.get("refused", 0) + s.get("failed", 0),
            "moves_dry_run": s.get("dry-run", 0),
            "targets_centred": len(self.centred_targets),
            "last_error_um": (self.last_steer or {}).get("error_norm_um"),
            "frames_ignored_moving": self.frames_moving,
            "frames_ignored_before_move": self.frames_before_move,
            "focus": {"status": dict(self.focus_status), "moves_made": self.focus_moves,
                      "state": (self.last_focus or {}).get("state"),
                      "locked": fl.locked,
                      "z_center_um": (self.last_focus or {}).get("z_center"),
                      "depth_of_field_um": round(fl.dof_um, 3),
                      "depth_of_field_from": fl.dof_source,
                      "dither_um": round(fl.dither_um, 3)},
        }
        if self.director is not None:
            out["tour"] = self.director.summary()
        return out


def truth_centring_error_um(frame, target_box) -> float | None:
    """Distance (µm) from the image centre to the ground-truth cell under *target_box*.

    Uses the simulated frame's ``truth`` boxes: the truth box whose centre is nearest the
    target box's centre stands for the real cell, so the number measures the whole loop
    (detection + steering), not the detector's own idea of where the cell is.
    """
    if frame is None or frame.truth is None or target_box is None or len(frame.truth) == 0:
        return None
    t = np.asarray(frame.truth, float).reshape(-1, 4)
    tc = np.stack([(t[:, 0] + t[:, 2]) / 2, (t[:, 1] + t[:, 3]) / 2], 1)
    b = np.asarray(target_box, float).reshape(4)
    bc = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    c = tc[int(np.argmin(((tc - bc) ** 2).sum(1)))]
    d_px = c - np.asarray(frame.center)
    d_um = frame.affine @ d_px
    v = float(np.hypot(*d_um))
    return v if math.isfinite(v) else None
