"""Frame -> Detections with ONNX Runtime (GPU when present, CPU otherwise).

Quick start::

    from detector import load_detector
    det = load_detector()              # shipped model, best provider that really runs
    det = load_detector("classical")   # the no-learning baseline
    dets = det.detect(frame)           # Frame or 2-D array -> Detections

The heavier names (OpenCV, ONNX Runtime) are imported on first use, so importing this
package (e.g. for ``inscope --help``) stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from detector.base import STAMP_DETECT_END, STAMP_DETECT_START, Detections, Detector

_LAZY = {
    "OnnxDetector": "detector.onnx_detector",
    "load_detector": "detector.onnx_detector",
    "default_model_path": "detector.onnx_detector",
    "ClassicalDetector": "detector.classical",
    "ModelCard": "detector.card",
    "Sample": "detector.datasets",
    "load_dataset": "detector.datasets",
    "simulated_samples": "detector.datasets",
    "EvalResult": "detector.metrics",
    "evaluate": "detector.metrics",
    "iou_matrix": "detector.metrics",
    "average_precision": "detector.metrics",
}

if TYPE_CHECKING:
    from detector.card import ModelCard
    from detector.classical import ClassicalDetector
    from detector.datasets import Sample, load_dataset, simulated_samples
    from detector.metrics import EvalResult, average_precision, evaluate, iou_matrix
    from detector.onnx_detector import OnnxDetector, default_model_path, load_detector

__all__ = [
    "STAMP_DETECT_END", "STAMP_DETECT_START", "ClassicalDetector", "Detections", "Detector",
    "EvalResult", "ModelCard", "OnnxDetector", "Sample", "average_precision",
    "default_model_path", "evaluate", "iou_matrix", "load_dataset", "load_detector",
    "simulated_samples",
]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'detector' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value
