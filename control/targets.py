"""Which object to steer to: small, swappable target-choice policies.

A policy looks at the live tracks of one frame and returns one of them (or None). The
steering controller keeps a chosen target while its track lives ("sticky"), so a policy
is consulted only when there is no current target, or when the user asks for another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from inscope.acquisition.frame import Frame
from inscope.control.tracking import Track

__all__ = [
    "ClassName",
    "HighestScore",
    "Largest",
    "NearestToCentre",
    "TargetPolicy",
    "TrackId",
    "policy_from_spec",
]


@runtime_checkable
class TargetPolicy(Protocol):
    """Chooses one track to centre (or None when nothing fits)."""

    name: str

    def choose(self, tracks: Sequence[Track], frame: Frame) -> Track | None: ...


def _visible(tracks: Sequence[Track]) -> list[Track]:
    return [t for t in tracks if t.missed == 0]


@dataclass
class NearestToCentre:
    """The object closest to the image centre: least travel, least disturbance."""

    name: str = "nearest"

    def choose(self, tracks: Sequence[Track], frame: Frame) -> Track | None:
        vis = _visible(tracks)
        if not vis:
            return None
        c = np.asarray(frame.center)
        return min(vis, key=lambda t: float(np.hypot(*(t.center_px - c))))


@dataclass
class Largest:
    """The object with the largest box (e.g. the cell most likely to be in mitosis)."""

    name: str = "largest"

    def choose(self, tracks: Sequence[Track], frame: Frame) -> Track | None:
        vis = _visible(tracks)
        return max(vis, key=lambda t: t.area_px) if vis else None


@dataclass
class HighestScore:
    """The most confident detection."""

    name: str = "score"

    def choose(self, tracks: Sequence[Track], frame: Frame) -> Track | None:
        vis = _visible(tracks)
        return max(vis, key=lambda t: t.score) if vis else None


@dataclass
class ClassName:
    """Objects of one class (e.g. ``"mitotic"``), nearest to the centre among them."""

    class_name: str
    name: str = "class"

    def choose(self, tracks: Sequence[Track], frame: Frame) -> Track | None:
        vis = [t for t in tracks if t.class_name == self.class_name]
        return NearestToCentre().choose(vis, frame)


@dataclass
class TrackId:
    """A track picked by the user (a click on the overlay, a ZMQ command)."""

    track_id: int
    name: str = "id"

    def choose(self, tracks: Sequence[Track], frame: Frame) -> Track | None:
        for t in tracks:
            if t.id == self.track_id:
                return t
        return None


def policy_from_spec(spec: str | TargetPolicy) -> TargetPolicy:
    """Build a policy from a short string (config files, commands).

    ``"nearest"``, ``"largest"``, ``"score"``, ``"class:<name>"``, ``"id:<n>"``.
    """
    if not isinstance(spec, str):
        return spec
    s = spec.strip()
    key, _, arg = s.partition(":")
    key = key.lower()
    if key in ("nearest", "centre", "center"):
        return NearestToCentre()
    if key in ("largest", "size", "area"):
        return Largest()
    if key in ("score", "highest", "confidence"):
        return HighestScore()
    if key == "class" and arg:
        return ClassName(arg)
    if key == "id" and arg:
        try:
            return TrackId(int(arg))
        except ValueError:
            pass
    raise ValueError(
        f"Unknown target policy {spec!r}; use one of 'nearest', 'largest', 'score', "
        "'class:<name>' or 'id:<track id>'.")
