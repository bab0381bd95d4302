"""The demo's tour on the offline simulator: it finds focus first, then visits clearly
visible cells in turn, centring each on the real cell (ground truth), and follows a cell
that moves. Real detector, real control stage, simulated clock."""

from __future__ import annotations

import numpy as np
import pytest

from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope
from inscope.commands import DEMO_SIM
from inscope.config import ControlConfig
from inscope.control_stage import ControlStage
from inscope.detector import load_detector
from inscope.tour import Tour, TourConfig


@pytest.fixture(scope="module")
def detector():
    return load_detector()


def test_tour_focuses_then_visits_cells_and_follows_a_mover(detector):
    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in DEMO_SIM.items()}
    scope = SimulatedMicroscope(SimConfig(realtime=False, **opts))
    tour = Tour(TourConfig(cells=2, hold_s=0.3, follow_s=0.5))
    stage = ControlStage(scope, ControlConfig(mode="steer+focus", max_step_um=250.0,
                                              gain=1.0), director=tour)
    phases, chosen_areas, all_areas = [], [], []
    for _ in range(420):
        f = scope.snap()
        d = detector.detect(f)
        tracks = stage.step(f, d).tracks
        phases.append((tour.phase, stage.focus.locked))
        if phases[-1][0] == "centring" and phases[-2][0] != "centring":
            t = stage.tracker.get(tour.target)
            chosen_areas.append(t.area_px)
            all_areas.append(float(np.median([x.area_px for x in tracks])))
        if len(tour.visited) >= 2 and tour.followed:
            break
    # focus first: the tour leaves "focusing" only once the lock reports locked
    first = next(i for i, p in enumerate(phases) if p[0] != "focusing")
    assert first > 5 and phases[first][1], phases[:first + 1]
    assert stage.focus.history and any(a.status == "locked" for a in stage.focus.history)
    s = tour.summary()
    assert s["focus_first_locked_s"] is not None
    assert s["cells_visited"] >= 2
    # each visit ended centred on the real cell, and on a different cell
    for v in s["visited"]:
        assert v["truth_centring_error_um"] is not None and v["truth_centring_error_um"] < 2.0
    pos = np.array([v["stage_um"] for v in s["visited"]])
    assert min(np.hypot(*(pos[i] - pos[j])) for i in range(len(pos))
               for j in range(i)) > 20.0, "the tour moved on to other cells"
    # the chosen cells are the big ones, not specks
    assert all(a >= m for a, m in zip(chosen_areas, all_areas, strict=True))
    # after the first holds it follows the cell that moved
    assert s["followed"] and s["followed"][0]["moved_um_during_hold"] >= 2.0
    # the story over time: focus error after the lock stays within the depth of field
    assert s["focus_error_um_after_lock"]["p90"] < stage.focus.dof_um / 2
    # and the plane it holds (its checks' dithered frames aside) within a quarter of it
    assert s["focus_error_um_while_locked"]["p90"] < stage.focus.dof_um / 4
    stage.close()


def test_the_tour_does_not_choose_cells_outside_the_soft_limits(detector):
    """In a corner of the allowed area, three quarters of the field lie beyond the soft
    limit: the tour visits cells inside it and no centring move is refused (the tour of
    a 10-minute demo had 61 refused moves at the slide's edges)."""
    from inscope.acquisition.safety import MoveGuard, SoftLimits

    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in DEMO_SIM.items()}
    cfg = SimConfig(realtime=False, **opts)
    limits = SoftLimits(x=(0.0, 1000.0), y=(0.0, 1000.0), z=cfg.z_limits_um)
    scope = SimulatedMicroscope(cfg, guard=MoveGuard(limits, require_limits=False))
    tour = Tour(TourConfig(cells=50, hold_s=0.2))
    stage = ControlStage(scope, ControlConfig(mode="steer+focus", max_step_um=250.0,
                                              gain=1.0), director=tour)
    for _ in range(600):
        f = scope.snap()
        stage.step(f, detector.detect(f))
        if len(tour.visited) >= 4:
            break
    s = tour.summary()
    assert s["cells_visited"] >= 4
    assert all(min(v["stage_um"]) >= 0.0 for v in s["visited"])
    assert stage.summary()["moves_refused"] == 0
    stage.close()


