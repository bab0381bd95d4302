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

import copy
import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from inscope.config import ControlConfig
from inscope.enums import FocusStatus, Mode, SteerStatus, parse_target

if TYPE_CHECKING:
    from inscope.acquisition.frame import Frame
    from inscope.acquisition.microscope import Microscope
    from inscope.acquisition.safety import MoveRecord
    from inscope.control.tracking import Track
    from inscope.detector.base import Detections


@dataclass(frozen=True)
class ControlStep:
    """What one control step produced, as published with every detections message.

    Attributes
    ----------
    tracks
        The tracks after this frame (:class:`inscope.control.tracking.Track`), as they
        were then: copies, which the next frame's tracking leaves alone.
    target_id
        The steered track's id (None: no target).
    steer, focus
        JSON-able steering and focus-lock actions (``control`` and ``focus`` of the
        detections message); None when the mode does not steer / focus.
    """

    tracks: list[Any] = field(default_factory=list)
    target_id: int | None = None
    steer: dict[str, Any] | None = None
    focus: dict[str, Any] | None = None


#: No control state (mode ``off``, or before the first step).
NO_STEP = ControlStep()


class Director(Protocol):
    """A mission run beside steering (e.g. the demo's :class:`inscope.tour.Tour`)."""

    def step(self, stage: ControlStage, frame: Frame, tracks: list[Track]) -> None:
        """Before steering, on every usable frame; may change the target
        (``stage.steerer.select``)."""

    def status(self) -> dict[str, Any]:
        """Goes into every published steering action (``tour``)."""
        ...

    def summary(self) -> dict[str, Any]:
        """Goes into the run summary (``control.tour``)."""
        ...


