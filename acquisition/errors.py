"""Errors raised by acquisition backends.

Every error names the problem *and* the fix in its message, because the person reading it
is usually standing next to a microscope, not reading our source.
"""

from __future__ import annotations


class AcquisitionError(RuntimeError):
    """Base class: something about getting frames or moving the stage went wrong."""


class MicroscopeUnavailable(AcquisitionError):
    """The microscope (Micro-Manager, a file, a device) cannot be reached or opened."""


class BackendOptionError(MicroscopeUnavailable, TypeError):
    """A backend was given an option it does not take, or lacks one it needs.

    A :class:`MicroscopeUnavailable`, so every command reports it in one line; also a
    ``TypeError``, as a wrong keyword argument to a function is.
    """


class DeviceError(AcquisitionError):
    """A device (camera, stage, focus drive) reported an error while in use."""


class MoveRefused(AcquisitionError):
    """A requested stage move was refused by the safety guard; nothing moved."""
