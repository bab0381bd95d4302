"""Tracker truth: every number checked against a value worked out by hand from the inputs.

The frames are 200 x 100 px (optical centre at pixel (100, 50)) with an isotropic affine of
``px`` µm per pixel, so a pixel (u, v) in a frame exposed at stage (sx, sy) maps to the stage
position ``(sx + px * (u - 100), sy + px * (v - 50))``. Boxes are given in pixels, so every
centre, size, radius, gate, velocity and predicted box below is exact.
Mutation testing: ``python -m benchmarks.mutation --module tracking``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from inscope.acquisition.frame import Frame, StagePosition
from inscope.control.tracking import Track, Tracker
from inscope.detector.base import Detections

NAMES = ("cell", "nucleus")


def _frame(index: int, pos: tuple[float, float] | None = (0.0, 0.0), px: float = 0.5) -> Frame:
    """A blank 200 x 100 px frame exposed at stage *pos* (None: no stage position)."""
    position = None if pos is None else StagePosition(float(pos[0]), float(pos[1]), 0.0)
    return Frame(np.zeros((100, 200), np.uint16), index, position=position, pixel_size_um=px)


def _dets(boxes: Sequence[Sequence[float]], scores: Sequence[float] | None = None,
          class_ids: Sequence[int] | None = None) -> Detections:
    """Detections of *boxes* (x0, y0, x1, y1 px) with classes named from :data:`NAMES`."""
    n = len(boxes)
    return Detections(np.array(boxes, float).reshape(-1, 4),
                      np.full(n, 0.75) if scores is None else np.array(scores),
                      np.zeros(n, int) if class_ids is None else np.array(class_ids), NAMES)


def _square(cx: float, cy: float, side: float = 2.0) -> list[float]:
    """A square box of *side* px centred on pixel (cx, cy)."""
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


# -- a new track ---------------------------------------------------------------------------
def test_a_new_track_carries_the_detection_in_stage_um():
    """A detection nobody claims becomes track 1 with its box, its centre and size in stage µm
    (through the frame's position and affine), its score and class: the steerer aims at
    ``center_um`` and gates with ``size_um``, so both must be the detection's, exactly."""
    tracker = Tracker()
    f = _frame(7, pos=(10.0, 20.0))
    # 16 x 8 px box centred on pixel (104, 44): 4 px right, 6 px up of the optical centre
    (t,) = tracker.update(f, _dets([[96, 40, 112, 48]], scores=[0.75], class_ids=[1]))
    assert t.id == 1
    assert t.box.tolist() == [96.0, 40.0, 112.0, 48.0]
    assert t.center_um.tolist() == [12.0, 17.0]          # (10 + 0.5 * 4, 20 - 0.5 * 6)
    assert t.size_um.tolist() == [8.0, 4.0]              # 16 px and 8 px at 0.5 µm/px
    assert t.radius_um == 3.0                            # (8 + 4) / 4
    assert t.center_px.tolist() == [104.0, 44.0]
    assert t.area_px == 128.0
    assert (t.score, t.class_id, t.class_name) == (0.75, 1, "nucleus")
    assert (t.age, t.hits, t.missed, t.frame_index) == (1, 1, 0, 7)
    assert t.velocity_um.tolist() == [0.0, 0.0]
    assert t.last_seen_um.tolist() == [12.0, 17.0]


def test_to_dict_has_every_published_field():
    """``to_dict`` is what the service publishes for each track (JSON): every key and value
    must be there with the track's own numbers as plain Python floats and ints."""
    tracker = Tracker()
    f = _frame(3, pos=(10.0, 20.0))
    (t,) = tracker.update(f, _dets([[96, 40, 112, 48]], scores=[0.75], class_ids=[1]))
    d = t.to_dict()
    assert d == {"id": 1, "box": [96.0, 40.0, 112.0, 48.0], "center_um": [12.0, 17.0],
                 "score": 0.75, "class_id": 1, "class_name": "nucleus", "age": 1,
                 "hits": 1, "missed": 0}
    assert all(type(v) is float for v in d["box"] + d["center_um"])


def test_area_of_an_inverted_box_is_zero():
    """A degenerate (inverted) box has no area rather than a negative or positive product of
    two negative sides."""
    t = Track(1, np.array([10.0, 10.0, 4.0, 2.0]), np.zeros(2), np.zeros(2))
    assert t.area_px == 0.0
    t = Track(1, np.array([0.0, 0.0, 6.0, -2.0]), np.zeros(2), np.zeros(2))
    assert t.area_px == 0.0


def test_a_track_built_from_integer_centres_remembers_a_float_copy():
    """``last_seen_um`` is the start of the next velocity estimate: it must be a float copy of
    the centre, not an integer array and not the same object the caller may change."""
    centre = np.array([3, 4])
    t = Track(5, np.array([0.0, 0.0, 2.0, 2.0]), centre, np.array([1.0, 1.0]))
    assert t.last_seen_um is not None
    assert t.last_seen_um.dtype == np.float64
    assert t.last_seen_um.tolist() == [3.0, 4.0]
    centre[0] = 99
    assert t.last_seen_um.tolist() == [3.0, 4.0]


def test_ids_start_at_one_and_count_up_one_per_new_track():
    """Ids are handed out 1, 2, 3, ... in detection order, one per new track, so the UI and
    the steerer's ``select(id)`` refer to the same cells across the session."""
    tracker = Tracker()
    f = _frame(0)
    tracks = tracker.update(f, _dets([_square(60, 50), _square(140, 50)]))
    assert [t.id for t in tracks] == [1, 2]
    assert [t.center_um.tolist() for t in tracks] == [[-20.0, 0.0], [20.0, 0.0]]
    f = _frame(1)
    # the first detection claims track 1; the next one, after it, is a new cell
    tracks = tracker.update(f, _dets([_square(60, 50), _square(100, 90), _square(100, 10)]))
    assert sorted((t.id, t.missed) for t in tracks) == [(1, 0), (2, 1), (3, 0), (4, 0)]
    assert tracker.get(3).center_um.tolist() == [0.0, 20.0]
    assert tracker.get(4).center_um.tolist() == [0.0, -20.0]
    assert tracker.get(5) is None


# -- a matched track -----------------------------------------------------------------------
def _two_frames(tracker: Tracker) -> Track:
    """Track 1 seen in frames 0 and 1 at stage (4, -1) then (5, -1) (16 x 8 px boxes, 0.5 µm
    per px, stage at 0): velocity (1, 0) µm/frame, radius 3 µm."""
    tracker.update(_frame(0), _dets([[100, 44, 116, 52]], scores=[0.75], class_ids=[1]))
    (t,) = tracker.update(_frame(1), _dets([[102, 44, 118, 52]], scores=[0.5], class_ids=[0]))
    return t


def test_a_match_updates_the_track_with_the_new_detection():
    """When a detection is matched, the track keeps its id but takes the detection's box,
    centre, score, class and frame index, counts one more hit and one more update."""
    tracker = Tracker()
    t = _two_frames(tracker)
    assert t.id == 1
    assert t.box.tolist() == [102.0, 44.0, 118.0, 52.0]
    assert t.center_um.tolist() == [5.0, -1.0]
    assert t.last_seen_um.tolist() == [5.0, -1.0]
    assert t.size_um.tolist() == [8.0, 4.0]
    assert (t.score, t.class_id, t.class_name) == (0.5, 0, "cell")
    assert (t.age, t.hits, t.missed, t.frame_index) == (2, 2, 0, 1)


def test_the_first_match_takes_the_measured_velocity_as_it_is():
    """A track's first velocity is the displacement between its two sightings, unsmoothed:
    blending it with the initial zero would halve the first lead the steerer applies."""
    t = _two_frames(Tracker())
    assert t.velocity_um.tolist() == [1.0, 0.0]


def test_later_matches_smooth_the_velocity_with_alpha():
    """From the second match on, the velocity is ``alpha * measured + (1 - alpha) * old``
    with the default alpha 0.5, and the match is looked for around the predicted centre."""
    tracker = Tracker()
    _two_frames(tracker)
    # predicted (5 + 1, -1) = (6, -1); the cell is at (8, -1) (box centre pixel 116),
    # 2 µm off the prediction, inside the 3 µm gate
    (t,) = tracker.update(_frame(2), _dets([[108, 44, 124, 52]]))
    assert t.id == 1 and t.hits == 3
    assert t.velocity_um.tolist() == [2.0, 0.0]          # 0.5 * 3 + 0.5 * 1
    tracker = Tracker(velocity_alpha=0.25)
    _two_frames(tracker)
    (t,) = tracker.update(_frame(2), _dets([[108, 44, 124, 52]]))
    assert t.velocity_um.tolist() == [1.5, 0.0]          # 0.25 * 3 + 0.75 * 1


def test_the_prediction_adds_the_velocity():
    """The search centre is ``center + velocity``: a cell now at (9, -1) is 4 µm from its
    last sighting (5, -1), outside the 3 µm gate, but exactly one radius (3 µm) from the
    prediction (6, -1), so it is still the same cell; at (10, -1) it is another one."""
    tracker = Tracker()
    _two_frames(tracker)
    tracks = tracker.update(_frame(2), _dets([[110, 44, 126, 52]]))   # centre (9, -1)
    assert [(t.id, t.missed) for t in tracks] == [(1, 0)]
    tracker = Tracker()
    _two_frames(tracker)
    tracks = tracker.update(_frame(2), _dets([[106, 44, 122, 52]]))   # centre (7, -1)
    assert [(t.id, t.missed) for t in tracks] == [(1, 0)]
    tracker = Tracker()
    _two_frames(tracker)
    # (10, -1) is 4 µm from the prediction: another cell, and track 1 is missed
    tracks = tracker.update(_frame(2), _dets([[112, 44, 128, 52]]))
    assert sorted((t.id, t.missed) for t in tracks) == [(1, 1), (2, 0)]


# -- misses --------------------------------------------------------------------------------
def test_a_missed_track_is_predicted_and_redrawn_in_the_new_frame():
    """A missed track moves on at its velocity and its box, same size, is redrawn around the
    prediction in the pixels of the new frame (the stage has moved): that box is what the
    steerer aims at when the target is not detected."""
    tracker = Tracker(max_missed=2)
    _two_frames(tracker)
    # stage moved to (3, 2); predicted centre (6, -1) -> pixel (100 + 6, 50 - 6)
    (t,) = tracker.update(_frame(2, pos=(3.0, 2.0)), Detections.empty(NAMES))
    assert t.center_um.tolist() == [6.0, -1.0]
    assert t.box.tolist() == [98.0, 40.0, 114.0, 48.0]
    assert t.center_px.tolist() == [106.0, 44.0]
    assert (t.age, t.hits, t.missed) == (3, 2, 1)
    assert t.velocity_um.tolist() == [1.0, 0.0]
    assert t.last_seen_um.tolist() == [5.0, -1.0]
    (t,) = tracker.update(_frame(3, pos=(3.0, 2.0)), Detections.empty(NAMES))
    assert t.center_um.tolist() == [7.0, -1.0]
    assert t.box.tolist() == [100.0, 40.0, 116.0, 48.0]
    assert (t.age, t.hits, t.missed) == (4, 2, 2)
    assert tracker.update(_frame(4, pos=(3.0, 2.0)), Detections.empty(NAMES)) == []
    assert tracker.get(1) is None


def test_a_missed_track_without_velocity_stays_put():
    """With ``velocity=False`` a missed track is predicted where it was last seen, and a
    match does not give it a velocity."""
    tracker = Tracker(velocity=False)
    _two_frames(tracker)
    (t,) = tracker.update(_frame(2), Detections.empty(NAMES))
    assert t.center_um.tolist() == [5.0, -1.0]
    assert t.box.tolist() == [102.0, 44.0, 118.0, 52.0]
    assert t.velocity_um.tolist() == [0.0, 0.0]


def test_a_frame_without_stage_position_keeps_the_missed_box():
    """A frame without a stage position cannot place the prediction in its pixels: the
    missed track keeps its last box (and its predicted centre) instead of failing."""
    tracker = Tracker()
    _two_frames(tracker)
    (t,) = tracker.update(_frame(2, pos=None), Detections.empty(NAMES))
    assert t.missed == 1
    assert t.center_um.tolist() == [6.0, -1.0]
    assert t.box.tolist() == [102.0, 44.0, 118.0, 52.0]


def test_a_match_after_a_miss_spreads_the_displacement_over_the_gap():
    """Seen again after one missed frame, the displacement since the last sighting covers
    two frames, so the measured velocity is half of it; misses reset and hits count."""
    tracker = Tracker()
    _two_frames(tracker)
    tracker.update(_frame(2), Detections.empty(NAMES))
    # last seen (5, -1); now (8, -1): 3 µm over 2 frames = 1.5, smoothed 0.5 * 1.5 + 0.5 * 1
    (t,) = tracker.update(_frame(3), _dets([[108, 44, 124, 52]]))
    assert t.id == 1
    assert t.velocity_um.tolist() == [1.25, 0.0]
    assert (t.age, t.hits, t.missed, t.frame_index) == (4, 3, 0, 3)


def test_default_max_missed_is_three():
    """By default a track survives three missed updates and is dropped at the fourth."""
    tracker = Tracker()
    _two_frames(tracker)
    for i in range(1, 4):
        (t,) = tracker.update(_frame(1 + i), Detections.empty(NAMES))
        assert t.missed == i
    assert tracker.update(_frame(5), Detections.empty(NAMES)) == []


def test_max_missed_zero_drops_a_track_at_its_first_miss():
    """``max_missed=0`` is valid: a track lives only while it is detected."""
    tracker = Tracker(max_missed=0)
    (t,) = tracker.update(_frame(0), _dets([_square(100, 50)]))
    assert t.id == 1
    assert tracker.update(_frame(1), Detections.empty(NAMES)) == []


# -- the gate ------------------------------------------------------------------------------
def _gated(tracker: Tracker, dx_px: int, misses: int = 0) -> list[tuple[int, int]]:
    """Track 1 born at stage (0, 0) (2 px box, 1 µm/px), *misses* empty frames, then one
    detection *dx_px* µm to the right: (id, missed) of each track after that update."""
    tracker.update(_frame(0, px=1.0), _dets([_square(100, 50)]))
    for i in range(misses):
        tracker.update(_frame(1 + i, px=1.0), Detections.empty(NAMES))
    tracks = tracker.update(_frame(1 + misses, px=1.0), _dets([_square(100 + dx_px, 50)]))
    return sorted((t.id, t.missed) for t in tracks)


def test_a_fixed_gate_includes_its_edge():
    """With ``gate_um`` given, a detection exactly at that distance still matches and one
    just beyond does not (the 2 px box's own radius, 1 µm, plays no part)."""
    assert _gated(Tracker(gate_um=4.0, velocity=False), 4) == [(1, 0)]
    assert _gated(Tracker(gate_um=4.0, velocity=False), 5) == [(1, 1), (2, 0)]
    assert _gated(Tracker(gate_um=4.0), 4) == [(1, 0)]


def test_the_gate_widens_by_a_quarter_per_miss():
    """A track unseen for k updates is searched for within ``gate * (1 + 0.25 k)``: 5 µm
    after one miss and 6 µm after two for a 4 µm gate, edges included."""
    assert _gated(Tracker(gate_um=4.0, velocity=False), 5, misses=1) == [(1, 0)]
    assert _gated(Tracker(gate_um=4.0, velocity=False), 6, misses=1) == [(1, 2), (2, 0)]
    assert _gated(Tracker(gate_um=4.0, velocity=False), 6, misses=2) == [(1, 0)]
    assert _gated(Tracker(gate_um=4.0, velocity=False), 7, misses=2) == [(1, 3), (2, 0)]


def test_the_default_gate_is_one_radius():
    """Without ``gate_um`` the gate is ``gate_factor`` (default 1) times the track's radius:
    a 16 x 8 px box at 0.5 µm/px has radius 3 µm, so 3 µm (6 px) matches, 3.5 µm does not."""
    def moved(tracker: Tracker, dx_px: int) -> list[tuple[int, int]]:
        tracker.update(_frame(0), _dets([[92, 46, 108, 54]]))
        tracks = tracker.update(_frame(1), _dets([[92 + dx_px, 46, 108 + dx_px, 54]]))
        return sorted((t.id, t.missed) for t in tracks)

    assert moved(Tracker(), 6) == [(1, 0)]
    assert moved(Tracker(), 7) == [(1, 1), (2, 0)]
    assert moved(Tracker(gate_factor=2.0), 12) == [(1, 0)]
    assert moved(Tracker(gate_factor=2.0), 13) == [(1, 1), (2, 0)]


def test_the_gate_follows_sub_micrometre_cells():
    """At high magnification a cell is smaller than a micrometre: the gate shrinks with it
    (1 px box at 0.5 µm/px: radius 0.25 µm), so a detection 0.5 µm away is another object."""
    tracker = Tracker(velocity=False)
    tracker.update(_frame(0), _dets([_square(100, 50, side=1.0)]))
    (t,) = tracker.tracks
    assert t.radius_um == 0.25
    tracks = tracker.update(_frame(1), _dets([_square(101, 50, side=1.0)]))
    assert sorted((t.id, t.missed) for t in tracks) == [(1, 1), (2, 0)]
    tracks = tracker.update(_frame(2), _dets([_square(100, 50, side=1.0),
                                              _square(101, 50, side=1.0)]))
    assert sorted((t.id, t.missed) for t in tracks) == [(1, 0), (2, 0)]


def test_min_hits_hides_tracks_until_confirmed():
    """With ``min_hits=2`` a track is kept but not returned until its second match."""
    tracker = Tracker(min_hits=2)
    assert tracker.update(_frame(0), _dets([_square(100, 50)])) == []
    (t,) = tracker.update(_frame(1), _dets([_square(100, 50)]))
    assert (t.id, t.hits) == (1, 2)


def test_bad_max_missed_message_names_the_value():
    """A negative ``max_missed`` is refused with the offending value in the message."""
    with pytest.raises(ValueError, match="got -1"):
        Tracker(max_missed=-1)


def test_tracks_compare_by_identity():
    """``track in tracks`` and ``tracks.remove(track)`` work with several tracks: the
    field-wise dataclass ``==`` compared numpy arrays and raised ValueError."""
    a = Track(1, np.zeros(4), np.zeros(2), np.ones(2))
    b = Track(1, np.zeros(4), np.zeros(2), np.ones(2))
    assert a != b and a == a
    tracks = [b, a]
    assert a in tracks
    tracks.remove(a)
    assert tracks == [b]


def _dense_gated(a, b, gates):
    """The reference: one Hungarian assignment over the whole cost matrix, the pairs
    beyond their gate priced out (what the tracker solved before the groups)."""
    from scipy.optimize import linear_sum_assignment

    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))
    c = np.where(cost <= gates[:, None], cost, 1e9)
    c = np.where(np.isfinite(c), c, 1e9)
    r, k = linear_sum_assignment(c)
    ok = c[r, k] < 1e9
    return r[ok], k[ok]


