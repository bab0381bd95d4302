"""Which cell each target policy chooses, on tracks whose positions, sizes, scores,
classes and misses are known; and the specs that build them.

Real :class:`Track` and :class:`Frame` objects (the frame's centre is pixel (w/2, h/2)).
"""

from __future__ import annotations

import numpy as np
import pytest

from inscope.acquisition.frame import Frame, StagePosition
from inscope.control.targets import (
    ClassName,
    HighestScore,
    Largest,
    NearestToCenter,
    TrackId,
    policy_from_spec,
)
from inscope.control.tracking import Track

FRAME = Frame(np.zeros((200, 300), np.uint16), 0, position=StagePosition(0, 0, 0),
              pixel_size_um=0.5)  # centre (150, 100)


def _t(tid: int, cx: float, cy: float, w: float, h: float, score=0.8, cls="nucleus",
       missed=0) -> Track:
    box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return Track(tid, box, np.zeros(2), np.ones(2), score=score, class_name=cls,
                 missed=missed)


TRACKS = [
    _t(1, 160, 100, 10, 10, score=0.70),                  # 10 px right of the centre
    _t(2, 150, 88, 30, 8, score=0.95, cls="mitotic"),     # 12 px above: 240 px^2
    _t(3, 150, 105, 20, 20, score=0.99, missed=1),        # nearest, largest, best: missed
    _t(4, 40, 20, 16, 16, score=0.60, cls="mitotic"),     # far, 256 px^2
    _t(5, 280, 190, 12, 12, score=0.90, cls="mitotic"),   # far the other way
]


def test_nearest_chooses_the_seen_cell_closest_to_the_centre_on_both_axes():
    assert NearestToCenter().choose(TRACKS, FRAME).id == 1
    # a cell straight above, nearer than #1, wins: the distance counts y too
    above = _t(6, 150, 93, 8, 8)
    assert NearestToCenter().choose([*TRACKS, above], FRAME).id == 6
    # the centre is (w/2, h/2): a cell at (150, 100) beats one at (149, 99.4)
    a, b = _t(7, 150, 100, 8, 8), _t(8, 149, 99.4, 8, 8)
    assert NearestToCenter().choose([b, a], FRAME).id == 7


def test_largest_and_highest_score_skip_cells_not_seen_in_this_frame():
    assert Largest().choose(TRACKS, FRAME).id == 4  # 256 > 240 px^2 (#3 missed)
    assert HighestScore().choose(TRACKS, FRAME).id == 2  # 0.95 (#3's 0.99 missed)
    assert Largest().choose([TRACKS[2]], FRAME) is None
    assert HighestScore().choose([TRACKS[2]], FRAME) is None
    assert NearestToCenter().choose([TRACKS[2]], FRAME) is None


def test_a_class_chooses_its_own_cells_nearest_to_the_centre():
    assert ClassName("mitotic").choose(TRACKS, FRAME).id == 2
    assert ClassName("mitotic").choose([TRACKS[4], TRACKS[3]], FRAME).id == 4  # 136 < 158 px
    assert ClassName("apoptotic").choose(TRACKS, FRAME) is None
    assert ClassName("nucleus").choose(TRACKS, FRAME).id == 1


def test_a_track_picked_by_id_stays_chosen_while_it_is_briefly_missed():
    assert TrackId(3).choose(TRACKS, FRAME).id == 3
    assert TrackId(4).choose(TRACKS, FRAME).id == 4
    assert TrackId(99).choose(TRACKS, FRAME) is None


def test_nothing_to_choose_from():
    for p in (NearestToCenter(), Largest(), HighestScore(), ClassName("x"), TrackId(1)):
        assert p.choose([], FRAME) is None


@pytest.mark.parametrize(("spec", "want"), [
    ("nearest", NearestToCenter()), ("largest", Largest()), ("score", HighestScore()),
    ("class:mitotic", ClassName("mitotic")), (7, TrackId(7)), ("7", TrackId(7)),
    ("id:12", TrackId(12)),
])
def test_specs_build_their_policies(spec, want):
    got = policy_from_spec(spec)
    assert got == want
    assert policy_from_spec(got) is got  # a policy passes through
