"""One image from someone else's acquisition -> boxes in pixels and stage µm."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from inscope.acquisition.frame import Frame, StagePosition, colour_to_grey
from inscope.acquisition.mm_tags import position_from_tags
from inscope.detector.base import Detections
from inscope.schema import detections_message

log = logging.getLogger(__name__)

__all__ = ["METADATA_KEY", "Detected", "camera_count", "detect_image", "position_from_tags",
           "undetected"]

#: Metadata key under which the boxes are stored in an image's metadata.
METADATA_KEY = "inscope"


@dataclass
class Detected:
    """What :func:`detect_image` found in one image.

    Attributes
    ----------
    frame
        The image as an inscope Frame (stage position, pixel size, affine).
    detections
        The detector's :class:`~inscope.detector.Detections` (pixels of *frame*).
    record
        JSON-able dict: ``n`` and one entry per box with ``box_px``, ``center_px``,
        ``box_um``, ``center_um`` (stage µm, ``None`` without a stage position), ``score``
        and ``class`` (the schema of the ZMQ detections message, without time stamps);
        ``error`` too when the detector failed on the image (:func:`undetected`).
    """

    frame: Frame
    detections: Any
    record: dict[str, Any]

    @property
    def centers_um(self) -> list[tuple[float, float]]:
        """Stage positions (µm) that centre each box (empty without a stage position)."""
        return [tuple(d["center_um"]) for d in self.record["detections"]
                if d["center_um"] is not None]


def camera_count(count: Callable[[], Any]) -> int | None:
    """How many images each event gives: a Micro-Manager "Multi Camera"'s physical
    cameras, read with *count* (pymmcore-plus's ``mmc.getNumberOfCameraChannels``,
    pycro-manager's ``core.get_number_of_camera_channels``); None if the core cannot
    say."""
    try:
        return max(1, int(count()))
    except Exception as e:  # noqa: BLE001 - a core without the call
        log.debug("number of camera channels unknown: %s", e)
        return None


def _gray(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3:  # an RGB(A) camera in pycro-manager / pymmcore-plus
        a = colour_to_grey(a)
    if a.dtype not in (np.uint8, np.uint16, np.float32):
        a = a.astype(np.float32)
    return a


def detect_image(detector: Any, image: np.ndarray, *, index: int = 0,
                 position: StagePosition | None = None, pixel_size_um: float = 1.0,
                 affine: np.ndarray | None = None,
                 metadata: Mapping[str, Any] | None = None) -> Detected:
    """Run *detector* on one camera image taken at *position*.

    Parameters
    ----------
    detector
        Anything with ``detect(frame) -> Detections`` (e.g. ``load_detector()``).
    image
        (H, W) camera pixels.
    position
        Stage position (µm) when the image was exposed; None gives pixel boxes only.
    pixel_size_um, affine
        The pixel-to-stage map (``affine`` 2x2 µm/pixel; default ``pixel_size_um * I``),
        e.g. a :class:`~inscope.control.calibration.Calibration`'s affine.
    """
    frame = _frame(image, index, position, pixel_size_um, affine, metadata)
    return _detected(frame, detector.detect(frame))


def undetected(image: np.ndarray, error: str, *, index: int = 0,
               position: StagePosition | None = None, pixel_size_um: float = 1.0,
               affine: np.ndarray | None = None,
               metadata: Mapping[str, Any] | None = None) -> Detected:
    """What :func:`detect_image` gives for an image the detector failed on: no boxes, and
    ``record["error"]`` says what failed, so the image is still kept and counted (an
    exception escaping a frame handler would lose the frame, or stop the acquisition).
    Same arguments as :func:`detect_image`."""
    frame = _frame(image, index, position, pixel_size_um, affine, metadata)
    det = _detected(frame, Detections.empty(frame_index=frame.index))
    det.record["error"] = str(error)
    return det


def _frame(image: np.ndarray, index: int, position: StagePosition | None,
           pixel_size_um: float, affine: np.ndarray | None,
           metadata: Mapping[str, Any] | None) -> Frame:
    if pixel_size_um is None or not pixel_size_um > 0:  # an unconfigured pixel size
        pixel_size_um = 1.0
    return Frame(_gray(image), index=int(index), position=position,
                 pixel_size_um=float(pixel_size_um),
                 affine=np.eye(2) * float(pixel_size_um) if affine is None else affine,
                 metadata=dict(metadata or {}))


def _detected(frame: Frame, dets: Any) -> Detected:
    msg = detections_message(frame, dets)
    record = {k: msg[k] for k in ("n", "detections", "stage_um", "pixel_size_um",
                                  "affine_um_per_px", "shape")}
    return Detected(frame, dets, record)
