"""Declared low-rate events (:mod:`inscope.events`): every listener runs, a failing one is
logged with its traceback and never stops the others or the loop."""

from __future__ import annotations

import logging

from _support import sim_scope

from inscope.config import ControlConfig
from inscope.enums import Mode
from inscope.events import Signal
from inscope.pipeline import Pipeline


def test_signal_calls_listeners_in_order_and_logs_a_failing_one(caplog):
    sig: Signal[int] = Signal("thing")
    seen: list[tuple[str, int]] = []

    def broken(v: int) -> None:
        raise RuntimeError("listener bug")

    sig.connect(lambda v: seen.append(("a", v)))
    sig.connect(broken)
    b = sig.connect(lambda v: seen.append(("b", v)))
    sig.connect(b)  # twice: called once
    with caplog.at_level(logging.ERROR, logger="inscope.events"):
        sig.emit(3)
    assert seen == [("a", 3), ("b", 3)]
    (rec,) = caplog.records
    assert "'thing' failed on 3" in rec.getMessage() and rec.exc_info[0] is RuntimeError
    sig.disconnect(b)
    sig.disconnect(b)  # not connected: nothing happens
    sig.emit(4)
    assert seen[-1] == ("a", 4) and len(sig) == 2 and broken in sig


def test_pipeline_announces_mode_target_and_stop(detector):
    p = Pipeline(sim_scope(seed=1), detector, control=ControlConfig(mode="track"))
    events: list[tuple[str, object]] = []
    p.mode_changed.connect(lambda m: events.append(("mode", m)))
    p.target_changed.connect(lambda t: events.append(("target", t)))
    p.stopped.connect(lambda r: events.append(("stopped", r)))
    p.stopped.connect(lambda r: 1 / 0)  # a broken listener must not stop the stop
    p.start()
    try:
        p.set_mode("steer")
        p.set_target(f"class:{detector.class_names[0]}")
        p.set_target("7")
        p.request_stop("test over")
        assert p.wait(10)
    finally:
        p.stop()
    assert events == [("mode", Mode.STEER), ("target", f"class:{detector.class_names[0]}"),
                      ("target", 7),
                      ("stopped", "test over")]
    assert p.stop_reason == "test over"


def test_guard_announces_every_decision():
    scope = sim_scope(seed=1, shape=(64, 64))
    records = []
    scope.guard.moved.connect(records.append)
    scope.move_xy(5.0, 0.0)
    scope.guard.dry_run = True
    scope.move_xy(0.0, 0.0)
    assert [(r.target, r.made, r.reason) for r in records] == [
        ((5.0, 0.0), True, ""), ((0.0, 0.0), False, "dry-run")]
