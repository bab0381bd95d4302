"""Simulated microscope: a seeded virtual fluorescence slide, camera, XY stage and focus,
with ground truth for every frame. What inscope is tested, demoed and trained on."""

from acquisition.simulated.config import SimConfig
from acquisition.simulated.microscope import GroundTruth, SimClock, SimulatedMicroscope
from acquisition.simulated.render import true_affine
from acquisition.simulated.specimen import Cell, Specimen

__all__ = ["Cell", "GroundTruth", "SimClock", "SimConfig", "SimulatedMicroscope", "Specimen",
           "true_affine"]
