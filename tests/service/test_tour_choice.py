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


def test_brightness_above_the_background_is_weighed_by_size():
    # a third, dim cell of A's size keeps the median area at A's, so both A and B count
    a, big, dim = _track(1, 320, 200), _track(2, 80, 200, r=20), _track(3, 200, 320)
    # (1000 - 100) x 24 px < (900 - 100) x 40 px: the bigger one wins
    assert _choose([a, big, dim], {1: 1000, 2: 900, 3: 110}) == 2
    # a small bright cell against a big dim one, over a background of 100: the bright
    # one (200 x 24 = 4,800 against 80 x 48 = 3,840); above zero instead of the
    # background, the big one would win
    big = _track(2, 80, 200, r=24)
    assert _choose([_track(1, 320, 200), big, dim], {1: 300, 2: 180, 3: 110}) == 1


def test_a_cell_within_edge_px_of_any_side_is_skipped_one_pixel_further_in_it_is_not():
    for cx, cy, ok in ((35, 200, False), (36, 200, True),     # left: x0 23 / 24
                       (365, 200, False), (364, 200, True),   # right: x1 377 / 376
                       (200, 35, False), (200, 36, True),     # top
                       (200, 365, False), (200, 364, True)):  # bottom
        got = _choose([_track(1, cx, cy)])
        assert (got == 1) is ok, (cx, cy)


def test_the_hop_range_includes_its_ends():
    assert _choose([_track(1, 280, 200)]) == 1  # exactly min_hop_px 80 from the centre
    assert _choose([_track(1, 320, 200)], tour=Tour(TourConfig(max_hop_px=120.0))) == 1


def test_a_cell_is_visited_only_within_12_um_of_a_visit():
    for d, chosen in ((11.9, None), (12.0, 1), (12.5, 1)):
        tour = Tour()
        tour._visited_xy = np.array([[160.0 + d, 100.0]])
        assert _choose([_track(1, 320, 200)], tour=tour) == chosen, d


def _box_track(tid, box, um):
    from inscope.control.tracking import Track

    b = np.asarray(box, float)
    return Track(tid, b, np.asarray(um, float), np.array([b[2] - b[0], b[3] - b[1]]) * 0.5,
                 score=0.9, hits=5)


def test_crowding_is_judged_against_the_boxs_longer_side_wide_or_tall():
    # a 30 x 10 box and a neighbour 25 px away: within its longer side, crowded
    wide = _box_track(1, (305, 195, 335, 205), [160.0, 100.0])
    for nb in ((330, 195, 360, 205), (305, 220, 335, 230)):  # beside, below: 25 px
        assert _choose([wide, _box_track(2, nb, [0.0, 0.0])]) is None, nb
    tall = _box_track(1, (315, 185, 325, 215), [160.0, 100.0])
    assert _choose([tall, _box_track(2, (315, 210, 325, 240), [0.0, 0.0])]) is None
    # exactly its longer side away is not crowded
    far = _box_track(2, (335, 195, 365, 205), [0.0, 0.0])
    assert _choose([wide, far], {2: 200}) == 1


def test_a_cell_outside_the_soft_limits_does_not_end_the_search():
    inside, outside = _track(1, 320, 200, um=[500.0, 100.0]), _track(2, 80, 200,
                                                                     um=[-300.0, 100.0])
    limits = SoftLimits(x=(-200.0, 1000.0), y=(-1000.0, 1000.0))
    assert _choose([outside, inside], {1: 1000, 2: 5000}, limits=limits) == 1


def test_a_box_of_fewer_than_16_whole_pixels_is_skipped_for_the_next():
    # three cells of a few pixels (a tiny third keeps the median area at the first two):
    # the first, 3.5 px wide, spans 3 whole pixel columns (9 px); the second, as wide
    # but placed across 4 columns and 4 rows, 16 px: the smallest crop the tour measures
    a = _box_track(1, (318.0, 198.0, 321.5, 201.5), [160.0, 100.0])
    b = _box_track(2, (80.6, 198.6, 84.1, 202.1), [40.0, 100.0])
    c = _box_track(3, (200.0, 80.0, 201.0, 81.0), [100.0, 40.0])
    assert _choose([a, b, c]) == 2
    assert _choose([a, c]) is None
