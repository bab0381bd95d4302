"""Soak benchmark: the whole service for a long time, to show that nothing grows or slows.

Runs the real service (``build_service`` + ``run_service``, as ``inscope run``) on the
simulated microscope at camera rate (real time, 10 ms exposure = 100 fps by default) with
the shipped model, steering + focus lock, detections recorded as JSONL into a temporary
folder, and a ZMQ subscriber attached that reads every message and counts the gaps in
``seq``. Every ``--sample-s`` seconds it samples the process's resident memory (RSS) and
the loop's counters. Reports, as JSON:

- RSS at the start (first sample), after the first minute, in the middle and at the end,
  and the change from the first minute to the end (the service should be flat within 5 %);
- frames processed per minute (fps per minute), drops, errors of every kind;
- the subscriber's count of messages and of gaps.

    python -m benchmarks.bench_soak [--minutes 10] [--out benchmarks/results/soak.json]

Figures depend on the machine and its load: on a shared CPU the fps per minute is noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time

from benchmarks._common import rss_mb, write_json


class Subscriber(threading.Thread):
    """Reads every detections message from the PUB socket; counts messages and seq gaps."""

    def __init__(self, address: str) -> None:
        super().__init__(name="soak-sub", daemon=True)
        import zmq

        self._sock = zmq.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"detections")
        self._sock.setsockopt(zmq.RCVTIMEO, 200)
        self._sock.connect(address)
        self._halt = threading.Event()
        self.messages = 0
        self.gaps = 0
        self.missed = 0
        self._last_seq: int | None = None

    def run(self) -> None:
        import zmq

        while not self._halt.is_set():
            try:
                _topic, data = self._sock.recv_multipart()
            except zmq.Again:
                continue
            seq = json.loads(data).get("seq")
            self.messages += 1
            if self._last_seq is not None and seq is not None and seq != self._last_seq + 1:
                self.gaps += 1
                self.missed += max(0, seq - self._last_seq - 1)
            self._last_seq = seq
        self._sock.close(0)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def soak(minutes: float, exposure_ms: float, sample_s: float, say=print) -> dict:
    from inscope.config import Config, with_overrides
    from inscope.service import build_service, run_service

    tmp = tempfile.TemporaryDirectory(prefix="inscope-soak-")
    cfg = Config()
    cfg = with_overrides(cfg, "microscope", backend="sim",
                         options={"exposure_ms": exposure_ms, "seed": 1})
    cfg = with_overrides(cfg, "control", mode="steer+focus")
    cfg = with_overrides(cfg, "outputs", window=False, snapshot_dir=tmp.name)
    cfg = with_overrides(cfg, "outputs.zmq", pub_port=0, rep_port=0)
    cfg = with_overrides(cfg, "outputs.records", dir=tmp.name)
    cfg = with_overrides(cfg, "run", seconds=minutes * 60.0, progress=False)
    svc = build_service(cfg, say=say)
    sub = Subscriber(svc.publisher.address)
    sub.start()
    p = svc.pipeline
    samples: list[dict] = []
    done = threading.Event()

    def sampler() -> None:
        t0 = time.monotonic()
        while not done.wait(sample_s if samples else 1.0):
            if not p.running:
                continue
            samples.append({"t_s": round(time.monotonic() - t0, 1), "rss_mb": rss_mb(),
                            "processed": p.processed, "dropped": p.dropped,
                            "detect_errors": p.detect_errors,
                            "control_errors": p.control_errors,
                            "subscriber_messages": sub.messages})

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    say(f"soak: {minutes:g} min on {svc.scope.name}, detector {svc.detector.name} on "
        f"{svc.detector.provider}, camera {1000.0 / exposure_ms:.0f} fps")
    summary = run_service(svc, progress=False, say=say)
    done.set()
    th.join(5)
    sub.stop()
    tmp.cleanup()
    return report(summary, samples, sub, minutes, exposure_ms)


def report(summary: dict, samples: list[dict], sub: Subscriber, minutes: float,
           exposure_ms: float) -> dict:
    rss = [(s["t_s"], s["rss_mb"]) for s in samples if s["rss_mb"] is not None]

    def rss_at(t: float) -> float | None:
        later = [r for ts, r in rss if ts >= t]
        return round(later[0], 1) if later else None

    start = round(rss[0][1], 1) if rss else None
    after_1min = rss_at(60.0)
    end = round(rss[-1][1], 1) if rss else None
    middle = rss_at(rss[-1][0] / 2.0) if rss else None
    flat = [r for ts, r in rss if ts >= 60.0]
    per_min = []
    samples = [{"t_s": 0.0, "processed": 0}, *samples]  # the loop starts from nothing
    for m in range(int(minutes)):
        a = [s for s in samples if s["t_s"] <= m * 60.0 + 1e-6]
        b = [s for s in samples if s["t_s"] <= (m + 1) * 60.0 + 1e-6]
        if a and b and b[-1]["t_s"] > a[-1]["t_s"]:
            per_min.append(round((b[-1]["processed"] - a[-1]["processed"])
                                 / (b[-1]["t_s"] - a[-1]["t_s"]), 2))
    outs = summary.get("outputs", {})
    return {
        "benchmark": "soak",
        "minutes": minutes,
        "camera_fps": round(1000.0 / exposure_ms, 1),
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                    "cpus": os.cpu_count()},
        "microscope": summary.get("microscope"),
        "detector": summary.get("detector"),
        "rss_mb": {
            "start": start, "after_1min": after_1min, "middle": middle, "end": end,
            "min_after_1min": round(min(flat), 1) if flat else None,
            "max_after_1min": round(max(flat), 1) if flat else None,
            "change_after_1min_pct": round(100.0 * (end - after_1min) / after_1min, 2)
            if end and after_1min else None,
        },
        "fps_per_minute": per_min,
        "frames": summary.get("frames"),
        "acquired": summary.get("acquired"),
        "dropped": summary.get("dropped"),
        "fps": summary.get("fps"),
        "errors": {"detect": summary.get("detect_errors"),
                   "control": summary.get("control_errors"),
                   "outputs": {k: o.get("errors") for k, o in outs.items()},
                   "run": summary.get("error")},
        "output_drops": {k: o.get("dropped") for k, o in outs.items()},
        "zmq": {k: outs.get("zmq-pub", {}).get(k) for k in ("sent", "zmq_dropped")},
        "subscriber": {"messages": sub.messages, "seq_gaps": sub.gaps,
                       "missed": sub.missed},
        "latency_ms_ready_to_published": summary.get("latency_ms", {}).get(
            "ready_to_published"),
        "stop_reason": summary.get("stop_reason"),
        "samples": samples[1:],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length (default 10)")
    ap.add_argument("--exposure-ms", type=float, default=10.0,
                    help="camera exposure = frame period (default 10 ms: 100 fps)")
    ap.add_argument("--sample-s", type=float, default=10.0, help="sampling period (s)")
    ap.add_argument("--out", default="benchmarks/results/soak.json")
    args = ap.parse_args(argv)
    if not (args.minutes > 0 and args.exposure_ms > 0 and args.sample_s > 0):
        ap.error("--minutes, --exposure-ms and --sample-s must be > 0")
    res = soak(args.minutes, args.exposure_ms, args.sample_s)
    out = write_json(args.out, res)
    r = res["rss_mb"]
    print(f"RSS MiB start {r['start']} / 1 min {r['after_1min']} / middle {r['middle']} / "
          f"end {r['end']} ({r['change_after_1min_pct']} % after the first minute); fps per "
          f"minute {res['fps_per_minute']}; dropped {res['dropped']}; errors "
          f"{res['errors']}; subscriber {res['subscriber']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
