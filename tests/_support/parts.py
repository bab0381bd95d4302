"""A stand-in for one part of a service (server, authenticator, publisher, detector,
microscope) in the tests of how a service closes: it records each ``stop`` / ``close``
and can fail it, which the real parts cannot be made to do on demand."""

from __future__ import annotations


class Part:
    """Records ``"<name>.stop"`` / ``"<name>.close"`` in *calls*; with *fails*, then
    raises RuntimeError: *fails* itself when it is a message, else
    ``"<name> would not <stop|close>"``. Its repr is *name* (closing logs it)."""

    def __init__(self, name: str, calls: list[str] | None = None,
                 fails: bool | str = False) -> None:
        self.name, self.fails = name, fails
        self.calls = [] if calls is None else calls

    def __repr__(self) -> str:
        return self.name

    def _do(self, what: str) -> None:
        self.calls.append(f"{self.name}.{what}")
        if self.fails:
            raise RuntimeError(self.fails if isinstance(self.fails, str)
                               else f"{self.name} would not {what}")

    def stop(self) -> None:
        self._do("stop")

    def close(self) -> None:
        self._do("close")
