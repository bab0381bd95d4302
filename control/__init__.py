"""Detections -> actions: calibration, tracking, steering, focus, find-and-image workflows.

Everything here drives the :class:`acquisition.microscope.Microscope` protocol, so the same
code runs on the simulator, on Micro-Manager's demo devices and on a real stage; every
move goes through the microscope's guard.
"""

from control.calibration import Calibration, CalibrationError, calibrate, measure_shift
from control.focus import FocusAction, FocusLock, FocusResult, autofocus, sharpness
from control.steering import CenteringController, SteerAction, Steerer
from control.targets import (
    ClassName,
    HighestScore,
    Largest,
    NearestToCentre,
    TargetPolicy,
    TrackId,
    policy_from_spec,
)
from control.tracking import Track, Tracker
from control.workflow import CellRecord, FindAndImage, ZStackSpec, plan_fields

__all__ = [
    "Calibration",
    "CalibrationError",
    "CellRecord",
    "CenteringController",
    "ClassName",
    "FindAndImage",
    "FocusAction",
    "FocusLock",
    "FocusResult",
    "HighestScore",
    "Largest",
    "NearestToCentre",
    "SteerAction",
    "Steerer",
    "TargetPolicy",
    "Track",
    "TrackId",
    "Tracker",
    "ZStackSpec",
    "autofocus",
    "calibrate",
    "measure_shift",
    "plan_fields",
    "policy_from_spec",
    "sharpness",
]
