"""Frame -> Detections with ONNX Runtime (GPU when present, CPU otherwise).

Quick start::

    from inscope.detector import load_detector
    det = load_detector()              # shipped model, best provider that really runs
    det = load_detector("classical")   # the no-learning baseline
    dets = det.detect(frame)           # Frame or 2-D array -> Detections

The heavier names (OpenCV, ONNX Runtime) are imported on first use, so importing this
package (e.g. for ``inscope --help``) stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from inscope.detector.base import STAMP_DETECT_END, STAMP_DETECT_START, Detections, Detector

_LAZY = {
    "OnnxDetector": "inscope.detector.onnx_detector",
    "load_detector": "inscope.detector.onnx_detector",
    "default_model_path": "inscope.detector.onnx_detector",
    "ClassicalDetector": "inscope.detector.classical",
    "ModelCard": "inscope.detector.card",
    "Sample": "inscope.detector.datasets",
    "load_dataset": "inscope.detector.datasets",
    "simulated_samples": "inscope.detector.datasets",
    "EvalResult": "inscope.detector.metrics",
    "evaluate": "inscope.detector.metrics",
    "iou_matrix": "inscope.detector.metrics",
    "average_precision": "inscope.detector.metrics",
}

if TYPE_CHECKING:
    from inscope.detector.card import ModelCard
    from inscope.detector.classical import ClassicalDetector
    from inscope.detector.datasets import Sample, load_dataset, simulated_samples
    from inscope.detector.metrics import EvalResult, average_precision, evaluate, iou_matrix
    from inscope.detector.onnx_detector import OnnxDetector, default_model_path, load_detector

__all__ = [
    "STAMP_DETECT_END", "STAMP_DETECT_START", "ClassicalDetector", "Detections", "Detector",
    "EvalResult", "ModelCard", "OnnxDetector", "Sample", "average_precision",
    "default_model_path", "evaluate", "iou_matrix", "load_dataset", "load_detector",
    "simulated_samples",
]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'inscope.detector' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value
