"""Detector interface: frames in, :class:`Detections` out.

No ONNX Runtime type appears here, so a remote engine (e.g. Triton over gRPC shared by
several microscopes) can stand behind the same interface later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from inscope.acquisition.frame import Frame
from inscope.enums import Stamp

# Time-stamp names the detector adds to ``Frame.stamps`` / ``Detections.stamps``.
STAMP_DETECT_START: str = Stamp.DETECT_START.value
STAMP_DETECT_END: str = Stamp.DETECT_END.value


@dataclass(slots=True)
class Detections:
    """Boxes found in one frame, in that frame's own pixel grid.

    Attributes
    ----------
    boxes
        (N, 4) float32, x0, y0, x1, y1 (x right, y down).
    scores
        (N,) float32 in [0, 1].
    class_ids
        (N,) int32, index into ``class_names``.
    class_names
        Names of all classes the model knows.
    frame_index
        ``Frame.index`` of the frame these came from (-1 for a bare array).
    stamps
        Copy of the frame's time stamps plus the detector's own.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...] = ("cell",)
    frame_index: int = -1
    stamps: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int32).reshape(-1)
        n = len(self.boxes)
        if len(self.scores) != n or len(self.class_ids) != n:
            raise ValueError(
                f"Detections need one score and one class id per box: got {n} boxes, "
                f"{len(self.scores)} scores, {len(self.class_ids)} class ids."
            )

    @classmethod
    def empty(cls, class_names: tuple[str, ...] = ("cell",), frame_index: int = -1
              ) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int32), class_names, frame_index)

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def centers(self) -> np.ndarray:
        """(N, 2) box centres, x then y, in pixels."""
        return np.stack([(self.boxes[:, 0] + self.boxes[:, 2]) / 2,
                         (self.boxes[:, 1] + self.boxes[:, 3]) / 2], axis=1)

    @property
    def areas(self) -> np.ndarray:
        return (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])

    def names(self) -> list[str]:
        """Class name of each box."""
        return [self.class_names[i] if 0 <= i < len(self.class_names) else str(i)
                for i in self.class_ids]

    def select(self, mask: np.ndarray) -> Detections:
        """A new Detections with only the boxes where *mask* is true."""
        return Detections(self.boxes[mask], self.scores[mask], self.class_ids[mask],
                          self.class_names, self.frame_index, dict(self.stamps))


@runtime_checkable
class Detector(Protocol):
    """Anything that turns a frame into Detections."""

    name: str
    class_names: tuple[str, ...]

    def detect(self, frame: Frame | np.ndarray) -> Detections:
        """Find objects in *frame* (a Frame or a bare 2-D array)."""
        ...

    def close(self) -> None: ...


@dataclass
class DetectCall:
    """Book-keeping shared by every detector's ``detect()``: opened by
    :func:`begin_detect`, closed by :meth:`finish`, so that time stamps, frame index and
    box clipping follow one rule whatever the detector.

    Attributes
    ----------
    image
        The frame's pixels as a 2-D array (see :func:`inscope.detector.preprocess.as_image`).
    stamps
        The frame's own stamps dict (``detect_start`` already set), or a fresh one for a
        bare array.
    index
        The frame index, -1 for a bare array.
    t0_ns
        ``time.monotonic_ns()`` at the start.
    """

    image: np.ndarray
    stamps: dict[str, int]
    index: int
    t0_ns: int

    def finish(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
               class_names: tuple[str, ...], min_signal_sigma: float | None = None
               ) -> Detections:
        """Clip boxes to the image, drop empty ones, stamp ``detect_end``.

        The image spans ``[-0.5, w - 0.5] x [-0.5, h - 0.5]``: pixel centres are at
        integer coordinates (frames, training boxes, the simulator's truth and the
        control code all count so), so a nucleus cut by the left edge keeps the half
        pixel its border pixel covers. With *min_signal_sigma* (a model card's decoding
        key) a box is kept only when it holds an object
        (:func:`inscope.detector.signal.has_signal`).
        """
        h, w = self.image.shape
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if min_signal_sigma is not None and len(boxes):
            from inscope.detector.signal import has_signal

            keep = has_signal(self.image, boxes, float(min_signal_sigma))
            boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
        if len(boxes):
            np.clip(boxes[:, 0::2], -0.5, w - 0.5, out=boxes[:, 0::2])
            np.clip(boxes[:, 1::2], -0.5, h - 0.5, out=boxes[:, 1::2])
            ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, scores, class_ids = boxes[ok], scores[ok], class_ids[ok]
        self.stamps[STAMP_DETECT_END] = time.monotonic_ns()
        return Detections(boxes, scores, class_ids, class_names, self.index,
                          dict(self.stamps))


def begin_detect(frame: Frame | np.ndarray) -> DetectCall:
    """Stamp ``detect_start`` on *frame* and take its pixels as a 2-D image."""
    from inscope.detector.preprocess import as_image

    t0 = time.monotonic_ns()
    stamps: dict[str, int] = frame.stamps if isinstance(frame, Frame) else {}
    stamps[STAMP_DETECT_START] = t0
    index = frame.index if isinstance(frame, Frame) else -1
    return DetectCall(as_image(frame), stamps, index, t0)


def object_size_px(frame: Frame | np.ndarray, size_px: float | None,
                   size_um: float | None) -> float | None:
    """Typical object diameter in pixels: given in pixels, or in µm over the frame's pixel
    size (a bare array has none), else None."""
    if size_px is not None:
        return float(size_px)
    if size_um is not None and isinstance(frame, Frame):
        return float(size_um) / float(frame.pixel_size_um)
    return None