def test_following_ends_when_the_mover_cannot_be_followed_inside_the_limits(detector):
    """A followed cell that walks out of the allowed area: its centring move is refused,
    and the tour goes back to choosing instead of retrying it on every frame for the
    rest of its follow time (a 3-minute demo had 241 refused moves, all while
    following)."""
    from inscope.acquisition.safety import SoftLimits

    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in DEMO_SIM.items()}
    scope = SimulatedMicroscope(SimConfig(realtime=False, **opts))
    tour = Tour(TourConfig(follow_s=60.0))
    stage = ControlStage(scope, ControlConfig(mode="steer", max_step_um=250.0),
                         director=tour)
    f = scope.snap()
    tracks = stage.step(f, detector.detect(f)).tracks
    far = max(tracks, key=lambda t: float(np.hypot(*(t.center_px - np.asarray(f.center)))))
    tour.phase, tour.target, tour._phase_t = "following", far.id, tour._now(f)
    stage.steerer.select(int(far.id))
    p = scope.position()  # the stage may stay where it is, the cell lies outside
    scope.guard.limits = SoftLimits(x=(p.x - 1.0, p.x + 1.0), y=(p.y - 1.0, p.y + 1.0),
                                    z=scope.guard.limits.z)
    for _ in range(10):
        f = scope.snap()
        stage.step(f, detector.detect(f))
    assert tour.phase != "following"
    assert stage.summary()["moves_refused"] <= 2
    stage.close()


def test_a_visited_cell_is_not_chosen_again(detector):
    """The tour skips cells within 12 µm of one it has visited (checked against every
    visit at once: one Python step per visit made the choice slower with every cell)."""
    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in DEMO_SIM.items()}
    scope = SimulatedMicroscope(SimConfig(realtime=False, **opts))
    tour = Tour()
    stage = ControlStage(scope, ControlConfig(mode="track"), director=tour)
    f = scope.snap()
    tracks = stage.step(f, detector.detect(f)).tracks
    for _ in range(2):  # tracks need a few hits to be chosen
        f = scope.snap()
        tracks = stage.step(f, detector.detect(f)).tracks
    first = tour._choose(f, tracks)
    assert first is not None
    tour._visit(first, 0.0, f)
    second = tour._choose(f, tracks)
    assert second is not None and second.id != first.id
    assert np.hypot(*(second.center_um - first.center_um)) >= 12.0
    stage.close()


def test_the_tour_travels_on_when_every_cell_in_view_was_visited(detector):
    """A 10-minute demo stopped touring after ~7 minutes: every cell in reach visited,
    the tour chose nothing, frame after frame. Now the stage travels most of a field on,
    away from the visited cells and inside the soft limits, and the tour goes on there."""
    from inscope.acquisition.safety import SoftLimits

    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in DEMO_SIM.items()}
    scope = SimulatedMicroscope(SimConfig(realtime=False, **opts))
    tour = Tour(TourConfig(travel_after_s=0.1))
    stage = ControlStage(scope, ControlConfig(mode="steer"), director=tour)
    tour.phase = "choosing"
    p0 = scope.position()
    # visited: every cell in view, and one far to the +x side, so "away" points to -x
    f = scope.snap()
    for t in stage.step(f, detector.detect(f)).tracks:
        tour._visit(t, 0.0, f)
    far = type("T", (), {"id": -1, "center_um": np.array([p0.x + 2000.0, p0.y]),
                         "box": np.zeros(4)})()
    for _ in range(200):
        tour._visit(far, 0.0, f)
    # the limits leave no room towards -x (a field on, with half a field to spare):
    # it turns, by 90 degrees, and never towards the visited side
    scope.guard.limits = SoftLimits(x=(p0.x - 300.0, p0.x + 2000.0),
                                    y=(p0.y - 2000.0, p0.y + 2000.0), z=scope.guard.limits.z)
    for _ in range(40):
        f = scope.snap()
        stage.step(f, detector.detect(f))
        if tour.travels:
            break
    assert tour.travels == 1
    moves = [m for m in scope.guard.history if m.axis == "xy" and m.made]
    assert moves
    dx, dy = np.subtract(moves[-1].target, moves[-1].start)
    field = 0.75 * min(f.pixels.shape) * scope.pixel_size_um
    assert np.hypot(dx, dy) == pytest.approx(field, rel=1e-6)
    assert abs(dx) < 0.05 * field and abs(dy) > 0.9 * field, "sideways, not back"
    assert scope.guard.limits.allows_xy(*moves[-1].target)
    assert tour.summary()["fields_travelled"] == 1
    stage.close()
