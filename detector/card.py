"""Model cards: the JSON beside every inscope ONNX model.

The card says how to feed the model (input size, normalisation, scale) and how to read its
outputs (decoding), plus what it was trained on and how well and how fast it ran, so a
model file is never used on trust. Its ``sha256`` ties the card to exactly one .onnx file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CARD_SUFFIX = ".json"


@dataclass
class ModelCard:
    """Description of one ONNX detector.

    Attributes
    ----------
    name
        Short identifier, e.g. ``"inscope-nuclei-v1"``.
    format
        ``"inscope-centernet"`` (heatmap + size heads, peak decoding) or
        ``"ultralytics"`` (YOLOv8 / YOLO11 export, decoded with NMS).
    classes
        Class names, index = class id.
    input
        ``{"name": str, "channels": 1|3, "size": [H, W] | None (any size, multiple of
        "multiple"), "multiple": int, "layout": "NCHW"}``.
    normalisation
        ``{"method": "percentile", "low": 1.0, "high": 99.8, "subsample": 4}`` maps the
        frame to [0, 1] float32 (robust to uint8/uint16/float inputs), or
        ``{"method": "scale", "divisor": 255}``; optional ``"clip": true`` clips to
        [0, 1]. Implemented once in :func:`inscope.detector.preprocess.normalise`; training
        should call that same function.
    scale
        ``{"object_size_px": [lo, hi]}``: the object sizes the model was trained for; the
        detector rescales frames so objects fall in this range (from the pixel size, or a
        user-given ``object_size_px``); ``"enlarge_below_px"``: the measured object size
        under which the model starts losing objects, so frames of smaller ones are
        enlarged up to it, packed fields up to the range's centre (absent: never enlarged
        on a measured size; :mod:`inscope.detector.scale`).
        ``{"tile": int, "overlap": int}`` for tiling;
        ``"tile_above": int`` (default 2560): longest side above which a fully
        convolutional model is run in tiles rather than on the whole frame.
    decoding
        Format-specific: for centernet ``{"stride": 4, "heatmap": "heatmap", "size":
        "size", "offset": "offset" | None, "score_threshold": 0.3, "peak_kernel": 3,
        "max_detections": 500}``; for ultralytics ``{"score_threshold", "iou_threshold"}``.
        CenterNet centres (input pixels, pixel centres at integers, the convention of
        the training boxes) are ``(cell + offset) * stride`` with the standard offset in
        [0, 1), or the centre of the cell's pixels ``(cell + 0.5) * stride - 0.5``
        without an offset head; "size" is the box
        width, height in input pixels (see :mod:`inscope.detector.decode`). Optional
        ``"activation": "sigmoid"`` when the heatmap output is logits;
        ``"offset_range": [lo, hi]`` the offset head's range (models trained on the 3 x 3
        neighbourhood targets: [-1.25, 2.25]); ``"centre_vote": true`` (or a radius:
        2 = 5 x 5) averages centre and size over the cells around each peak (steadier
        boxes; only for such models), leaving out cells whose centre is more than
        ``"vote_agree"`` cells (0.75) from the peak's, or, with ``"vote_sigma"``
        (cells), weighting them softly by that distance (mean shift);
        ``"merge_iou"``: NMS at that IoU after decoding (a second peak on one nucleus);
        ``"calibration": {"method": "platt", "a", "b"}`` maps raw peak values
        to calibrated scores (the threshold is then in calibrated units; see
        :mod:`inscope.detector.calibration`); ``"centre_shift_px": [dx, dy]``, the
        network's median centre error measured there, is taken off every box (a model
        trained on boxes half a pixel off its images: another tool's pixel convention).
        ``"max_detections"`` caps the boxes per
        frame (inscope models: 100,000, i.e. no practical cap). ``"min_signal_sigma":
        k`` keeps a box only when more than half of its pixels are at least k camera
        noise sigma above the frame's background (:mod:`inscope.detector.signal`: no
        nuclei found in an empty field's noise and debris; any format).
    training, metrics, latency
        Free-form records of how the model was made and what it measured.
    sha256
        Hex digest of the .onnx file the card describes.
    """

    name: str
    format: str
    classes: list[str]
    input: dict[str, Any]
    normalisation: dict[str, Any] = field(
        default_factory=lambda: {"method": "percentile", "low": 1.0, "high": 99.8,
                                 "subsample": 4})
    scale: dict[str, Any] = field(default_factory=dict)
    decoding: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    notes: str = ""

    # -- io ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"Model card {path} not found. An inscope model needs its JSON card beside "
                "the .onnx (same name, .json); Ultralytics exports need none.") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"Model card {path} is not valid JSON: {e}.") from None
        known = set(cls.__dataclass_fields__)
        missing = {"name", "format", "classes", "input"} - set(d)
        if missing:
            raise ValueError(f"Model card {path} lacks required field(s) {sorted(missing)}.")
        _check_numbers(d, path)
        extra = {k: v for k, v in d.items() if k not in known}
        card = cls(**{k: v for k, v in d.items() if k in known})
        if extra:
            card.training.setdefault("_extra_fields", extra)
        return card

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @staticmethod
    def path_for(onnx_path: str | Path) -> Path:
        return Path(onnx_path).with_suffix(CARD_SUFFIX)


#: The card's settings that must be numbers (or null), by section: read only when the
#: first frame is decoded, a string there ended in "could not convert string to float"
#: naming neither the card nor the key.
NUMBER_KEYS: dict[str, tuple[str, ...]] = {
    "normalisation": ("low", "high", "subsample", "divisor", "hot_pixel_sigma",
                      "sparse_sigma"),
    "scale": ("enlarge_below_px", "tile", "overlap", "tile_above"),
    "decoding": ("stride", "score_threshold", "iou_threshold", "peak_kernel",
                 "max_detections", "vote_agree", "vote_sigma", "merge_iou",
                 "min_signal_sigma"),
}


def _check_numbers(d: dict[str, Any], path: Path) -> None:
    """Refuse a card whose sections are not objects or whose number settings
    (:data:`NUMBER_KEYS`, ``scale.object_size_px``) are not numbers, in one line naming
    the card, the key and the value."""
    for section, keys in NUMBER_KEYS.items():
        sec = d.get(section)
        if sec is None:
            continue
        if not isinstance(sec, dict):
            raise ValueError(f"Model card {path}: {section!r} is {str(sec)[:40]!r}; it must "
                             "be an object of settings (see detector/card.py).")
        for k in keys:
            v = sec.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise ValueError(f"Model card {path}: {section}.{k} is {v!r}; give a number.")
    size = (d.get("scale") or {}).get("object_size_px")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in size)):
        raise ValueError(f"Model card {path}: scale.object_size_px is {size!r}; give two "
                         "numbers [smallest, largest] in pixels.")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
