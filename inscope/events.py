"""Declared, low-rate notifications: moves, mode and target changes, the end of a run.

A :class:`Signal` is declared where the event happens (``MoveGuard.moved``,
``Pipeline.events.mode_changed``) and anyone may :meth:`~Signal.connect` to it. Listeners
run in the emitting thread, in the order they connected; a listener that raises is
logged with its traceback and the others still run, so a broken listener can never stop
a move, a mode change or a stop, and is never silent either. Per-frame results do not
go through signals: they go to the outputs' bounded queues (:mod:`inscope.outputs`),
which drop rather than block.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Signal"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Signal(Generic[T]):
    """One kind of event, carrying one value of type ``T``.

    Parameters
    ----------
    name
        What happened, for the log line of a failing listener (e.g. ``"moved"``).
    """

    __slots__ = ("_listeners", "_lock", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._listeners: tuple[Callable[[T], object], ...] = ()
        self._lock = threading.Lock()

    def connect(self, listener: Callable[[T], object]) -> Callable[[T], object]:
        """Call *listener(value)* on every :meth:`emit`; returns it (usable as a
        decorator). Connecting the same callable twice calls it once."""
        with self._lock:
            if listener not in self._listeners:
                self._listeners = (*self._listeners, listener)
        return listener

    def disconnect(self, listener: Callable[[T], object]) -> None:
        """Stop calling *listener* (nothing happens if it is not connected)."""
        with self._lock:
            self._listeners = tuple(f for f in self._listeners if f != listener)

    def emit(self, value: T) -> None:
        """Call every listener with *value*; a failing listener is logged, never raised."""
        for listener in self._listeners:  # a snapshot: (dis)connecting while emitting is safe
            try:
                listener(value)
            except Exception:  # noqa: BLE001 - logged with its traceback, the others run
                log.exception("listener %r of %r failed on %r", listener, self.name, value)

    def __len__(self) -> int:
        return len(self._listeners)

    def __contains__(self, listener: object) -> bool:
        return listener in self._listeners

    def __repr__(self) -> str:
        return f"Signal({self.name!r}, {len(self)} listeners)"
