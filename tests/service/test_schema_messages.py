"""The published messages (docs/zmq.md), checked value by value against independent math.

A client drives its stage from ``box_um`` / ``center_um`` and follows ``track_id``; a
collapsed corner, a NaN that breaks a strict JSON parser or a track id on the wrong box
sends it somewhere else. Mutation testing: ``python -m benchmarks.mutation --module schema``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from inscope import schema
from inscope.acquisition.frame import Frame, StagePosition
from inscope.control.tracking import Track
from inscope.detector.base import Detections

# 0.5 µm/px, camera rotated by 90 degrees: x and y swap, so a mixed-up axis shows
ROT90 = np.array([[0.0, -0.5], [0.5, 0.0]])
BOXES = np.array([[10.0, 20.0, 30.0, 60.0], [100.0, 40.0, 112.5, 47.5]], np.float32)


POS = StagePosition(1000.0, -500.0, 7.5)


def _frame(position: StagePosition | None = POS, affine=ROT90) -> Frame:
    # 200 x 300 pixels: the centre is (150, 100)
    return Frame(np.zeros((200, 300), np.uint16), 42, {"ready": 11, "detected": 22},
                 position, 0.5, affine)


def _dets(boxes=BOXES, scores=(0.912345, 0.5), cls=(0, 1), names=("cell", "mitotic")):
    return Detections(boxes, np.asarray(scores, np.float32), np.asarray(cls, np.int32),
                      names)


def _stage(px, py, pos=(1000.0, -500.0), a=ROT90):
    """Independent pixel -> stage map: position + A @ (pixel - centre)."""
    return list(np.asarray(pos) + a @ (np.array([px, py]) - [150.0, 100.0]))


def _track(tid: int, box) -> Track:
    b = np.asarray(box, float)
    return Track(tid, b, np.zeros(2), np.ones(2))


def test_box_and_centre_in_stage_micrometres():
    msg = schema.detections_message(_frame(), _dets())
    assert msg["n"] == 2 and len(msg["detections"]) == 2
    for d, (x0, y0, x1, y1) in zip(msg["detections"], BOXES.tolist(), strict=True):
        want_box = _stage(x0, y0) + _stage(x1, y1)
        assert d["box_um"] == pytest.approx(want_box, abs=1e-3)
        assert d["center_um"] == pytest.approx(_stage((x0 + x1) / 2, (y0 + y1) / 2),
                                               abs=1e-3)
        assert d["box_px"] == pytest.approx([x0, y0, x1, y1], abs=0.005)
        assert d["center_px"] == pytest.approx([(x0 + x1) / 2, (y0 + y1) / 2], abs=0.005)
    # first box: corners (10, 20) and (30, 60) -> four different stage numbers
    assert msg["detections"][0]["box_um"] == [1040.0, -570.0, 1020.0, -560.0]
    assert msg["detections"][0]["center_um"] == [1030.0, -565.0]
    assert msg["detections"][1]["center_px"] == [106.25, 43.75]


def test_frame_fields_of_the_message():
    msg = schema.detections_message(_frame(), _dets(), target_id=7,
                                    control={"status": "moved"}, focus={"z": 1.0},
                                    extra={"dropped": 3})
    assert msg["schema"] == "inscope.detections/1"
    assert msg["frame_index"] == 42
    assert msg["stamps_ns"] == {"ready": 11, "detected": 22}
    assert msg["stage_um"] == {"x": 1000.0, "y": -500.0, "z": 7.5}
    assert msg["pixel_size_um"] == 0.5
    assert msg["affine_um_per_px"] == [[0.0, -0.5], [0.5, 0.0]]
    assert msg["shape"] == [200, 300]
    assert (msg["target_id"], msg["control"], msg["focus"], msg["dropped"]) == (
        7, {"status": "moved"}, {"z": 1.0}, 3)
    d0, d1 = msg["detections"]
    assert (d0["score"], d0["class_id"], d0["class"]) == (0.9123, 0, "cell")
    assert (d1["score"], d1["class_id"], d1["class"]) == (0.5, 1, "mitotic")
    plain = schema.detections_message(_frame(), _dets())
    assert (plain["target_id"], plain["control"], plain["focus"]) == (None, None, None)
    assert "dropped" not in plain


def test_unknown_class_id_is_named_by_its_number():
    msg = schema.detections_message(_frame(), _dets(cls=(0, 5), names=("cell",)))
    assert [d["class"] for d in msg["detections"]] == ["cell", "5"]
    msg = schema.detections_message(_frame(), _dets(cls=(-1, 0), names=("cell",)))
    assert [d["class"] for d in msg["detections"]] == ["-1", "cell"]


def test_a_frame_without_stage_position_has_no_stage_fields():
    msg = schema.detections_message(_frame(position=None), _dets())
    assert msg["stage_um"] is None
    assert [(d["box_um"], d["center_um"]) for d in msg["detections"]] == [(None, None)] * 2
    assert msg["detections"][0]["box_px"] == [10.0, 20.0, 30.0, 60.0]


def test_no_detections():
    empty = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    msg = schema.detections_message(_frame(), empty, tracks=[_track(1, [0, 0, 5, 5])])
    assert (msg["n"], msg["detections"]) == (0, [])


def test_track_id_only_when_the_track_centre_is_inside_the_box():
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 60, 60]], np.float32)
    tracks = [
        _track(7, [21, 1, 31, 11]),  # centre (26, 6): inside box 1
        _track(8, [8, 8, 16, 16]),  # centre (12, 12): nearest to box 0 but outside it
        _track(9, [49, 49, 59, 59]),  # centre (54, 54): inside box 2
    ]
    assert schema.match_track_ids(boxes, tracks) == [None, 7, 9]
    msg = schema.detections_message(_frame(), _dets(boxes, (0.9,) * 3, (0,) * 3), tracks=tracks)
    assert [d["track_id"] for d in msg["detections"]] == [None, 7, 9]
    assert schema.match_track_ids(boxes, None) == [None] * 3
    assert schema.match_track_ids(boxes, []) == [None] * 3


def test_track_centre_on_the_box_edge_counts_as_inside():
    boxes = np.array([[0, 0, 10, 10]], np.float32)
    for tb in ([8, 8, 12, 12], [-2, -2, 2, 2], [8, -2, 12, 2], [-2, 8, 2, 12]):
        assert schema.match_track_ids(boxes, [_track(3, tb)]) == [3], tb
    for tb in ([9, 0, 13, 4], [0, 9, 4, 13], [-3, 0, 1, 4], [0, -3, 4, 1]):
        assert schema.match_track_ids(boxes, [_track(3, tb)]) == [None], tb


def test_one_track_claims_one_detection_the_closest():
    # two overlapping boxes both contain the track centre (10, 10); the closer one wins
    boxes = np.array([[0, 0, 30, 30], [5, 5, 16, 16]], np.float32)
    assert schema.match_track_ids(boxes, [_track(4, [8, 8, 12, 12])]) == [None, 4]
    # and with two tracks each box takes its own, whatever the order
    tracks = [_track(5, [13, 13, 17, 17]), _track(4, [9, 9, 11, 11])]
    assert schema.match_track_ids(boxes, tracks) == [5, 4]


# orjson is the encoder; the stdlib one is the fallback for what orjson cannot encode (and
# for an install without orjson): both must write the same strict, compact JSON
ENCODERS = [schema.dumps, schema._dumps_json]


@pytest.mark.parametrize("dumps", ENCODERS, ids=["dumps", "stdlib"])
def test_dumps_is_strict_json_with_nan_and_infinity_as_null(dumps):
    def strict(data: bytes):
        return json.loads(data, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))

    msg = {"a": math.nan, "b": [1.5, math.inf, -math.inf], "c": {"d": (math.nan, 2)},
           "e": np.float64("nan"), "f": "NaN"}
    assert strict(dumps(msg)) == {"a": None, "b": [1.5, None, None],
                                   "c": {"d": [None, 2]}, "e": None, "f": "NaN"}
    out = dumps({"x": 1.0})
    assert out == b'{"x":1.0}'  # compact, bytes
    assert schema.loads(out) == {"x": 1.0} and schema.loads(out.decode()) == {"x": 1.0}


@dataclass
class _Point:
    x: float
    y: float


@pytest.mark.parametrize("dumps", ENCODERS, ids=["dumps", "stdlib"])
def test_dumps_takes_numpy_dataclasses_tuples_and_sets(dumps):
    msg = {"i": np.int64(3), "f": np.float32(0.5), "a": np.arange(3),
           "p": _Point(1.0, 2.0), "t": (1, 2), "s": {4}, "o": object}
    out = json.loads(dumps(msg))
    assert out == {"i": 3, "f": 0.5, "a": [0, 1, 2], "p": {"x": 1.0, "y": 2.0},
                   "t": [1, 2], "s": [4], "o": str(object)}
    # the NaN path goes through the same conversions
    out = json.loads(dumps({"a": np.array([1.0, np.nan]), "p": _Point(math.nan, 1),
                            "s": {5}}))
    assert out == {"a": [1.0, None], "p": {"x": None, "y": 1}, "s": [5]}


def test_a_whole_message_with_nan_scores_is_valid_json():
    msg = schema.detections_message(_frame(), _dets(scores=(math.nan, 0.25)))
    out = json.loads(schema.dumps(msg))
    assert [d["score"] for d in out["detections"]] == [None, 0.25]


def test_overlay_header_and_replies():
    img = np.zeros((4, 6, 3), np.uint8)
    assert schema.overlay_header(9, img, {"ready": 1}) == {
        "schema": "inscope.overlay/1", "frame_index": 9, "kind": "overlay",
        "shape": [4, 6, 3], "dtype": "uint8", "stamps_ns": {"ready": 1}}
    assert schema.overlay_header(9, img, {}, kind="raw")["kind"] == "raw"
    assert schema.ok(n=2) == {"ok": True, "n": 2}
    assert schema.error("bad thing; do X", code=3) == {"ok": False,
                                                       "error": "bad thing; do X", "code": 3}


def test_rounding_of_each_field():
    # 1/3 µm per pixel: stage numbers with every decimal filled
    a = np.array([[1 / 3, 0.0], [0.0, 1 / 3]])
    f = Frame(np.zeros((200, 300), np.uint16), 1, {"ready": 1},
              StagePosition(0.0, 0.0, 0.0), 1 / 3, a)
    boxes = np.array([[10.123, 20.456, 30.789, 60.0]], np.float32)
    d = Detections(boxes, [0.123456], [2], ("cell", "mitotic"))
    msg = schema.detections_message(f, d)
    det = msg["detections"][0]
    assert msg["affine_um_per_px"] == [[0.333333, 0.0], [0.0, 0.333333]]
    assert det["box_px"] == [10.12, 20.46, 30.79, 60.0]  # exact: rounded in float64
    assert det["center_px"] == [20.46, 40.23]
    # (10.123 - 150) / 3 = -46.6257 -> -46.626; 3 decimals (1 nm)
    assert det["box_um"][0] == round((float(boxes[0, 0]) - 150) / 3, 3) == -46.626
    assert det["box_um"][1] == round((float(boxes[0, 1]) - 100) / 3, 3)
    assert det["score"] == 0.1235
    assert det["class"] == "2"  # one past the last name: its number


def test_the_detection_centre_decides_between_two_tracks_inside_its_box():
    # boxes that are not square and not at the origin, so x and y cannot be mixed up
    wide = np.array([[0, 100, 40, 140]], np.float32)  # centre (20, 120)
    assert schema.match_track_ids(wide, [_track(1, [32, 118, 36, 122]),  # (34, 120)
                                         _track(2, [12, 118, 16, 122])]) == [2]  # (14, 120)
    assert schema.match_track_ids(wide, [_track(1, [24, 118, 28, 122]),  # (26, 120)
                                         _track(2, [6, 118, 10, 122])]) == [1]  # (8, 120)
    tall = np.array([[100, 0, 140, 40]], np.float32)  # centre (120, 20)
    assert schema.match_track_ids(tall, [_track(1, [118, 24, 122, 28]),  # (120, 26)
                                         _track(2, [118, 6, 122, 10])]) == [1]  # (120, 8)
    assert schema.match_track_ids(tall, [_track(1, [118, 32, 122, 36]),  # (120, 34)
                                         _track(2, [118, 12, 122, 16])]) == [2]  # (120, 14)


@pytest.mark.parametrize("dumps", ENCODERS, ids=["dumps", "stdlib"])
def test_dumps_stays_compact_when_it_replaces_nan(dumps):
    assert dumps({"a": math.nan, "b": [1, 2]}) == b'{"a":null,"b":[1,2]}'
    assert dumps({"a": (1, math.inf)}) == b'{"a":[1,null]}'


def test_what_orjson_cannot_encode_goes_through_the_stdlib_encoder():
    # an integer beyond 64 bits is valid JSON that orjson refuses: the message still goes out
    out = schema.dumps({"big": 2**70, "x": math.nan, "p": _Point(1.0, 2.0)})
    assert out == b'{"big":1180591620717411303424,"x":null,"p":{"x":1.0,"y":2.0}}'


def test_moving_says_whether_the_stage_moved_during_the_exposure():
    f = _frame()
    assert schema.detections_message(f, _dets())["moving"] is False
    f.moving = True
    assert schema.detections_message(f, _dets())["moving"] is True



def _greedy_reference(boxes, tracks):
    """The pairing rule written as a plain loop: detections in order of their distance
    to their nearest track whose centre lies in their box; each takes that track if no
    nearer detection took it (and then gets none)."""
    out = [None] * len(boxes)
    tc = [((t.box[0] + t.box[2]) / 2, (t.box[1] + t.box[3]) / 2) for t in tracks]
    cand = []
    for i, b in enumerate(boxes):
        c = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
        d = [((c[0] - x) ** 2 + (c[1] - y) ** 2) if b[0] <= x <= b[2] and b[1] <= y <= b[3]
             else np.inf for x, y in tc]
        j = int(np.argmin(d))
        cand.append((d[j], i, j))
    taken = set()
    for d, i, j in sorted(cand):
        if np.isfinite(d) and j not in taken:
            taken.add(j)
            out[i] = tracks[j].id
    return out


def test_track_ids_of_crowded_fields_follow_the_greedy_rule():
    """Crowded fields (boxes overlapping, several detections wanting one track, tracks
    wanted by none): the same pairing as the plain greedy loop."""
    rng = np.random.default_rng(11)
    for _ in range(40):
        n, m = int(rng.integers(1, 60)), int(rng.integers(1, 60))
        xy = rng.uniform(0, 100, (n, 2))
        boxes = np.hstack([xy, xy + rng.uniform(4, 25, (n, 2))]).astype(np.float32)
        txy = rng.uniform(0, 100, (m, 2))
        tracks = [_track(100 + k, [*txy[k], *(txy[k] + rng.uniform(4, 25, 2))])
                  for k in range(m)]
        assert schema.match_track_ids(boxes, tracks) == _greedy_reference(boxes, tracks)
