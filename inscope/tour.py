"""The demo's mission: find focus, then tour clearly visible cells, then follow a moving one.

A :class:`Tour` is a *director* for :class:`inscope.control_stage.ControlStage`: on every
usable frame (never one exposed during a move) it looks at the tracks and decides what
the steerer should centre, in turn:

``focusing``
    steering off until the focus lock reports ``locked`` (or ``focus_timeout_s``);
``choosing``
    pick a clearly visible cell: tracked for a few frames, confidently detected, at
    least as big as the median cell, the brightest such (above the background, times
    its size), whole (not at the edge), not crowded by a neighbour, not visited before,
    and ``min_hop_px``-``max_hop_px`` from the centre so the stage visibly travels;
    when the field holds no such cell for ``travel_after_s`` (every cell in reach
    visited), the stage travels most of a field on, away from the cells visited and
    inside the soft limits, and the tour chooses there;
``centring``
    until the steerer reports it ``centred`` on a few frames in a row;
``holding``
    for ``hold_s`` (while the focus lock holds), then back to ``choosing``;
``following``
    after ``cells`` visits: the track that moved most while the stage held still is
    followed for ``follow_s``; then the tour goes on.

It decides from detections only. When frames carry the simulator's ground truth it also
keeps a timeline (centring error of the real cell, focus error, stage position, phase)
so the run's summary tells the same story as the video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from inscope.enums import SteerStatus

PHASES = ("focusing", "choosing", "centring", "holding", "following")


@dataclass
class TourConfig:
    """Timing and choice rules of the tour (seconds of frame time, pixels)."""

    cells: int = 3  # cells visited before following a moving one
    hold_s: float = 0.4
    follow_s: float = 0.8
    focus_timeout_s: float = 30.0  # a featureless field never locks: tour anyway
    center_timeout_s: float = 3.0
    min_hop_px: float = 80.0  # the next cell is 80-200 px away: the stage visibly travels
    max_hop_px: float = 200.0
    edge_px: float = 24.0
    min_hits: int = 3
    min_score: float = 0.5
    centered_frames: int = 3
    mover_min_um: float = 2.0  # displacement during a hold that marks a moving cell
    timeline_every_s: float = 0.02
    #: Seconds with no cell to choose before the stage travels to another field: without
    #: it a 10-minute demo stopped touring after ~7 minutes, every cell in reach visited.
    travel_after_s: float = 0.5
    travel_fields: float = 0.75  # how far it travels, in camera fields


class Tour:
    """Drives the steerer through the demo's mission (see the module docstring)."""

    def __init__(self, config: TourConfig | None = None) -> None:
        self.cfg = config or TourConfig()
        self.phase = "focusing"
        self.target: int | None = None
        self.visited: list[dict[str, Any]] = []
        self._visited_xy = np.zeros((0, 2))  # the visited cells' stage positions (µm)
        self.followed: list[dict[str, Any]] = []
        self.timeline: list[dict[str, Any]] = []
        self._t0: int | None = None
        self._phase_t = 0.0
        self._centered = 0
        self._hold_start: dict[int, np.ndarray] = {}
        self._moved: dict[int, float] = {}
        self._last_tl = -math.inf
        self._idle_since: float | None = None  # choosing, with nothing to choose, since
        self.travels = 0  # fields travelled to when nothing was left to choose

    # -- helpers -----------------------------------------------------------------------
    def _now(self, frame) -> float:
        """Seconds since the first frame: the simulator's clock when the frame has one
        (so an offline run keeps the same pace), else the ready stamps."""
        sim = frame.metadata.get("sim_time_s") if frame.metadata else None
        t = int(sim * 1e9) if sim is not None else frame.stamps.get("ready", 0)
        if self._t0 is None:
            self._t0 = t
        return (t - self._t0) * 1e-9

    def _enter(self, phase: str, t: float) -> None:
        self.phase = phase
        self._phase_t = t
        self._centered = 0

    def _visited_near(self, xy: np.ndarray, r_um: float = 12.0) -> bool:
        # one array operation over every visited cell: a Python loop over them took 0.4
        # ms per candidate cell after the ~280 visits of a 10-minute demo, on every frame
        # spent choosing, and the detector's frames waited behind it for the GIL
        v = self._visited_xy
        return bool(len(v)) and bool(np.any(np.hypot(v[:, 0] - xy[0], v[:, 1] - xy[1])
                                            < r_um))

    def _visit(self, tr, t: float, frame) -> None:
        """Record the cell of track *tr*, held at time *t*, as visited."""
        xy = [round(float(v), 2) for v in tr.center_um]
        self.visited.append({"track_id": tr.id, "t_s": round(t, 3), "stage_um": xy,
                             "truth_centring_error_um": _truth_error(frame, tr.box)})
        self._visited_xy = np.vstack([self._visited_xy, xy])

    def _travel(self, stage, frame, limits) -> bool:
        """Move the stage ``travel_fields`` camera fields on, away from the cells visited
        (the first direction, turning by 45 degrees, whose target the soft *limits*
        allow with half a field to spare, and the guard lets through); whether the stage
        moved (not in a dry run)."""
        from inscope.acquisition.errors import DeviceError, MoveRefused

        p = frame.position
        if p is None:
            return False
        field_um = min(frame.shape) * frame.scale_um
        step = self.cfg.travel_fields * field_um
        here = np.array([p.x, p.y], float)
        away = here - self._visited_xy.mean(axis=0) if len(self._visited_xy) else None
        if away is None or float(np.hypot(*away)) < 1e-6:
            away = np.array([math.cos(2.4 * self.travels), math.sin(2.4 * self.travels)])
        a0 = math.atan2(away[1], away[0])
        for k in range(8):
            a = a0 + (k + 1) // 2 * (1 if k % 2 else -1) * math.pi / 4
            x, y = here + step * np.array([math.cos(a), math.sin(a)])
            if limits is not None and not limits.allows_xy(x, y, margin=0.5 * field_um):
                continue
            try:
                made = stage.scope.move_xy(float(x), float(y))
            except (MoveRefused, DeviceError):
                continue
            if not made:  # a dry run: nothing moves in any direction, nothing travelled
                return False
            self.travels += 1
            return True
        return False

    def _choose(self, frame, tracks, limits=None) -> Any:
        """The most clearly visible unvisited cell at least ``min_hop_px`` away, whose
        centring move stays inside the stage's soft *limits* (a cell at the edge of the
        allowed area would only get its move refused, again and again)."""
        cfg = self.cfg
        h, w = frame.pixels.shape
        c = np.asarray(frame.center)
        cand = []
        background = float(np.percentile(frame.pixels[::8, ::8], 20))
        # a clearly visible cell is at least as big as most: no specks, no slivers
        areas = [t.area_px for t in tracks if not t.missed]
        min_area = float(np.percentile(areas, 50)) if areas else 0.0
        boxes = np.array([t.box for t in tracks], float).reshape(-1, 4)
        cc = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
        for t in tracks:
            b = np.asarray(t.box, float)
            if t.missed or t.hits < cfg.min_hits or t.area_px < min_area \
                    or t.score < cfg.min_score:
                continue
            if b[0] < cfg.edge_px or b[1] < cfg.edge_px or b[2] > w - cfg.edge_px \
                    or b[3] > h - cfg.edge_px:
                continue
            d = float(np.hypot(*(t.center_px - c)))
            if not cfg.min_hop_px <= d <= cfg.max_hop_px \
                    or self._visited_near(np.asarray(t.center_um, float)):
                continue
            if not _within(limits, t):
                continue
            # crowding: another box centre within the box's own size
            size = max(b[2] - b[0], b[3] - b[1])
            near = np.hypot(*(cc - t.center_px).T)
            if int(np.sum(near < size)) > 1:
                continue
            x0, y0, x1, y1 = (int(v) for v in b)
            crop = frame.pixels[y0:y1, x0:x1]
            if crop.size < 16:
                continue
            # bright and big: the nucleus' upper intensities above the frame's background
            bright = float(np.percentile(crop, 90)) - background
            cand.append((bright * math.sqrt(max(t.area_px, 1.0)), t))
        if not cand:
            return None
        return max(cand, key=lambda x: x[0])[1]

    # -- director API ------------------------------------------------------------------
    def step(self, stage, frame, tracks) -> None:
        """Called by the control stage on each usable frame before steering."""
        cfg = self.cfg
        t = self._now(frame)
        steer = stage.steerer
        focus_locked = bool(getattr(stage.focus, "locked", True)) or not stage.mode.focuses
        by_id = {tr.id: tr for tr in tracks}
        limits = getattr(stage.scope, "limits", None)
        if self.phase == "focusing":
            steer.enabled = False
            if focus_locked or t - self._phase_t > cfg.focus_timeout_s:
                self._enter("choosing", t)
        if self.phase == "choosing":
            tr = self._choose(frame, tracks, limits)
            if tr is None:
                steer.enabled = False
                if self._idle_since is None:
                    self._idle_since = t
                elif t - self._idle_since >= cfg.travel_after_s:
                    self._travel(stage, frame, limits)
                    self._idle_since = None
            else:
                self._idle_since = None
                self.target = tr.id
                steer.select(int(tr.id))
                self._enter("centring", t)
        elif self.phase == "centring":
            last = steer.last
            if self.target not in by_id or t - self._phase_t > cfg.center_timeout_s:
                self._enter("choosing", t)
            elif last is not None and last.status == "centred" \
                    and last.target_id == self.target:
                self._centered += 1
                if self._centered >= cfg.centered_frames:
                    self._enter("holding", t)
                    self._hold_start = {k: np.asarray(v.center_um, float).copy()
                                        for k, v in by_id.items() if not v.missed}
            else:
                # frames *in a row*: a correcting move, a frame the target was not seen
                # in or one still settling starts the count over (it kept counting, so
                # three centred frames with moves between them passed for a settled cell)
                self._centered = 0
        elif self.phase == "holding":
            if t - self._phase_t >= cfg.hold_s and focus_locked:
                tr = by_id.get(self.target)
                for k, p0 in self._hold_start.items():
                    if k in by_id and k != self.target and not by_id[k].missed:
                        self._moved[k] = float(np.hypot(*(by_id[k].center_um - p0)))
                if tr is not None:
                    self._visit(tr, t, frame)
                if len(self.visited) % cfg.cells == 0:
                    mover = max(((d, k) for k, d in self._moved.items()
                                 if d >= cfg.mover_min_um and k in by_id
                                 and _within(limits, by_id[k])), default=None)
                    if mover is not None:
                        self.target = mover[1]
                        steer.select(int(mover[1]))
                        self.followed.append({"track_id": int(mover[1]), "t_s": round(t, 3),
                                              "moved_um_during_hold": round(mover[0], 2)})
                        self._enter("following", t)
                        return
                self._enter("choosing", t)
        elif self.phase == "following":
            # a mover that walks out of the allowed area cannot be followed there: the
            # refused move would be retried on every frame
            refused = steer.last is not None and steer.last.status == SteerStatus.REFUSED
            if self.target not in by_id or t - self._phase_t >= cfg.follow_s or refused:
                if self.followed:
                    tr = by_id.get(self.target)
                    self.followed[-1]["followed_s"] = round(t - self._phase_t, 3)
                    if tr is not None:
                        self.followed[-1]["truth_centring_error_um"] = _truth_error(
                            frame, tr.box)
                self._moved = {}
                self._enter("choosing", t)

    def record(self, stage, frame, steer: dict | None, focus: dict | None) -> None:
        """Add a timeline point (ground truth only: the simulator's frames)."""
        t = self._now(frame)
        if t - self._last_tl < self.cfg.timeline_every_s:
            return
        self._last_tl = t
        p = frame.position
        pt: dict[str, Any] = {"t_s": round(t, 3), "frame": frame.index, "phase": self.phase,
                              "moving": bool(frame.moving)}
        if p is not None:
            pt["stage_um"] = [round(p.x, 2), round(p.y, 2), round(p.z, 3)]
        if self.target is not None:
            pt["target"] = int(self.target)
            tr = stage.tracker.get(self.target)
            if tr is not None and not tr.missed:
                pt["centring_error_um"] = _truth_error(frame, tr.box)
        dz = frame.metadata.get("defocus_um") if frame.metadata else None
        if dz is not None:
            pt["focus_error_um"] = round(float(dz), 3)
        if focus:
            pt["focus"] = focus.get("state")
            if focus.get("made"):
                pt["focus_moved"] = True  # it commanded a move on this frame
        self.timeline.append(pt)
        if len(self.timeline) > 200_000:
            del self.timeline[: len(self.timeline) // 2]

    def status(self) -> dict[str, Any]:
        """Published with every steering state; ``line`` is the overlay's status text."""
        n = len(self.visited)
        if self.phase == "focusing":
            line = "finding focus"
        elif self.phase == "choosing" and self._idle_since is not None:
            line = "every cell here visited: travelling on"
        elif self.phase == "choosing":
            line = f"choosing cell {n + 1}"
        elif self.phase == "centring":
            line = f"centring cell {n + 1} (#{self.target})"
        elif self.phase == "holding":
            line = f"holding cell {n + 1} (#{self.target})"
        else:
            line = f"following moving cell #{self.target}"
        return {"phase": self.phase, "visited": n, "target": self.target, "line": line}

    def summary(self) -> dict[str, Any]:
        """Cells visited, the cell followed, and centring/focus error over time."""
        tl = self.timeline
        still = [p for p in tl if not p["moving"]]
        fe = [abs(p["focus_error_um"]) for p in still if "focus_error_um" in p]
        locked_at = next((p["t_s"] for p in tl if p.get("focus") == "locked"), None)
        fe_locked = [abs(p["focus_error_um"]) for p in still if "focus_error_um" in p
                     and locked_at is not None and p["t_s"] >= locked_at]
        # the plane the lock holds: frames it reports locked on (a check's deliberate
        # dither frames, +/- d or a widened d away, are excluded here, counted above;
        # so is the cycle's last frame, exposed on a dithered plane, on which it locks
        # and commands the move to the plane it holds)
        fe_held = [abs(p["focus_error_um"]) for p in still if "focus_error_um" in p
                   and p.get("focus") == "locked" and not p.get("focus_moved")]
        ce_hold = [p["centring_error_um"] for p in still if p["phase"] == "holding"
                   and p.get("centring_error_um") is not None]

        def pct(v):
            if not v:
                return None
            a = np.asarray(v, float)
            return {k: round(float(x), 3) for k, x in
                    zip(("p50", "p90", "max"), (*np.percentile(a, [50, 90]), a.max()),
                        strict=True)}

        step = max(1, len(tl) // 300)
        return {
            "phase": self.phase,
            "cells_visited": len(self.visited),
            "fields_travelled": self.travels,
            "visited": self.visited,
            "followed": self.followed,
            "focus_first_locked_s": locked_at,
            "focus_error_um_all": pct(fe),
            "focus_error_um_after_lock": pct(fe_locked),
            "focus_error_um_while_locked": pct(fe_held),
            "centring_error_um_while_holding": pct(ce_hold),
            "timeline": tl[::step],
        }


def _within(limits, track) -> bool:
    """Whether centring *track* keeps the stage inside the soft *limits* (no limits:
    anywhere), with the cell's radius to spare."""
    return limits is None or limits.allows_xy(*track.center_um, margin=track.radius_um)


def _truth_error(frame, box) -> float | None:
    from inscope.control_stage import truth_centering_error_um

    v = truth_centering_error_um(frame, np.asarray(box))
    return None if v is None else round(v, 3)
