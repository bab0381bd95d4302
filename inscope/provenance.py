"""Where a run's numbers came from: software and model versions, when, on what microscope.

One JSON-able dict, made once when a run starts, goes into ``summary.json``
(``"provenance"``), beside the records (``provenance.json``) and into the recorded
OME-TIFF (its ``Description``, ``AcquisitionDate`` and a ``MapAnnotation``). The wall-clock
start (ISO 8601, UTC) sits beside the ``time.monotonic_ns()`` value taken at the same
moment, so every monotonic stamp of the run converts to wall-clock time:
``start_utc + (stamp_ns - start_monotonic_ns) / 1e9``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file (cached per path, size and modification time)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def now_stamps() -> dict[str, Any]:
    """The wall clock (ISO 8601, UTC, ms) and ``time.monotonic_ns()`` read together."""
    mono = time.monotonic_ns()
    wall = _dt.datetime.now(_dt.UTC)
    return {"start_utc": wall.isoformat(timespec="milliseconds"), "start_monotonic_ns": mono}


def _safe(fn, default=None):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - provenance never stops a run
        log.debug("provenance: %s failed: %s", getattr(fn, "__name__", fn), e)
        return default


def microscope_info(scope: Any) -> dict[str, Any]:
    """Backend, pixel size and, for Micro-Manager, config file, channel group / preset and
    the core's version (with its device-interface number)."""
    info: dict[str, Any] = {
        "name": getattr(scope, "name", type(scope).__name__),
        "backend": getattr(scope, "backend", None),
        "pixel_size_um": _safe(lambda: float(scope.pixel_size_um)),
        "affine_um_per_px": _safe(lambda: [[float(v) for v in row] for row in scope.affine]),
    }
    core = getattr(scope, "core", None)
    if core is None:
        return info
    from inscope.acquisition.micromanager import headless_config

    cfg = headless_config() if getattr(scope, "backend", "") == "headless" else None
    if cfg is None:  # a pymmcore-plus core knows its own file
        wrapped = getattr(core, "wrapped", core)
        cfg = _safe(lambda: wrapped.systemConfigurationFile())
    group = _safe(lambda: str(core.get_channel_group())) or None
    info.update({
        "mm_config": str(cfg) if cfg else None,
        "pixel_size_configured": _safe(lambda: float(core.get_pixel_size_um()) > 0),
        "pixel_size_config": _safe(lambda: str(core.get_current_pixel_size_config())),
        "channel_group": group,
        "channel": _safe(lambda: str(core.get_current_config(group))) if group else None,
        "camera": getattr(scope, "camera", None),
        "mm_core_version": _safe(lambda: str(core.get_version_info())),
        "mm_api_version": _safe(lambda: str(core.get_api_version_info())),
    })
    return info


def detector_info(detector: Any) -> dict[str, Any]:
    """Name, provider, mirror views, a given enlargement size and, for a model file, its
    path and SHA-256."""
    path = getattr(detector, "model_path", None)
    return {
        "name": getattr(detector, "name", type(detector).__name__),
        "provider": getattr(detector, "provider", None),
        # (the boxes of 2 or 4 mirror views differ from one view's: inscope.detector.mirror)
        "mirror_views": int(getattr(detector, "mirror_views", 1)),
        # (None: the model card's scale.enlarge_below_px)
        "enlarge_below_px": getattr(detector, "enlarge_below_px", None),
        "model_path": str(path) if path else None,
        "model_sha256": _safe(lambda: sha256_file(path)) if path else None,
    }


def run_provenance(scope: Any, detector: Any, *, calibration: str | None = None,
                   stamps: dict[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record of one run (see module doc)."""
    from inscope import __version__

    return {
        "inscope_version": __version__,
        **(stamps or now_stamps()),
        "detector": detector_info(detector),
        "microscope": microscope_info(scope),
        "calibration": calibration,
    }
