"""Detections -> actions: calibration, tracking, steering, focus, find-and-image workflows.

Everything here drives the :class:`inscope.acquisition.microscope.Microscope` protocol, so the same
code runs on the simulator, on Micro-Manager's demo devices and on a real stage; every
move goes through the microscope's guard.

Names are imported lazily so that ``inscope --help`` (which imports :mod:`inscope.control.cli`)
does not pay for OpenCV and SciPy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Calibration": "calibration", "CalibrationError": "calibration",
    "calibrate": "calibration", "measure_shift": "calibration",
    "FocusAction": "focus", "FocusLock": "focus", "FocusResult": "focus",
    "autofocus": "focus", "sharpness": "focus", "FocusSurface": "focus_surface",
    "Fix": "refine", "TargetRefiner": "refine", "soft_centroid": "refine",
    "SteerAction": "steering", "SteerSettings": "steering", "Steerer": "steering",
    "ClassName": "targets", "HighestScore": "targets", "Largest": "targets",
    "NearestToCenter": "targets", "TargetPolicy": "targets", "TrackId": "targets",
    "policy_from_spec": "targets",
    "Track": "tracking", "Tracker": "tracking",
    "CellRecord": "workflow", "FindAndImage": "workflow", "ZStackSpec": "workflow",
    "plan_fields": "workflow",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        mod = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'inscope.control' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"inscope.control.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
