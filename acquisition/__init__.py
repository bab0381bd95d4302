"""Where frames come from and where moves go.

Backends: :mod:`acquisition.simulated` (virtual specimen with ground truth),
:mod:`acquisition.micromanager` (pycromanager: Micro-Manager GUI or headless MMCore) and
:mod:`acquisition.replay` (TIFF / OME-TIFF / video files).
"""

from acquisition.errors import (
    AcquisitionError,
    DeviceError,
    MicroscopeUnavailable,
    MoveRefused,
)
from acquisition.frame import STAMP_READY, Frame, StagePosition
from acquisition.microscope import BaseMicroscope, Microscope
from acquisition.safety import MoveGuard, MoveRecord, SoftLimits
from acquisition.stream import FrameStream, NewestSlot

__all__ = [
    "STAMP_READY",
    "AcquisitionError",
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
