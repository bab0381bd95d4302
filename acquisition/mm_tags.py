"""Stage positions from Micro-Manager / pycro-manager image metadata tags.

Micro-Manager writes the position read back from the stage (``XPosition_um``,
``ZPosition_um``); pycro-manager's acquisition engine writes the position an event asked
for (``XPosition_um_Intended``, ``ZPosition_um_Intended``) and only for the axes that the
event moved: a z-stack carries ``ZPosition_um_Intended`` and no X/Y at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from inscope.acquisition.frame import StagePosition

ORIGIN = StagePosition(0.0, 0.0, 0.0)
_KEYS = ("{a}Position_um_Intended", "{a}Position_um", "{a}PositionUm")


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def tag_axis(tags: Mapping[str, Any], axis: str) -> float | None:
    """The position of *axis* (``"X"``, ``"Y"``, ``"Z"``) in µm, or None if not recorded.
    The intended position comes first: it is exact, the read-back is quantised."""
    for key in _KEYS:
        v = _num(tags.get(key.format(a=axis)))
        if v is not None:
            return v
    return None


def position_from_tags(tags: Mapping[str, Any], *, require_xy: bool = True,
                       default: StagePosition = ORIGIN
                       ) -> StagePosition | None:
    """Stage position from image tags.

    With ``require_xy`` (default) None unless X and Y are recorded; otherwise any
    recorded axis counts and missing ones come from *default*. None if nothing is recorded.
    """
    x, y, z = (tag_axis(tags, a) for a in "XYZ")
    if require_xy and (x is None or y is None):
        return None
    if x is None and y is None and z is None:
        return None
    return StagePosition(default.x if x is None else x, default.y if y is None else y,
                         default.z if z is None else z)
