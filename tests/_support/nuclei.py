"""Generated nuclei for the target-refiner tests: a soft-edged ellipse of known centre."""

from __future__ import annotations

import numpy as np


def soft_ellipse(xx, yy, cx, cy, rx, ry, amp, edge=0.08, angle_deg=0.0):
    """A soft-edged elliptical blob of height *amp* centred at (cx, cy), semi-axes
    (rx, ry) px turned by *angle_deg*, its edge *edge* of the radius wide (a nucleus, a
    neighbour, debris). Symmetric: its intensity and its shape centroid are (cx, cy)."""
    t = np.radians(angle_deg)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    return amp / (1.0 + np.exp((np.hypot(u / rx, v / ry) - 1.0) / edge))