@pytest.mark.parametrize("dense_pairs", [0, 20_000])
@pytest.mark.parametrize("seed", range(12))
def test_the_gated_assignment_matches_the_whole_matrix_assignment(seed, dense_pairs,
                                                                  monkeypatch):
    """Random scenes, sparse to crowded (gates reaching several neighbours), more tracks
    than detections and fewer, some points and gates not finite: the same pairs as the
    whole-matrix assignment, solved by groups (forced here) or as one matrix."""
    import inscope.control.tracking as tracking
    from inscope.control.tracking import gated_assignment

    monkeypatch.setattr(tracking, "_DENSE_PAIRS", dense_pairs)

    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(0, 80)), int(rng.integers(0, 80))
    side = float(rng.choice([20.0, 60.0, 200.0]))
    a = rng.uniform(0, side, (n, 2))
    b = np.concatenate([a[: min(n, m)] + rng.normal(0, 1.5, (min(n, m), 2)),
                        rng.uniform(0, side, (max(m - n, 0), 2))])[:m]
    b = b[rng.permutation(len(b))] if len(b) else b.reshape(0, 2)
    gates = rng.uniform(1.0, 8.0, n)
    if n > 3:
        a[1] = np.nan
        gates[2] = np.inf if seed % 2 else np.nan
    if m > 3:
        b[0] = np.nan
    rows, cols = gated_assignment(a, b, gates)
    ok_gate = np.where(np.isnan(gates), -1.0, gates)  # NaN: no gate; inf: any distance
    want_r, want_c = _dense_gated(np.nan_to_num(a, nan=1e12), np.nan_to_num(b, nan=-1e12),
                                  ok_gate)
    assert rows.tolist() == want_r.tolist() and cols.tolist() == want_c.tolist()
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    if len(rows):  # every pair is within its gate
        d = np.hypot(*(a[rows] - b[cols]).T)
        assert np.all(d <= gates[rows])


@pytest.mark.parametrize("dense_pairs", [0, 20_000])
def test_the_gated_assignment_prefers_more_pairs_then_shorter_ones(dense_pairs,
                                                                   monkeypatch):
    import inscope.control.tracking as tracking
    from inscope.control.tracking import gated_assignment

    monkeypatch.setattr(tracking, "_DENSE_PAIRS", dense_pairs)

    # track 0 reaches detections 0 (0.5 away) and 1 (1.0); track 1 reaches only 0 (0.9):
    # two pairs (0-1, 1-0: 1.9 in all) beat the nearest pair alone (0-0: 0.5)
    a = np.array([[0.0, 0.0], [1.4, 0.0]])
    b = np.array([[0.5, 0.0], [-1.0, 0.0]])
    rows, cols = gated_assignment(a, b, np.array([1.0, 1.0]))
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    # nothing within reach: no pairs; empty inputs: none
    assert [x.tolist() for x in gated_assignment(a, b + 10, np.array([1.0, 1.0]))] == [[], []]
    assert [x.tolist() for x in gated_assignment(a[:0], b, np.zeros(0))] == [[], []]
