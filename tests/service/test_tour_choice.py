"""Which cell the demo's tour chooses next, one rule at a time, on hand-built tracks and
a drawn frame (the real Tour, Track, Frame and SoftLimits).

The frame is 400 x 400 (centre (200, 200)); the candidate cells are 100-150 px from the
centre (the tour's hop is 80-200 px), bright discs on a dark background.
"""

from __future__ import annotations

import numpy as np
from _support import disc_frame as _frame
from _support import disc_track as _track

from inscope.acquisition.safety import SoftLimits
from inscope.tour import Tour, TourConfig


def _choose(tracks, brightness=None, limits=None, tour=None):
    tour = tour or Tour()
    got = tour._choose(_frame(tracks, brightness), tracks, limits)
    return None if got is None else got.id


def test_the_brightest_big_cell_in_hop_range_is_chosen():
    a, b = _track(1, 320, 200), _track(2, 200, 320)
    assert _choose([a, b], {1: 800, 2: 1500}) == 2
    assert _choose([a, b], {1: 1500, 2: 800}) == 1
    # brightness is weighed by size: a cell a little dimmer but much bigger wins
    big = _track(3, 80, 200, r=20)
    assert _choose([a, big], {1: 1000, 3: 900}) == 3


def test_a_cell_too_near_or_too_far_from_the_centre_is_not_a_hop():
    near, far, ok = _track(1, 250, 200), _track(2, 200, 200 + 190), _track(3, 200, 60)
    assert _choose([near, ok], {1: 3000, 3: 1000}) == 3  # 50 px: below min_hop 80
    cfg = TourConfig(max_hop_px=150.0)
    assert _choose([far, ok], {2: 3000, 3: 1000}, tour=Tour(cfg)) == 3  # 190 > 150
    assert _choose([near]) is None


def test_cells_not_seen_long_enough_confidently_or_now_are_skipped():
    best = dict(zip(range(1, 6), [3000, 3000, 3000, 3000, 1000], strict=True))
    young = _track(1, 320, 200, hits=2)          # fewer than min_hits 3
    unsure = _track(2, 80, 200, score=0.4)       # under min_score 0.5
    missed = _track(3, 200, 320, missed=1)       # not seen in this frame
    edge = _track(4, 380, 380)                   # within edge_px of the border
    ok = _track(5, 200, 80)
    assert _choose([young, unsure, missed, edge, ok], best) == 5
    assert _choose([_track(1, 320, 200, hits=3), ok], best) == 1  # exactly min_hits
    assert _choose([_track(2, 80, 200, score=0.5), ok], best) == 2  # exactly min_score


def test_a_cell_smaller_than_most_or_crowded_by_a_neighbour_is_skipped():
    small = _track(1, 320, 200, r=6)
    others = [_track(i, x, y) for i, (x, y) in enumerate(((200, 320), (80, 200), (200, 80)),
                                                         start=2)]
    assert _choose([small, *others], {1: 5000, 2: 1000, 3: 900, 4: 800}) == 2
    # two cells whose centres lie within one cell's size of each other: neither
    a, b = _track(5, 320, 200), _track(6, 340, 200)
    assert _choose([a, b, others[1]], {5: 5000, 6: 5000, 3: 900}) == 3


def test_a_visited_cell_and_one_outside_the_soft_limits_are_skipped():
    a, b = _track(1, 320, 200, um=[500.0, 100.0]), _track(2, 80, 200, um=[-300.0, 100.0])
    tour = Tour()
    tour._visited_xy = np.array([[505.0, 100.0]])  # 5 µm from cell 1: visited
    assert _choose([a, b], {1: 5000, 2: 1000}, tour=tour) == 2
    tour._visited_xy = np.array([[530.0, 100.0]])  # 30 µm away: a different cell
    assert _choose([a, b], {1: 5000, 2: 1000}, tour=tour) == 1
    limits = SoftLimits(x=(-200.0, 1000.0), y=(-1000.0, 1000.0))
    assert _choose([a, b], {1: 1000, 2: 5000}, limits=limits) == 1  # -300 is outside
    # the cell's radius (6 µm here) must fit inside too: 994 + 6 reaches 1000, 995 past it
    assert _choose([_track(3, 320, 200, um=[994.0, 100.0])], limits=limits) == 3
    assert _choose([_track(3, 320, 200, um=[995.0, 100.0])], limits=limits) is None
