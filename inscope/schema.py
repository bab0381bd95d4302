"""Messages the service publishes, built in one place so code and docs/zmq.md agree.

Builders return plain ``dict``s of Python scalars/lists (``ndarray.tolist()`` once per
array, not per element) so the output thread can encode them cheaply (:func:`dumps`). Nothing here
runs in the detection thread: encoding is the output threads' job.

Schema versions are bumped on any incompatible change; clients should check
``msg["schema"]``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

SCHEMA_DETECTIONS = "inscope.detections/1"
SCHEMA_OVERLAY = "inscope.overlay/1"
SCHEMA_COMMAND = "inscope.command/1"

TOPIC_DETECTIONS = b"detections"
TOPIC_OVERLAY = b"overlay"

#: Commands the REP socket understands (see :meth:`inscope.pipeline.Pipeline.command`).
COMMANDS = ("status", "pause", "resume", "set_target", "set_mode", "set_threshold",
            "snapshot", "stop")
# Control modes and target policies: inscope.enums.Mode and TargetKind.


def _r(a: np.ndarray, nd: int = 3) -> list:
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


def match_track_ids(boxes: np.ndarray, tracks: Sequence[Any] | None) -> list[int | None]:
    """Track id for each detection box (``None`` when no track claims it).

    Trackers return their own boxes; a detection belongs to the track whose box centre is
    closest to its own centre and lies inside the detection's box.
    """
    n = len(boxes)
    ids: list[int | None] = [None] * n
    if not tracks or n == 0:
        return ids
    tb = np.asarray([np.asarray(t.box, dtype=np.float64).reshape(4) for t in tracks])
    tc = np.stack([(tb[:, 0] + tb[:, 2]) / 2, (tb[:, 1] + tb[:, 3]) / 2], 1)
    b = np.asarray(boxes, dtype=np.float64)
    dc = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)
    d2 = ((dc[:, None, :] - tc[None, :, :]) ** 2).sum(-1)
    inside = ((tc[None, :, 0] >= b[:, None, 0]) & (tc[None, :, 0] <= b[:, None, 2])
              & (tc[None, :, 1] >= b[:, None, 1]) & (tc[None, :, 1] <= b[:, None, 3]))
    d2[~inside] = np.inf
    # Greedy, nearest pairs first: each detection asks for its nearest track, and of the
    # detections asking for one track the nearest gets it (the others get none). Done
    # with a sort instead of a loop over detections (~100 per frame, 2-3 outputs).
    best = d2.argmin(1)
    bestd = d2[np.arange(n), best]
    order = np.argsort(bestd, kind="stable")
    order = order[np.isfinite(bestd[order])]
    _, first = np.unique(best[order], return_index=True)
    track_ids = [int(t.id) for t in tracks]
    for i in order[first]:
        ids[int(i)] = track_ids[int(best[i])]
    return ids


def detections_message(frame, detections, *, tracks: Sequence[Any] | None = None,
                       target_id: int | None = None, control: dict | None = None,
                       focus: dict | None = None, extra: dict | None = None,
                       track_ids: Sequence[int | None] | None = None) -> dict:
    """The per-frame detections message (topic ``b"detections"``).

    Boxes are given in pixels *and* as stage positions (µm) through
    :meth:`inscope.acquisition.Frame.pixel_to_stage`, so a client can drive the stage to any box
    without knowing the optics. Stage fields are ``None`` when the frame has no position.
    *track_ids*: each detection's track id when the caller has matched them already
    (:meth:`inscope.outputs.Result.track_ids`); else they are matched here.
    """
    boxes = detections.boxes
    n = len(boxes)
    pos = frame.position
    centers = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    if pos is not None and n:
        # corners (x0,y0), (x1,y1) and centres mapped in one call
        pts = np.concatenate([boxes[:, :2], boxes[:, 2:], centers])
        st = frame.pixel_to_stage(pts)
        c0, c1, cc = st[:n], st[n:2 * n], st[2 * n:]
        box_um = _r(np.concatenate([c0, c1], 1))
        center_um = _r(cc)
    else:
        box_um = center_um = [None] * n
    names = detections.class_names
    cls = detections.class_ids.tolist()
    scores = np.round(detections.scores.astype(np.float64), 4).tolist()
    tids = match_track_ids(boxes, tracks) if track_ids is None else track_ids
    bpx = _r(boxes, 2)
    cpx = _r(centers, 2)
    dets = [
        {"box_px": bpx[i], "center_px": cpx[i], "box_um": box_um[i],
         "center_um": center_um[i], "score": scores[i], "class_id": cls[i],
         "class": names[cls[i]] if 0 <= cls[i] < len(names) else str(cls[i]),
         "track_id": tids[i]}
        for i in range(n)
    ]
    msg = {
        "schema": SCHEMA_DETECTIONS,
        "frame_index": int(frame.index),
        "stamps_ns": dict(frame.stamps),
        "stage_um": None if pos is None else {"x": pos.x, "y": pos.y, "z": pos.z},
        "pixel_size_um": float(frame.pixel_size_um),
        "affine_um_per_px": _r(frame.affine, 6),
        "shape": list(frame.pixels.shape),
        "moving": bool(frame.moving),
        "n": n,
        "detections": dets,
        "target_id": target_id,
        "control": control,
        "focus": focus,
    }
    if extra:
        msg.update(extra)
    return msg


def overlay_header(frame_index: int, image: np.ndarray, stamps: dict[str, int],
                   kind: str = "overlay") -> dict:
    """JSON header sent before the raw pixels of an overlay frame (topic ``b"overlay"``)."""
    return {"schema": SCHEMA_OVERLAY, "frame_index": int(frame_index), "kind": kind,
            "shape": list(image.shape), "dtype": str(image.dtype),
            "stamps_ns": dict(stamps)}


def _default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "__dataclass_fields__"):
        return {k: getattr(o, k) for k in o.__dataclass_fields__}
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def _finite(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _dumps_json(msg: Any) -> bytes:
    try:
        return json.dumps(msg, separators=(",", ":"), default=_default,
                          allow_nan=False).encode()
    except ValueError:
        return json.dumps(_finite(json.loads(json.dumps(msg, default=_default))),
                          separators=(",", ":"), allow_nan=False).encode()


try:  # the fastest encoder measured (benchmarks/bench_json.py, results/json.json)
    import orjson

    _ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

    def _dumps_fast(msg: Any) -> bytes:
        return orjson.dumps(msg, default=_default, option=_ORJSON_OPTS)

    ENCODER = "orjson"
except ImportError:  # pragma: no cover - orjson is a dependency; stay correct without it
    _dumps_fast = _dumps_json
    ENCODER = "json"


def dumps(msg: Any) -> bytes:
    """Compact UTF-8 JSON that tolerates numpy scalars/arrays and dataclasses.

    NaN / infinity are not JSON: they become ``null`` (strict parsers reject ``NaN``).
    Encoded with orjson (about an order of magnitude faster than ``json`` on a
    detections message of ~90 boxes, ``benchmarks/results/json.json``), which writes
    NaN as ``null`` itself; the stdlib path is the fallback.
    """
    try:
        return _dumps_fast(msg)
    except TypeError:  # something orjson cannot encode even through _default
        return _dumps_json(msg)


def loads(data: bytes | str) -> Any:
    """JSON from *data*; bytes must be UTF-8 (as JSON over a socket is: RFC 8259).
    (``json.loads`` guesses UTF-16 or -32 from the first bytes, so a request that was
    not UTF-8 got an error naming the 'utf-16-le' codec.)"""
    return json.loads(data.decode("utf-8") if isinstance(data, bytes | bytearray) else data)


def ok(**fields) -> dict:
    """A successful command reply."""
    return {"ok": True, **fields}


def error(message: str, **fields) -> dict:
    """A failed command reply; *message* names the problem and the fix."""
    return {"ok": False, "error": message, **fields}
