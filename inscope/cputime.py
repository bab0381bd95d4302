"""CPU time per thread and per process, to show where a run's time goes.

Latency percentiles say how long a frame waited; CPU time says who was busy. On Linux
every thread's user+system time is read from ``/proc/self/task/<tid>/stat`` and named
after the Python thread with that native id (threads that Python did not start, such as
ONNX Runtime's pool and ZMQ's I/O threads, are summed as ``native (onnxruntime, zmq,
...)``); other processes (the simulated camera) from ``/proc/<pid>/stat``. Elsewhere
only the whole process is measured (``time.process_time``) and per-thread figures are
absent, said so in the report.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = sys.platform.startswith("linux") and os.path.isdir("/proc/self/task")


def _stat_cpu_s(path: str) -> float | None:
    try:
        with open(path) as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(rest[11]) + int(rest[12])) / _TICK  # utime + stime


@dataclass
class CpuSnapshot:
    """CPU seconds at one moment: this process, each thread, and other processes."""

    wall_s: float
    process_s: float
    threads: dict[str, float] = field(default_factory=dict)
    others: dict[str, float] = field(default_factory=dict)


def snapshot(others: dict[str, int] | None = None) -> CpuSnapshot:
    """CPU times now; *others* maps a label to a process id to include (e.g. the camera)."""
    snap = CpuSnapshot(time.monotonic(), time.process_time())
    if _PROC:
        names = {t.native_id: t.name for t in threading.enumerate()}
        for tid in os.listdir("/proc/self/task"):
            v = _stat_cpu_s(f"/proc/self/task/{tid}/stat")
            if v is None:
                continue
            name = names.get(int(tid))
            if name is None:
                name = "native (onnxruntime, zmq, ...)"
            elif int(tid) == os.getpid():
                name = "main"
            snap.threads[name] = snap.threads.get(name, 0.0) + v
    for label, pid in (others or {}).items():
        if pid is None:
            continue
        v = _stat_cpu_s(f"/proc/{pid}/stat") if _PROC else None
        if v is not None:
            snap.others[label] = v
    return snap


def usage(a: CpuSnapshot, b: CpuSnapshot) -> dict:
    """CPU used between two snapshots: seconds and percent of one core, per thread and
    per process (threads that started after *a* count from zero)."""
    wall = max(b.wall_s - a.wall_s, 1e-9)

    def row(s: float) -> dict:
        return {"cpu_s": round(s, 3), "percent_of_one_core": round(100 * s / wall, 1)}

    threads = {k: row(v - a.threads.get(k, 0.0)) for k, v in sorted(b.threads.items())}
    threads = {k: v for k, v in threads.items() if v["cpu_s"] > 0}
    procs = {"this process (the loop)": row(b.process_s - a.process_s)}
    for k, v in b.others.items():
        procs[k] = row(v - a.others.get(k, 0.0))
    out = {"wall_s": round(wall, 3), "processes": procs, "threads": threads}
    if not _PROC:
        out["note"] = "per-thread CPU time is read from /proc (Linux only)"
    return out
