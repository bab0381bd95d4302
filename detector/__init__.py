"""Frame -> Detections with ONNX Runtime (GPU when present, CPU otherwise)."""

from detector.base import STAMP_DETECT_END, STAMP_DETECT_START, Detections, Detector

__all__ = ["STAMP_DETECT_END", "STAMP_DETECT_START", "Detections", "Detector"]
