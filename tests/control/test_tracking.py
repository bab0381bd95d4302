"""Tracker: persistent ids in stage µm across stage moves, misses and crowding."""

from __future__ import annotations

import numpy as np
import pytest

from inscope.acquisition.frame import Frame, StagePosition
from inscope.control.tracking import Tracker
from inscope.detector.base import Detections

ROT = np.array([[0.0, -0.5], [0.5, 0.0]])  # 0.5 µm/px, camera rotated by 90 degrees


def _frame(index: int, stage_xy, affine=ROT) -> Frame:
    return Frame(np.zeros((200, 300), np.uint16), index,
                 position=StagePosition(float(stage_xy[0]), float(stage_xy[1]), 0.0),
                 pixel_size_um=0.5, affine=affine)


def _dets(frame: Frame, cells_um: np.ndarray, size_px: float = 16.0) -> Detections:
    c = frame.stage_to_pixel(cells_um)
    boxes = np.concatenate([c - size_px / 2, c + size_px / 2], axis=1)
    return Detections(boxes, np.full(len(c), 0.9), np.zeros(len(c), np.int32))


def test_moving_cell_keeps_its_id_through_stage_moves_and_misses():
    rng = np.random.default_rng(3)
    tracker = Tracker(max_missed=2)
    # One cell moving 0.8 µm per frame, a static neighbour 12 µm away.
    neighbour = np.array([[12.0, 3.0]])
    stage = np.array([0.0, 0.0])
    ids, other_ids = [], []
    for i in range(60):
        cell = np.array([[0.8 * i, 0.3 * i]])
        if i % 7 == 3:  # the controller moves the stage to recentre, boxes jump in pixels
            stage = cell[0] + rng.normal(0, 2.0, 2)
        frame = _frame(i, stage)
        cells = np.concatenate([cell, neighbour])
        if i % 11 == 5:  # the moving cell is missed in this frame
            cells = neighbour
        tracks = tracker.update(frame, _dets(frame, cells))
        moving = [t for t in tracks if t.missed == 0 and
                  np.hypot(*(t.center_um - cell[0])) < 1.0]
        if i % 11 != 5:
            assert len(moving) == 1
            ids.append(moving[0].id)
        other_ids.append([t.id for t in tracks
                          if np.hypot(*(t.center_um - neighbour[0])) < 1.0][0])
    assert len(set(ids)) == 1, f"the moving cell changed id: {sorted(set(ids))}"
    assert len(set(other_ids)) == 1
    assert ids[0] != other_ids[0]
    t = tracker.get(ids[0])
    assert t is not None and t.hits >= 50
    np.testing.assert_allclose(t.velocity_um, [0.8, 0.3], atol=0.1)


def test_track_dropped_after_max_missed_and_ids_not_reused():
    tracker = Tracker(max_missed=2)
    cell = np.array([[5.0, 5.0]])
    f = _frame(0, (0, 0))
    first = tracker.update(f, _dets(f, cell))[0].id
    for i in range(1, 4):
        tracks = tracker.update(_frame(i, (0, 0)), Detections.empty())
        if i <= 2:
            assert [t.id for t in tracks] == [first] and tracks[0].missed == i
        else:
            assert tracks == []
    f = _frame(4, (0, 0))
    again = tracker.update(f, _dets(f, cell))[0]
    assert again.id != first


def test_gate_rejects_a_jump_larger_than_a_cell():
    tracker = Tracker(velocity=False)
    f = _frame(0, (0, 0))
    a = tracker.update(f, _dets(f, np.array([[0.0, 0.0]])))[0].id
    f = _frame(1, (0, 0))
    # 16 px boxes at 0.5 µm/px = 8 µm cells: a 20 µm jump is another cell.
    tracks = tracker.update(f, _dets(f, np.array([[20.0, 0.0]])))
    assert {t.id for t in tracks if t.missed == 0} != {a}


def test_bad_max_missed():
    with pytest.raises(ValueError, match="max_missed"):
        Tracker(max_missed=-1)


def test_a_track_copy_is_a_snapshot_of_its_fields():
    """The control loop publishes shallow copies of its live tracks; a copy has every
    field's value and the tracker rebinding a field of the live track leaves it alone."""
    import copy

    from inscope.control.tracking import Track

    t = Track(3, np.array([1.0, 2, 3, 4]), np.array([5.0, 6]), np.array([2.0, 2]),
              score=0.8, class_name="nucleus", missed=1)
    c = copy.copy(t)
    assert vars(c) == vars(t) and c is not t and type(c) is Track
    t.box = np.array([9.0, 9, 9, 9])
    t.missed = 4
    assert c.box.tolist() == [1, 2, 3, 4] and c.missed == 1
