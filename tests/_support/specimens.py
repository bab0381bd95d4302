"""Specimens for the simulated camera's process tests (importable from its spawned
child, which unpickles them by module name)."""

from __future__ import annotations

from inscope.acquisition.simulated.specimen import Specimen


class FailingSpecimen(Specimen):
    """Looks cells up normally for *good* frames, then raises: a renderer that breaks
    inside the camera process."""

    def __init__(self, cfg, good: int = 3) -> None:
        super().__init__(cfg)
        self.good = good
        self.looks = 0

    def cells_near(self, *args, **kw):
        self.looks += 1
        if self.looks > self.good:
            raise RuntimeError("the renderer broke")
        return super().cells_near(*args, **kw)
