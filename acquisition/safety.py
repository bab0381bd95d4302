"""The one guard that every stage move goes through.

Soft limits, a maximum step and a maximum rate are checked *before* any hardware is
touched; a refused move raises :class:`~inscope.acquisition.errors.MoveRefused` and nothing moves.
In dry-run mode moves are checked and recorded but never sent to the hardware, so a
controller can be watched on a real microscope without risk.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from inscope.acquisition.errors import MoveRefused
from inscope.events import Signal


@dataclass(frozen=True, slots=True)
class SoftLimits:
    """Where the stage may go and how fast (µm, Micro-Manager's signs).

    ``None`` for a range means "unlimited on that axis"; use it only for simulated
    hardware: on a real stage (``MoveGuard.require_limits``) an axis without a range
    refuses every move. A range must be finite and non-empty (``low < high``): an
    infinite range would be a limit in name only.
    """

    x: tuple[float, float] | None = None
    y: tuple[float, float] | None = None
    z: tuple[float, float] | None = None
    max_step_xy_um: float = 5000.0
    max_step_z_um: float = 200.0
    max_rate_hz: float = 50.0

    def allows_xy(self, x: float, y: float, margin: float = 0.0) -> bool:
        """Whether stage position (*x*, *y*) µm lies inside the x and y ranges by at
        least *margin* µm (an axis without a range allows anything)."""
        return all(rng is None or rng[0] + margin <= float(v) <= rng[1] - margin
                   for rng, v in ((self.x, x), (self.y, y)))

    #: Allowed ``max_rate_hz``: the guard waits ``1 / max_rate_hz`` between moves in the
    #: mover's thread, so a tiny rate would stall control for minutes per move.
    RATE_RANGE_HZ = (1.0, 1e6)

    def __post_init__(self) -> None:
        for name in ("x", "y", "z"):
            r = getattr(self, name)
            if r is None:
                continue
            try:
                lo, hi = (float(v) for v in r)
            except (TypeError, ValueError):
                raise ValueError(f"Soft limit '{name}' must be [low, high] in µm; got "
                                 f"{r!r}.") from None
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(
                    f"Soft limit '{name}' = {r!r} is not finite; give the stage's real "
                    f"travel in µm, e.g. {name} = [-5000, 5000] (an infinite range limits "
                    "nothing).")
            if not lo < hi:
                raise ValueError(
                    f"Soft limit '{name}' = {r!r} is {'empty' if lo == hi else 'reversed'}; "
                    "give [low, high] with low < high (µm).")
        for name in ("max_step_xy_um", "max_step_z_um", "max_rate_hz"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) \
                    or not (v > 0 and math.isfinite(v)):
                raise ValueError(f"Soft limit '{name}' must be a finite positive number; "
                                 f"got {v!r}.")
        lo, hi = self.RATE_RANGE_HZ
        if not lo <= self.max_rate_hz <= hi:
            raise ValueError(f"Soft limit 'max_rate_hz' = {self.max_rate_hz!r} is outside "
                             f"[{lo:g}, {hi:g}]: the guard waits 1/max_rate_hz between "
                             "moves, stalling control meanwhile.")

    @classmethod
    def from_dict(cls, d: dict) -> SoftLimits:
        """Build from a config mapping (``x = [lo, hi]`` etc.), with a clear error on typos."""
        allowed = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(
                f"Unknown soft-limit setting(s) {sorted(unknown)}; allowed: {sorted(allowed)}."
            )
        kw: dict[str, Any] = {
            k: (tuple(float(x) for x in v) if k in "xyz" and v is not None else v)
            for k, v in d.items()}
        return cls(**kw)


@dataclass(frozen=True, slots=True)
class MoveRecord:
    """One requested move and what became of it."""

    t_ns: int
    axis: str  # "xy" or "z"
    start: tuple[float, ...]
    target: tuple[float, ...]
    made: bool
    reason: str = ""  # why it was refused or not made ("dry-run"), empty when made


@dataclass
class MoveGuard:
    """Checks every move against :class:`SoftLimits`; records what it decided.

    Parameters
    ----------
    limits
        The soft limits; ``None`` means no limits are configured.
    require_limits
        True for real hardware: with no limits configured, every move is refused (a
        runaway controller on a real stage can crush an objective into a slide).
    dry_run
        Check and record moves but never make them.
    """

    limits: SoftLimits | None = None
    require_limits: bool = True
    dry_run: bool = False
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    history: deque[MoveRecord] = field(default_factory=lambda: deque(maxlen=10_000))
    #: Every decision (made, refused, dry-run) as it is recorded; a failing listener is
    #: logged and the move stands.
    moved: Signal[MoveRecord] = field(default_factory=lambda: Signal("moved"), repr=False,
                                      compare=False)
    _last_move_t: float = field(default=-math.inf, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- checks ------------------------------------------------------------------------
    def _refuse(self, axis: str, start: Sequence[float], target: Sequence[float],
                reason: str) -> None:
        self._record(axis, start, target, made=False, reason=reason)
        raise MoveRefused(reason)

    def _check_common(self, axis: str, start: Sequence[float],
                      target: Sequence[float]) -> SoftLimits:
        if not all(math.isfinite(v) for v in target):
            self._refuse(axis, start, target,
                         f"Refused {axis} move to {target}: target is not a finite number "
                         "(a NaN from upstream?). Nothing moved.")
        if self.limits is None:
            # Dry-run never moves, so it needs no limits: that keeps the advice below true.
            if self.require_limits and not self.dry_run:
                self._refuse(axis, start, target,
                             f"Refused {axis} move to {_fmt(target)}: no soft limits are "
                             "configured for this real stage. Set [microscope.limits] x, y "
                             "and z (µm) in the config, or run with --dry-run to only "
                             "compute moves (dry-run makes none, so it needs no limits).")
            return SoftLimits()
        if self.require_limits and not self.dry_run:
            missing = [a for a in (("x", "y") if axis == "xy" else ("z",))
                       if getattr(self.limits, a) is None]
            if missing:
                self._refuse(axis, start, target,
                             f"Refused {axis} move to {_fmt(target)}: no soft limit for "
                             f"{', '.join(missing)} on this real stage. Set [microscope."
                             f"limits] {' and '.join(missing)} (µm), or run with --dry-run.")
        return self.limits

    def check_xy(self, start: tuple[float, float], target: tuple[float, float]) -> None:
        """Raise :class:`MoveRefused` unless an XY move from *start* to *target* is allowed."""
        lim = self._check_common("xy", start, target)
        for name, v, rng in (("x", target[0], lim.x), ("y", target[1], lim.y)):
            if rng is not None and not (rng[0] <= v <= rng[1]):
                self._refuse("xy", start, target,
                             f"Refused XY move to {_fmt(target)} µm: {name}={v:.2f} is outside "
                             f"the soft limit {shown_range(rng)}. Nothing moved; widen "
                             "[limits] in the config if the slide really extends there.")
        step = math.hypot(target[0] - start[0], target[1] - start[1])
        if step > lim.max_step_xy_um:
            self._refuse("xy", start, target,
                         f"Refused XY move of {step:.1f} µm (from {_fmt(start)} to "
                         f"{_fmt(target)}): larger than max_step_xy_um={lim.max_step_xy_um:g}. "
                         "Nothing moved; move in smaller steps or raise the limit.")

    def check_z(self, start: float, target: float) -> None:
        """Raise :class:`MoveRefused` unless a Z move from *start* to *target* is allowed."""
        lim = self._check_common("z", (start,), (target,))
        if lim.z is not None and not (lim.z[0] <= target <= lim.z[1]):
            self._refuse("z", (start,), (target,),
                         f"Refused Z move to {target:.2f} µm: outside the soft limit "
                         f"{shown_range(lim.z)}. Nothing moved; this limit protects "
                         "the objective and the sample.")
        if abs(target - start) > lim.max_step_z_um:
            self._refuse("z", (start,), (target,),
                         f"Refused Z move of {abs(target - start):.2f} µm: larger than "
                         f"max_step_z_um={lim.max_step_z_um:g}. Nothing moved.")

    # -- execution ---------------------------------------------------------------------
    def run(self, axis: str, start: tuple[float, ...], target: tuple[float, ...],
            do_move: Callable[[], None]) -> bool:
        """Check, rate-limit and (unless dry-run) make a move. Returns True if it was made."""
        if axis == "xy":
            self.check_xy(start, target)  # type: ignore[arg-type]
        else:
            self.check_z(start[0], target[0])
        with self._lock:
            lim = self.limits or SoftLimits()
            wait = self._last_move_t + 1.0 / lim.max_rate_hz - self.clock()
            if wait > 0:
                # Throttle rather than refuse: a controller asking too fast is slowed down.
                self.sleep(wait)
            self._last_move_t = self.clock()
        if self.dry_run:
            self._record(axis, start, target, made=False, reason="dry-run")
            return False
        do_move()
        self._record(axis, start, target, made=True)
        return True

    def _record(self, axis: str, start: Sequence[float], target: Sequence[float],
                made: bool, reason: str = "") -> None:
        rec = MoveRecord(time.monotonic_ns(), axis, tuple(map(float, start)),
                         tuple(map(float, target)), made, reason)
        self.history.append(rec)
        self.moved.emit(rec)


def shown_range(rng: Sequence[float] | None) -> str:
    """A soft-limit range as every message shows it: ``[lo, hi]`` (None: ``any``)."""
    return "any" if rng is None else f"[{rng[0]:g}, {rng[1]:g}]"


def shown_um(v: float) -> str:
    """A stage coordinate (µm) to 0.01 µm, without the ``-0.00`` of a reading a hair below
    zero."""
    return f"{round(float(v), 2) + 0.0:.2f}"


def _fmt(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(x):.2f}" for x in v) + ")"
