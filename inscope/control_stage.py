"""The pipeline's control stage: tracking, steering and focus lock behind one ``step``.

Wraps :mod:`inscope.control` (Tracker, Steerer, FocusLock) so the pipeline's control thread makes
one call per frame and gets back JSON-able summaries for the outputs. Mode and target
can change at any time from the command API; the lock keeps a change from landing in the
middle of a step.
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


class ControlStage:
    """Tracking + steering + focus lock for the live loop.

    Parameters
    ----------
    scope
        The microscope whose stage/focus is moved (through its guard).
    config
        :class:`inscope.config.ControlConfig`.
    """

    def __init__(self, scope, config: ControlConfig | None = None) -> None:
        from inscope.control.focus import FocusLock
        from inscope.control.steering import Steerer
        from inscope.control.tracking import Tracker

        self.config = config = config or ControlConfig()
        self.scope = scope
        self.tracker = Tracker()
        self.steerer = Steerer(scope, policy="nearest", tracker=self.tracker,
                               gain=config.gain, deadband_um=config.deadband_um,
                               max_step_um=config.max_step_um, settle_s=config.settle_s)
        self.steerer.select(target_spec(config.target, config.target_class))
        self.focus = FocusLock(scope, max_step_um=config.focus_step_um)
        self._lock = threading.Lock()
        self.mode = "off"
        self.set_mode(config.mode)
        self.steer_status: Counter[str] = Counter()
        self.focus_status: Counter[str] = Counter()
        self.centred_targets: set[int] = set()
        self.focus_moves = 0
        self.last_steer: dict | None = None
        self.last_focus: dict | None = None

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
    def step(self, frame, detections) -> tuple[list, int | None, dict | None, dict | None]:
        """One frame: ``(tracks, target_id, steer action dict, focus action dict)``."""
        with self._lock:
            mode = self.mode
            if mode == "off":
                return [], None, None, None
            tracks = self.tracker.update(frame, detections)
            steer = focus = None
            target_id = None
            if "steer" in mode:
                act = self.steerer.step(frame, detections, tracks)
                steer = act.to_dict()
                target_id = act.target_id
                self.steer_status[act.status] += 1
                if act.status == "centred" and act.target_id is not None:
                    self.centred_targets.add(act.target_id)
                self.last_steer = steer
            if "focus" in mode:
                fa = self.focus.step(frame, detections)
                focus = fa.to_dict()
                focus["state"] = fa.status
                self.focus_status[fa.status] += 1
                self.focus_moves += int(bool(fa.made))
                self.last_focus = focus
            return tracks, target_id, steer, focus

    # -- reporting ---------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        s = self.steer_status
        return {
            "mode": self.mode,
            "target_policy": self.target_policy,
            "steer": dict(s),
            "moves_made": s.get("moved", 0),
            "moves_refused": s.get("refused", 0) + s.get("failed", 0),
            "moves_dry_run": s.get("dry-run", 0),
            "targets_centred": len(self.centred_targets),
            "last_error_um": (self.last_steer or {}).get("error_norm_um"),
            "focus": {"status": dict(self.focus_status), "moves_made": self.focus_moves,
                      "state": (self.last_focus or {}).get("state"),
                      "z_center_um": (self.last_focus or {}).get("z_center")},
        }


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
