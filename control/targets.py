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
from inscope.enums import TargetKind, parse_target

__all__ = [
    "ClassName",
    "HighestScore",
    "Largest",
    "NearestToCenter",
    "TargetPolicy",
    "TrackId",
    "policy_from_spec",
]


@runtime_checkable
class TargetPolicy(Protocol):
    """Chooses one track to center (or None when nothing fits)."""

    name: str

    def choose(self, tracks: Sequence[Track], frame: Frame) -> Track | None: ...


def _visible(tracks: Sequence[Track]) -> list[Track]:
    return [t for t in tracks if t.missed == 0]


@dataclass
class NearestToCenter:
    """The object closest to the image center: least travel, least disturbance."""

    name: str = TargetKind.NEAREST

    def choose(self, tracks: Sequence[Track], frame: Frame) -> Track | None:
        vis = _visible(tracks)
        if not vis:
            return None
        c = np.asarray(frame.center)
        return min(vis, key=lambda t: float(np.hypot(*(t.center_px - c))))


@dataclass
class Largest:
    """The object with the largest box (e.g. the cell most likely to be in mitosis)."""

    name: str = TargetKind.LARGEST

    def choose(self, tracks: Sequence[Track], frame: Frame) -> Track | None:
        vis = _visible(tracks)
        return max(vis, key=lambda t: t.area_px) if vis else None


@dataclass
class HighestScore:
    """The most confident detection."""

    name: str = TargetKind.SCORE

    def choose(self, tracks: Sequence[Track], frame: Frame) -> Track | None:
        vis = _visible(tracks)
        return max(vis, key=lambda t: t.score) if vis else None


@dataclass
class ClassName:
    """Objects of one class (e.g. ``"mitotic"``), nearest to the center among them."""

    class_name: str
    name: str = TargetKind.CLASS

    def choose(self, tracks: Sequence[Track], frame: Frame) -> Track | None:
        vis = [t for t in tracks if t.class_name == self.class_name]
        return NearestToCenter().choose(vis, frame)


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


def policy_from_spec(spec: str | int | TargetPolicy) -> TargetPolicy:
    """Build a policy from a target spec (CLI, config files, commands).

    ``"nearest"``, ``"largest"``, ``"score"``, ``"class:<name>"``, a track id (``7``,
    ``"7"`` or ``"id:7"``); parsed by :func:`inscope.enums.parse_target`, the one parser
    of target specs.
    """
    if isinstance(spec, TargetPolicy):
        return spec
    t = parse_target(spec)
    if isinstance(t, int):
        return TrackId(t)
    kind, _, arg = t.partition(":")
    if kind == TargetKind.CLASS:
        return ClassName(arg)
    if kind == TargetKind.LARGEST:
        return Largest()
    if kind == TargetKind.SCORE:
        return HighestScore()
    return NearestToCenter()
