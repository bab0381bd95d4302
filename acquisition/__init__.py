"""Where frames come from and where moves go.

Backends: :mod:`inscope.acquisition.simulated` (virtual specimen with ground truth),
:mod:`inscope.acquisition.micromanager` (pycromanager: Micro-Manager GUI or headless MMCore) and
:mod:`inscope.acquisition.replay` (TIFF / OME-TIFF / video files, folders of frames) and
:mod:`inscope.acquisition.slide` (a virtual microscope made from a real image or z-stack).
"""

from inscope.acquisition.errors import (
    AcquisitionError,
    BackendOptionError,
    DeviceError,
    MicroscopeUnavailable,
    MoveRefused,
)
from inscope.acquisition.frame import STAMP_READY, Frame, StagePosition
from inscope.acquisition.microscope import BaseMicroscope, Microscope
from inscope.acquisition.safety import MoveGuard, MoveRecord, SoftLimits
from inscope.acquisition.stream import FrameStream, NewestSlot

__all__ = [
    "STAMP_READY",
    "AcquisitionError",
    "BackendOptionError",
    "BaseMicroscope",
    "DeviceError",
    "Frame",
    "FrameStream",
    "MicroscopeUnavailable",
    "Microscope",
    "MoveGuard",
    "MoveRecord",
    "MoveRefused",
    "NewestSlot",
    "SoftLimits",
    "StagePosition",
]
