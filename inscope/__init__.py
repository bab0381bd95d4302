"""inscope: microscope-inline real-time detection service.

The names most programs need are importable from here in one line (imported lazily, so
``import inscope`` and ``inscope --help`` stay instant)::

    from inscope import ControlConfig, Pipeline, PubOutput, load_detector, open_microscope
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("inscope")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

#: Public name -> the module that defines it.
_EXPORTS = {
    # microscopes and frames
    "open_microscope": "inscope.acquisition.factory",
    "Frame": "inscope.acquisition.frame",
    "Microscope": "inscope.acquisition.microscope",
    "SoftLimits": "inscope.acquisition.safety",
    # detection
    "load_detector": "inscope.detector.onnx_detector",
    "Detections": "inscope.detector.base",
    "Detector": "inscope.detector.base",
    # control
    "Steerer": "inscope.control.steering",
    "SteerSettings": "inscope.control.steering",
    "FocusLock": "inscope.control.focus",
    "Tracker": "inscope.control.tracking",
    "policy_from_spec": "inscope.control.targets",
    # the live service
    "Config": "inscope.config",
    "ConfigError": "inscope.config",
    "ControlConfig": "inscope.config",
    "load_config": "inscope.config",
    "Pipeline": "inscope.pipeline",
    "ControlStep": "inscope.control_stage",
    "Result": "inscope.outputs",
    "PubOutput": "inscope.zmq_api",
    "CommandServer": "inscope.zmq_api",
    "request": "inscope.zmq_api",
    "build_service": "inscope.service",
    "run_service": "inscope.service",
    # vocabularies
    "Backend": "inscope.enums",
    "FocusStatus": "inscope.enums",
    "Mode": "inscope.enums",
    "RecordFormat": "inscope.enums",
    "Stamp": "inscope.enums",
    "SteerStatus": "inscope.enums",
    "TargetKind": "inscope.enums",
    "parse_target": "inscope.enums",
}

__all__ = [
    "__version__",
    "Backend",
    "CommandServer",
    "Config",
    "ConfigError",
    "ControlConfig",
    "ControlStep",
    "Detections",
    "Detector",
    "FocusLock",
    "FocusStatus",
    "Frame",
    "Microscope",
    "Mode",
    "Pipeline",
    "PubOutput",
    "RecordFormat",
    "Result",
    "SoftLimits",
    "Stamp",
    "SteerSettings",
    "SteerStatus",
    "Steerer",
    "TargetKind",
    "Tracker",
    "build_service",
    "load_config",
    "load_detector",
    "open_microscope",
    "parse_target",
    "policy_from_spec",
    "request",
    "run_service",
]

if TYPE_CHECKING:
    from inscope.acquisition.factory import open_microscope
    from inscope.acquisition.frame import Frame
    from inscope.acquisition.microscope import Microscope
    from inscope.acquisition.safety import SoftLimits
    from inscope.config import Config, ConfigError, ControlConfig, load_config
    from inscope.control.focus import FocusLock
    from inscope.control.steering import Steerer, SteerSettings
    from inscope.control.targets import policy_from_spec
    from inscope.control.tracking import Tracker
    from inscope.control_stage import ControlStep
    from inscope.detector.base import Detections, Detector
    from inscope.detector.onnx_detector import load_detector
    from inscope.enums import (
        Backend,
        FocusStatus,
        Mode,
        RecordFormat,
        Stamp,
        SteerStatus,
        TargetKind,
        parse_target,
    )
    from inscope.outputs import Result
    from inscope.pipeline import Pipeline
    from inscope.service import build_service, run_service
    from inscope.zmq_api import CommandServer, PubOutput, request


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'inscope' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