class CommandedMoves:
    """The microscope as the live loop's control sees it: every move is commanded and
    returns at once (``wait=False``); everything else is the microscope's own."""

    def __init__(self, scope: Microscope) -> None:
        self._scope = scope

    def move_xy(self, x: float, y: float, *, relative: bool = False,
                wait: bool = False) -> bool:
        return self._scope.move_xy(x, y, relative=relative, wait=False)

    def move_z(self, z: float, *, relative: bool = False, wait: bool = False) -> bool:
        return self._scope.move_z(z, relative=relative, wait=False)

    def __getattr__(self, name: str) -> Any:
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

    def __init__(self, scope: Microscope, config: ControlConfig | None = None,
                 director: Director | None = None) -> None:
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
        self.steerer.select(parse_target(config.target, config.target_class))
        self.focus = FocusLock(self.moves, dither_um=config.focus_dither_um,
                               max_step_um=config.focus_step_um, dof_um=config.focus_dof_um,
                               na=config.objective_na, wavelength_um=config.wavelength_um,
                               immersion_index=config.immersion_index,
                               check_every_s=config.focus_check_s)
        self.director = director
        self._lock = threading.Lock()
        self.mode = Mode.OFF
        self.set_mode(config.mode)
        self.steer_status: Counter[str] = Counter()
        self.focus_status: Counter[str] = Counter()
        self.centered_targets: set[int] = set()
        self.focus_moves = 0
        self.frames_moving = 0
        self.frames_before_move = 0
        self.last_steer: dict | None = None
        self.last_focus: dict | None = None
        self.last_frame: Frame | None = None  # the newest frame control used, and its tracks
        self.last_tracks: list = []
        self._last_move_ns = 0
        self._wait_from: int | None = None
        self._guard = getattr(scope, "guard", None)
        if self._guard is not None:
            self._guard.moved.connect(self._on_move)

    def _on_move(self, rec: MoveRecord) -> None:
        if rec.made:
            self._last_move_ns = max(self._last_move_ns, rec.t_ns)

    def close(self) -> None:
        """Stop listening to the guard (the stage is done with)."""
        g = self._guard
        if g is not None:
            g.moved.disconnect(self._on_move)

    # -- commands ----------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        new = Mode.parse(mode)
        with self._lock:
            if self.mode.steers and not new.steers:
                self.steerer.reset()
            if self.mode.focuses and not new.focuses:
                self.focus.reset()
            self.mode = new

    def set_target(self, target: str | int, target_class: str | None = None) -> str | int:
        """Steer to *target* (any form :func:`inscope.enums.parse_target` reads); returns
        its canonical spec."""
        spec = parse_target(target, target_class)
        with self._lock:
            self.steerer.select(spec)  # raises ValueError for an unknown policy
        return spec

    @property
    def target_policy(self) -> str:
        return getattr(self.steerer.policy, "name", str(self.steerer.policy))

    # -- the loop ----------------------------------------------------------------------
    def usable(self, frame: Frame) -> SteerStatus | None:
        """Why *frame* must not drive a move or a focus measure (None: it may)."""
        if getattr(frame, "moving", False):
            return SteerStatus.MOVING
        exposed = frame.metadata.get("exposure_end_ns") if frame.metadata else None
        if exposed is None:
            exposed = frame.stamps.get("ready", 0)
        if exposed < self._last_move_ns:
            return SteerStatus.SETTLING  # exposed before the newest move was commanded
        return None

    def step(self, frame: Frame, detections: Detections) -> ControlStep:
        """One frame: its tracks, target and steering / focus actions."""
        with self._lock:
            mode = self.mode
            if mode is Mode.OFF:
                return NO_STEP
            steer = focus = None
            target_id = self.steerer.target_id
            why = self.usable(frame)
            if why is not None:
                _, tracks = self._track(frame, detections)
                if why is SteerStatus.MOVING:
                    self.frames_moving += 1
                else:
                    self.frames_before_move += 1
                reason = ("exposed during a move" if why is SteerStatus.MOVING
                          else "exposed before the last move was commanded")
                if mode.steers:
                    steer = {"frame_index": frame.index, "status": why,
                             "target_id": target_id, "reason": reason, "made": False}
                    self.steer_status[why] += 1
                if mode.focuses:
                    focus = {"frame_index": frame.index, "status": why, "state": why,
                             "z_center": self.focus.z_center, "locked": self.focus.locked,
                             "reason": reason, "made": False}
                    self.focus_status[why] += 1
                self._add_director(steer)
                self._record(frame, steer, focus)
                return ControlStep(tracks, target_id, steer, focus)
            waited = self._focus_wait(frame, mode.steers and mode.focuses
                                      and self.focus.cycling)
            if mode.focuses:
                # Focus first: it needs no tracks, so its move leaves before the tracking
                # of every box (~1-6 ms for ~90 boxes on 2 busy cores) and the steering.
                # The steerer settles on its own moves only, so a focus move here does not
                # make this frame stale for it (nor did a steer move for the focus lock).
                focus = self._focus_step(frame, detections)
            live, tracks = self._track(frame, detections)
            self.last_frame, self.last_tracks = frame, tracks
            if waited is not None and waited < self.FOCUS_WAIT_S:
                # a dither cycle compares sharpness across z in one scene: the stage
                # waits for it (a few frames) instead of voiding it
                steer = {"frame_index": frame.index, "status": SteerStatus.WAITING_FOCUS,
                         "target_id": target_id, "made": False,
                         "reason": "the focus lock is measuring"}
                self.steer_status[SteerStatus.WAITING_FOCUS] += 1
                self._add_director(steer)
            elif mode.steers:
                if self.director is not None:
                    self.director.step(self, frame, live)
                act = self.steerer.step(frame, detections, live)
                steer = act.to_dict()
                target_id = act.target_id
                self.steer_status[act.status] += 1
                if act.status == SteerStatus.CENTERED and act.target_id is not None:
                    self.centered_targets.add(act.target_id)
                self._add_director(steer)
                self.last_steer = steer
            self._record(frame, steer, focus)
            return ControlStep(tracks, target_id, steer, focus)

    def _track(self, frame: Frame, detections: Detections) -> tuple[list[Track], list[Track]]:
        """The tracker's live tracks after *frame*, and a snapshot of them: publishers,
        recorders and the eyepiece read a step's tracks on other threads while the next
        frame's update moves the live ones (it rebinds their fields, so a shallow copy is
        consistent)."""
        live = self.tracker.update(frame, detections)
        return live, [copy.copy(t) for t in live]

    def _focus_step(self, frame: Frame, detections: Detections) -> dict[str, Any]:
        """One focus-lock step on a usable frame, as the step's ``focus`` record."""
        fa = self.focus.step(frame, detections)
        focus = fa.to_dict()
        focus["state"] = (self.focus.state if FocusStatus.is_state(fa.status)
                          else fa.status)
        focus["locked"] = self.focus.locked
        self.focus_status[fa.status] += 1
        self.focus_moves += int(bool(fa.made))
        self.last_focus = focus
        return focus

    #: Longest the stage waits for a focus cycle (s of frame time) before it steers anyway
    #: (a target moving away matters more than a clean focus measure).
    FOCUS_WAIT_S = 0.25

    def _focus_wait(self, frame: Frame, cycling: bool) -> float | None:
        """Seconds the stage has waited for the current focus cycle (None: no cycle)."""
        if not cycling:
            self._wait_from = None
            return None
        t = frame.stamps.get("ready", 0)
        if self._wait_from is None:
            self._wait_from = t
        return (t - self._wait_from) * 1e-9

    def _record(self, frame: Frame, steer: dict[str, Any] | None,
                focus: dict[str, Any] | None) -> None:
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
            "moves_made": s.get(SteerStatus.MOVED, 0),
            "moves_refused": s.get(SteerStatus.REFUSED, 0) + s.get(SteerStatus.FAILED, 0),
            "moves_dry_run": s.get(SteerStatus.DRY_RUN, 0),
            "targets_centred": len(self.centered_targets),
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


def truth_centering_error_um(frame: Frame, target_box: np.ndarray) -> float | None:
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
    if not np.isfinite(b).all():  # no box: no cell under it (argmin would pick the first)
        return None
    bc = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    c = tc[int(np.argmin(((tc - bc) ** 2).sum(1)))]
    d_px = c - np.asarray(frame.center)
    d_um = frame.affine @ d_px
    v = float(np.hypot(*d_um))
    return v if math.isfinite(v) else None
