"""Centre a chosen object: a small, synchronous controller in stage micrometres.

Each call to :meth:`Steerer.step` looks at one frame: it picks (or keeps) a target track,
measures where the target is, computes the error ``target stage position - stage position
at exposure`` and, outside a deadband, moves the stage by ``gain * error`` (clipped to a
maximum step) through the microscope's guard. With a calibrated affine one move centres
the target; frames exposed before that move settled are ignored (they still show the old
view and would make the controller move twice — the classic cause of overshoot and
oscillation).

The target's position is not its box centre: once chosen, the target's neighbourhood is
registered from frame to frame (:class:`~inscope.control.refine.TargetRefiner`), which is
~10x steadier than a box on real images, and the deadband is set from the measured
spread of those positions rather than a constant. ``centred`` is reported only on
evidence: the target was seen (detected or registered) in a frame exposed after the last
move settled. A frame where it is not seen gives ``not-seen`` (never ``centred``), so a
caller can re-acquire it before giving the cell up.

A move refused by the guard (soft limits, max step) or suppressed by dry-run is reported
in the returned :class:`SteerAction`; it never raises out of the control loop.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from inscope.acquisition.errors import DeviceError, MoveRefused
from inscope.acquisition.frame import STAMP_READY, Frame
from inscope.acquisition.microscope import Microscope
from inscope.control.refine import TargetRefiner
from inscope.control.targets import TargetPolicy, TrackId, policy_from_spec
from inscope.control.tracking import Track, Tracker
from inscope.detector.base import Detections
from inscope.enums import SteerStatus

__all__ = ["SteerAction", "SteerSettings", "Steerer"]

# Status values of a SteerAction (the enum is the one definition).
MOVED = SteerStatus.MOVED
DRY_RUN = SteerStatus.DRY_RUN
REFUSED = SteerStatus.REFUSED
FAILED = SteerStatus.FAILED
CENTERED = SteerStatus.CENTERED
SETTLING = SteerStatus.SETTLING
NO_TARGET = SteerStatus.NO_TARGET
NO_POSITION = SteerStatus.NO_POSITION
DISABLED = SteerStatus.DISABLED
NOT_SEEN = SteerStatus.NOT_SEEN

#: Deadband (px of the frame) until the target's jitter has been measured, and the
#: bounds of the measured one: 3x the measured RMS jitter, within [0.25, 2] px.
PRIOR_DEADBAND_PX = 1.0
DEADBAND_JITTER_K = 3.0
DEADBAND_MIN_PX = 0.25
DEADBAND_MAX_PX = 2.0


@dataclass(frozen=True)
class SteerSettings:
    """The steering settings a user sets, with their one default: :class:`Steerer`'s
    keyword defaults and :class:`inscope.config.ControlConfig` (``inscope run``) both
    read them from here, so Python and the CLI steer alike."""

    #: Fraction of the error corrected per move (1.0: one move with a calibrated affine).
    gain: float = 1.0
    #: No move within this error (µm); None: from the target's measured jitter.
    deadband_um: float | None = None
    #: Largest single move (µm); longer corrections are split over frames. None: only
    #: the guard's own max step.
    max_step_um: float | None = 50.0
    #: Extra time after a move during which frames are ignored (stage ringing).
    settle_s: float = 0.0


_DEFAULTS = SteerSettings()


@dataclass
class SteerAction:
    """What the controller decided for one frame.

    ``status`` is one of ``moved``, ``dry-run`` (move computed, not made), ``refused``
    (guard said no; ``reason`` says why), ``failed`` (device error), ``centred`` (within
    the deadband), ``settling`` (frame exposed before the last move settled, ignored),
    ``no-target``, ``no-position`` (frame without a stage position), ``disabled``.
    """

    frame_index: int
    status: SteerStatus
    target_id: int | None = None
    target_um: tuple[float, float] | None = None
    error_um: tuple[float, float] | None = None
    error_norm_um: float = math.nan
    move_um: tuple[float, float] | None = None
    made: bool = False
    reason: str = ""
    seen: str = ""
    deadband_um: float = math.nan
    t_ns: int = field(default_factory=time.monotonic_ns)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("error_norm_um", "deadband_um"):
            if math.isnan(d[k]):
                d[k] = None
        return d


class Steerer:
    """Keeps one target centred in the field of view.

    Parameters
    ----------
    scope
        The microscope whose stage is moved (through its guard).
    policy
        How a target is chosen (:mod:`inscope.control.targets`) or a spec string such as
        ``"nearest"``, ``"largest"``, ``"class:mitotic"``, ``"id:7"``.
    tracker
        Tracker used when :meth:`step` is called without tracks. Default: a new
        :class:`~inscope.control.tracking.Tracker`.
    gain
        Fraction of the error corrected per move. 1.0 with a calibrated affine converges
        in one move; lower it (0.5-0.8) when the calibration is uncertain.
    deadband_um
        No move while the error is below this. None (default): from the measured
        jitter of the target's position, 3x its RMS within [0.25, 2] px of the frame
        (1 px until three measurements exist), so it adapts to the objective, the
        camera noise and the detector instead of being a guess.
    refine
        Measure the target by registering its neighbourhood between frames (see
        :mod:`inscope.control.refine`) instead of trusting its box centre.
    max_step_um
        Largest single move (default 50 µm); longer corrections are split over frames.
        None: no clip beyond the guard's own max step.
    settle_s
        Extra time after a move during which frames are ignored (stage ringing).
    position_tol_um
        A frame whose reported position is further than this from the last commanded
        position is considered taken before the move settled. None: 2 pixels.
    max_settle_frames
        Give up waiting for a settled frame after this many (a stage that never reports
        exactly the commanded position, e.g. quantised encoders).
    sticky
        Keep the current target while its track lives, instead of re-choosing each frame.
    lead_frames
        Aim where a moving target will be this many frames later (track velocity), to
        make up for the loop's latency; 0 aims at where it was seen.
    """

    def __init__(self, scope: Microscope, policy: str | TargetPolicy = "nearest",
                 tracker: Tracker | None = None, gain: float = _DEFAULTS.gain,
                 deadband_um: float | None = _DEFAULTS.deadband_um,
                 max_step_um: float | None = _DEFAULTS.max_step_um,
                 settle_s: float = _DEFAULTS.settle_s, position_tol_um: float | None = None,
                 max_settle_frames: int = 10, sticky: bool = True,
                 lead_frames: float = 0.0, history: int = 1000,
                 refine: bool = True) -> None:
        if not 0 < gain <= 1.5:
            raise ValueError(f"gain must be in (0, 1.5]; got {gain}. Use ~1.0 with a "
                             "calibrated affine, 0.5-0.8 when unsure.")
        if deadband_um is not None and deadband_um < 0:
            raise ValueError(f"deadband_um must be >= 0 (or None: 2 pixels); got "
                             f"{deadband_um}.")
        self.scope = scope
        self.policy = policy_from_spec(policy)
        self.tracker = tracker if tracker is not None else Tracker()
        self.gain = float(gain)
        self.deadband_um = None if deadband_um is None else float(deadband_um)
        self.max_step_um = max_step_um
        self.settle_s = float(settle_s)
        self.position_tol_um = position_tol_um
        self.max_settle_frames = int(max_settle_frames)
        self.sticky = sticky
        self.lead_frames = float(lead_frames)
        self.enabled = True
        self.target_id: int | None = None
        self.history: deque[SteerAction] = deque(maxlen=history)
        self.refiner: TargetRefiner | None = TargetRefiner() if refine else None
        self._refined_id: int | None = None
        self._last_move_ns: int | None = None
        self._last_cmd: tuple[float, float] | None = None
        self._settle_frames = 0

    # -- commands ----------------------------------------------------------------------
    def select(self, target: str | int | TargetPolicy | None) -> None:
        """Change what is steered to: a track id, a policy, a spec string; None stops."""
        if target is None:
            self.enabled = False
            self.target_id = None
            return
        self.enabled = True
        self._drop_refined()
        if isinstance(target, int | np.integer):
            self.policy = TrackId(int(target))
        else:
            self.policy = policy_from_spec(target)
        self.target_id = None

    def reset(self) -> None:
        """Forget the target and any pending move (e.g. after the user moved the stage)."""
        self.target_id = None
        self._last_move_ns = None
        self._last_cmd = None
        self._settle_frames = 0
        self._drop_refined()

    def _drop_refined(self) -> None:
        self._refined_id = None
        if self.refiner is not None:
            self.refiner.reset()

    def deadband_for(self, frame: Frame) -> float:
        """The deadband (µm) for *frame*: the configured one, or from measured jitter."""
        if self.deadband_um is not None:
            return self.deadband_um
        px = frame.scale_um
        j = self.refiner.jitter_px(frame) if self.refiner is not None else None
        if j is None:
            return (PRIOR_DEADBAND_PX if self.refiner is not None else 2.0) * px
        return float(np.clip(DEADBAND_JITTER_K * j, DEADBAND_MIN_PX, DEADBAND_MAX_PX)) * px

    @property
    def last(self) -> SteerAction | None:
        return self.history[-1] if self.history else None

    # -- the loop ----------------------------------------------------------------------
    def step(self, frame: Frame, detections: Detections,
             tracks: list[Track] | None = None) -> SteerAction:
        """Decide (and make) at most one move for *frame*. Never raises for a refused move."""
        if tracks is None:
            tracks = self.tracker.update(frame, detections)
        act = self._decide(frame, tracks)
        self.history.append(act)
        return act

    def _choose(self, tracks: list[Track], frame: Frame) -> Track | None:
        if self.sticky and self.target_id is not None:
            for kept in tracks:
                if kept.id == self.target_id:
                    return kept
        t = self.policy.choose(tracks, frame)
        self.target_id = None if t is None else t.id
        return t

    def _stale(self, frame: Frame) -> bool:
        if self._last_move_ns is None:
            return False
        ready = frame.stamps.get(STAMP_READY, 0)
        stale = ready < self._last_move_ns + int(self.settle_s * 1e9)
        if not stale and self._last_cmd is not None and frame.position is not None:
            tol = self.position_tol_um
            if tol is None:
                tol = 2.0 * frame.scale_um
            d = math.hypot(frame.position.x - self._last_cmd[0],
                           frame.position.y - self._last_cmd[1])
            stale = d > tol
        if stale:
            self._settle_frames += 1
            if self._settle_frames > self.max_settle_frames:
                stale = False  # the stage never reports the exact target: accept
        if not stale:
            self._last_move_ns = None
            self._last_cmd = None
            self._settle_frames = 0
        return stale

    def _measure(self, frame: Frame, t: Track | None, settled: bool,
                 tracks: list[Track] | None = None) -> tuple[np.ndarray | None, str]:
        """Target position (stage µm) in *frame* and how it was measured (*tracks*: all
        of the frame's, whose boxes tell the refiner where touching neighbours are)."""
        ref = self.refiner
        seen_box = t is not None and t.missed == 0

        def others() -> np.ndarray | None:  # built only when a centroid is measured
            if not tracks:
                return None
            return np.array([o.box for o in tracks if o.missed == 0
                             and (t is None or o.id != t.id)], float).reshape(-1, 4)

        if ref is not None and t is not None and self._refined_id != t.id:
            # (re)acquire the template on a settled frame where the target is detected
            if seen_box and settled and ref.acquire(frame, t.box, others()) is not None:
                self._refined_id = t.id
                return ref.fixes[-1].xy_um.copy(), "registered"
        if ref is not None and ref.active and self._refined_id is not None:
            pred = None if t is None else np.asarray(t.center_um, float)
            box = t.box if t is not None and seen_box and settled else None
            fix = ref.locate(frame, pred, box,
                             others() if box is not None and ref.measuring else None)
            if fix is not None:
                return fix.xy_um.copy(), "registered"
        if seen_box:
            assert t is not None
            return frame.pixel_to_stage(t.center_px)[0], "detected"
        if t is not None:
            return np.asarray(t.center_um, float), "predicted"
        return None, ""

    def _decide(self, frame: Frame, tracks: list[Track]) -> SteerAction:
        idx = frame.index
        if not self.enabled:
            return SteerAction(idx, DISABLED)
        if frame.position is None:
            return SteerAction(idx, NO_POSITION, reason="frame has no stage position")
        if self._stale(frame) or getattr(frame, "moving", False):
            return SteerAction(idx, SETTLING, target_id=self.target_id,
                               reason="frame exposed before the last move settled")
        prev = self.target_id
        t = self._choose(tracks, frame)
        if t is None and prev is not None and prev == self._refined_id:
            # the track is gone, but the target may still be registered where it was
            self.target_id = prev
            target, seen = self._measure(frame, None, True)
            tid = prev
        elif t is None:
            return SteerAction(idx, NO_TARGET, reason=f"no target for policy "
                               f"{self.policy.name!r}")
        else:
            target, seen = self._measure(frame, t, True, tracks)
            tid = t.id
        if target is None:
            return SteerAction(idx, NOT_SEEN, target_id=tid,
                               reason="target neither detected nor registered here")
        if self.lead_frames and t is not None:
            target = target + self.lead_frames * np.asarray(t.velocity_um, float)
        pos = np.array([frame.position.x, frame.position.y])
        err = target - pos
        en = float(np.hypot(*err))
        deadband = self.deadband_for(frame)
        base: dict[str, Any] = dict(target_id=tid, target_um=(float(target[0]), float(target[1])),
                    error_um=(float(err[0]), float(err[1])), error_norm_um=en, seen=seen,
                    deadband_um=deadband)
        if en <= deadband:
            if seen in ("registered", "detected"):
                return SteerAction(idx, CENTERED, **base)
            return SteerAction(idx, NOT_SEEN, reason="within the deadband of the "
                               "prediction, but the target was not seen in this frame",
                               **base)
        if seen == "predicted" and tid == self._refined_id:
            # a registered target's box-track prediction differs from its refined
            # position by the centroid correction: no move on that guess
            return SteerAction(idx, NOT_SEEN, reason="the registered target was not "
                               "seen in this frame; no move on its track's prediction",
                               **base)
        move = self.gain * err
        mn = float(np.hypot(*move))
        if self.max_step_um is not None and mn > self.max_step_um:
            move = move * (self.max_step_um / mn)
        # An absolute target (the target is fixed on the slide), so a frame that lags a
        # little behind the stage does not make us move twice.
        tx, ty = float(pos[0] + move[0]), float(pos[1] + move[1])
        base["move_um"] = (float(move[0]), float(move[1]))
        try:
            made = self.scope.move_xy(tx, ty)
        except MoveRefused as e:
            return SteerAction(idx, REFUSED, reason=str(e), **base)
        except DeviceError as e:
            return SteerAction(idx, FAILED, reason=str(e), **base)
        if not made:
            return SteerAction(idx, DRY_RUN, reason="dry-run: move computed, not made",
                               **base)
        self._last_move_ns = time.monotonic_ns()
        self._last_cmd = (tx, ty)
        self._settle_frames = 0
        return SteerAction(idx, MOVED, made=True, **base)

