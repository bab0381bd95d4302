"""The simulated microscope: a virtual fluorescence slide with ground truth.

>>> from inscope.acquisition.simulated import SimulatedMicroscope
>>> scope = SimulatedMicroscope(seed=1, realtime=False)
>>> frame = scope.snap()          # a uint16 frame with its ground-truth boxes
>>> str(frame.pixels.dtype), len(frame.truth) > 0
('uint16', True)
>>> scope.move_xy(100, 0)         # through the soft-limit guard
True
"""

from inscope.acquisition.simulated.config import SimConfig
from inscope.acquisition.simulated.microscope import SimulatedMicroscope
from inscope.acquisition.simulated.render import GroundTruth, Renderer
from inscope.acquisition.simulated.specimen import (
    KIND_DEBRIS,
    KIND_DIM,
    KIND_MITOTIC,
    KIND_NORMAL,
    KIND_PAIR,
    Cell,
    Specimen,
)

__all__ = [
    "KIND_DEBRIS",
    "KIND_DIM",
    "KIND_MITOTIC",
    "KIND_NORMAL",
    "KIND_PAIR",
    "Cell",
    "GroundTruth",
    "Renderer",
    "SimConfig",
    "SimulatedMicroscope",
    "Specimen",
]
