"""Stage and focus kinematics of the simulated microscope, in one small float64 array.

A move is commanded and takes its settle time (``SimConfig.xy_settle_ms`` /
``z_settle_ms``); meanwhile the stage is somewhere between where it was and where it was
sent (linear, read back quantised), so a frame exposed then is smeared and is flagged
``moving``. The state lives in one array so that a camera in another process reads the
same numbers from shared memory: the writer bumps a sequence number to an odd value,
writes, and bumps it again (a seqlock), and a reader retries while it is odd or changed.
"""

from __future__ import annotations

import math

import numpy as np

# Layout of the state array.
SEQ = 0
XY0, XY1, T_XY0, T_XY1 = slice(1, 3), slice(3, 5), 5, 6  # start, target, times (sim s)
Z0, Z1, T_Z0, T_Z1 = 7, 8, 9, 10
SIZE = 11


def new_state(x: float, y: float, z: float) -> np.ndarray:
    """A state with the stage at rest at (x, y, z)."""
    s = np.zeros(SIZE, np.float64)
    s[XY0] = s[XY1] = (x, y)
    s[Z0] = s[Z1] = z
    s[T_XY0] = s[T_XY1] = s[T_Z0] = s[T_Z1] = -math.inf
    return s


def read(state: np.ndarray) -> np.ndarray:
    """A consistent copy of *state* (retries while a writer is mid-update)."""
    while True:
        s0 = state[SEQ]
        snap = state.copy()
        if s0 == state[SEQ] and int(s0) % 2 == 0:
            return snap


def _lerp(a, b, t0: float, t1: float, t: float):
    if t >= t1 or t1 <= t0:
        return b
    if t <= t0:
        return a
    f = (t - t0) / (t1 - t0)
    return a + (b - a) * f


def _q(v, q: float):
    return np.round(np.asarray(v, float) / q) * q if q > 0 else np.asarray(v, float)


def position(s: np.ndarray, t: float, xy_quantum: float = 0.0,
             z_quantum: float = 0.0) -> tuple[float, float, float]:
    """Stage (x, y, z) at simulated time *t*, read back quantised."""
    xy = _q(_lerp(s[XY0], s[XY1], s[T_XY0], s[T_XY1], t), xy_quantum)
    z = float(_q(_lerp(s[Z0], s[Z1], s[T_Z0], s[T_Z1], t), z_quantum))
    return float(xy[0]), float(xy[1]), z


def busy(s: np.ndarray, t: float) -> tuple[bool, bool]:
    """(XY busy, Z busy) at time *t*."""
    return bool(s[T_XY0] <= t < s[T_XY1]), bool(s[T_Z0] <= t < s[T_Z1])


def moving_during(s: np.ndarray, t_a: float, t_b: float) -> bool:
    """True if either axis was moving at any time in ``[t_a, t_b]``."""
    return bool((s[T_XY0] <= t_b and s[T_XY1] > t_a)
                or (s[T_Z0] <= t_b and s[T_Z1] > t_a))


def command(state: np.ndarray, axis: str, target, t: float, duration_s: float) -> None:
    """Start a move of *axis* (``"xy"`` or ``"z"``) to *target* at time *t*."""
    s = read(state)
    cur = position(s, t)
    state[SEQ] += 1  # odd: a reader retries
    if axis == "xy":
        state[XY0] = cur[:2]
        state[XY1] = target
        state[T_XY0], state[T_XY1] = t, t + duration_s
    else:
        state[Z0] = cur[2]
        state[Z1] = float(target)
        state[T_Z0], state[T_Z1] = t, t + duration_s
    state[SEQ] += 1
