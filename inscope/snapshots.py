"""Snapshots on request: confined to the run's folder, never overwritten, rate-limited.

The ``snapshot`` command comes over the network, so it must not become a way to write
files anywhere or to fill the disk: a request may name only a sub-folder of the run's
snapshot folder (relative, no ``..``), every snapshot gets a new name (a running number
plus the frame index, created exclusively: two in the same second never overwrite each
other), and at most ``max_per_s`` are taken per second (a token bucket; more are refused
with how long to wait).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path, PurePosixPath, PureWindowsPath


class SnapshotRefused(ValueError):
    """A snapshot request that is not allowed (bad folder, too fast); says why."""


def safe_subdir(root: Path, sub: object) -> Path:
    """``root / sub`` if *sub* is a plain relative path that stays inside *root*."""
    if sub is None or sub == "":
        return root
    if not isinstance(sub, str):
        raise SnapshotRefused(f"\"dir\" must be a relative folder name (a string); got "
                              f"{type(sub).__name__}.")
    if len(sub) > 200 or "\x00" in sub:
        raise SnapshotRefused("\"dir\" must be a short relative folder name.")
    for pure in (PurePosixPath(sub), PureWindowsPath(sub)):
        if pure.is_absolute() or pure.anchor or ".." in pure.parts:
            raise SnapshotRefused(
                f"\"dir\" {sub!r} is not allowed: snapshots stay inside the run's snapshot "
                f"folder {root}; give a relative name without '..' (or omit \"dir\").")
    d = (root / sub).resolve()
    r = root.resolve()
    if d != r and r not in d.parents:  # e.g. a symlink pointing out
        raise SnapshotRefused(f"\"dir\" {sub!r} leads outside the snapshot folder {root}.")
    return d


class SnapshotPolicy:
    """Where snapshots go, how they are named and how often they may be taken.

    Parameters
    ----------
    root
        The run's snapshot folder; every snapshot lands inside it.
    max_per_s
        Sustained rate limit; *burst* may be taken at once after a pause.
    """

    def __init__(self, root: str | Path, max_per_s: float = 1.0, burst: int = 3,
                 clock=time.monotonic) -> None:
        if not (max_per_s > 0 and burst >= 1):
            raise ValueError("snapshot rate must be > 0 per second with a burst >= 1.")
        self.root = Path(root)
        self.max_per_s = float(max_per_s)
        self.burst = int(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._t = clock()
        self._lock = threading.Lock()
        self._n = 0
        self.taken = 0
        self.refused = 0

    def acquire(self) -> None:
        """Take one token or raise :class:`SnapshotRefused` naming the wait."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self.max_per_s)
            self._t = now
            if self._tokens < 1.0:
                self.refused += 1
                wait = (1.0 - self._tokens) / self.max_per_s
                raise SnapshotRefused(f"too many snapshots: at most {self.max_per_s:g} per "
                                      f"second; try again in {wait:.2f} s.")
            self._tokens -= 1.0

    def take(self, sub: object, frame_index: int) -> Path:
        """One snapshot's stem: the folder checked, then a token taken, then a new name
        (:meth:`stems`), in that order, so a folder refused for its name takes no token
        (three bad requests held up the next good one)."""
        d = safe_subdir(self.root, sub)
        self.acquire()
        return self._stem_in(d, frame_index)

    def stems(self, sub: object, frame_index: int) -> Path:
        """A new, unused path stem inside the allowed folder (the folder is created)."""
        return self._stem_in(safe_subdir(self.root, sub), frame_index)

    def _stem_in(self, d: Path, frame_index: int) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        with self._lock:
            while True:
                self._n += 1
                stem = d / (f"snapshot_{self._n:05d}_{frame_index:06d}_"
                            f"{time.strftime('%Y%m%d-%H%M%S')}")
                marker = Path(f"{stem}_frame.tif")
                try:
                    # exclusive create: a name another process (or run) took is skipped
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    continue
                os.close(fd)
                self.taken += 1
                return stem
