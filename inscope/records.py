"""Run records: detections as JSONL (default) or CSV, raw frames as a replayable OME-TIFF.

Encoded and written in the records output's own thread, in batches (every
``flush_s`` = 0.25 s or ``batch`` = 64 frames, and at stop), so the disk is touched a few
times a second whatever the frame rate; a crash loses at most the last batch. The frames
file is a plain multi-page TIFF while the run lasts (one page per frame: linear in size
and time, readable after a crash) and becomes an OME-TIFF at close: a single (T, Y, X)
series with the pixel size and every plane's stage position, so a run replays through
``open_microscope("replay", path=".../frames.ome.tif")`` with its real positions.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from array import array
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from inscope.enums import RecordFormat
from inscope.outputs import Output, Result

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

CSV_COLUMNS = ("frame_index", "seq", "t_ready_ns", "stage_x_um", "stage_y_um", "stage_z_um",
               "x0", "y0", "x1", "y1", "center_x_um", "center_y_um", "score", "class",
               "track_id", "is_target")


#: ImageDescription of the first page until the recording is closed (then OME-XML).
PLACEHOLDER_DESCRIPTION = ("inscope recording in progress: a plain multi-page TIFF, one page "
                           "per frame; OME metadata is written when the recording closes")


class OmeTiffAppender:
    """Append 2-D frames to a TIFF, one page per frame, and make it an OME-TIFF at close.

    Why not tifffile's own OME writer: it writes the OME-XML into the first page when the
    file is opened and, in contiguous mode, keeps every page's IFD until close, so a crash
    left one readable frame (and re-describing the series per frame made the file grow
    quadratically). Here each frame is one page with its own IFD, written and flushed at
    once, so the file is linear in the frames and every frame written before a crash
    (even SIGKILL) reads back as a plain stack. :meth:`close` then replaces the first
    page's description with OME-XML (pixel size, every plane's stage position and time)
    without rewriting the pixels (``tifffile.tiffcomment`` appends the longer text at the
    end of the file and repoints the tag).
    """

    def __init__(self, path: str | Path, *, pixel_size_um: float | None = None,
                 fps: float | None = None, channel: str | None = None,
                 provenance: dict | None = None) -> None:
        import tifffile

        self.path = Path(path)
        self._tw: tifffile.TiffWriter | None = tifffile.TiffWriter(self.path, bigtiff=True)
        self._meta: dict = {"Channel": {"Name": channel or "camera"}}
        self._page_kw: dict = {}
        if pixel_size_um:
            self._meta.update(PhysicalSizeX=float(pixel_size_um),
                              PhysicalSizeY=float(pixel_size_um))
            # TIFF resolution tags too (pixels per cm: TIFF has no µm unit), so plain TIFF
            # readers such as Fiji's File > Open show µm, not pixels
            ppcm = 1e4 / float(pixel_size_um)
            self._page_kw = {"resolution": (ppcm, ppcm), "resolutionunit": "CENTIMETER"}
        if provenance:
            self._meta.update(_ome_provenance(provenance))
        if fps:
            self._meta["TimeIncrement"] = 1.0 / float(fps)
        # compact per-plane metadata (32 bytes a frame) for the OME-XML at close
        self._planes = {k: array("d") for k in ("PositionX", "PositionY", "PositionZ",
                                                "DeltaT")}
        self._shape: tuple[tuple[int, ...], np.dtype] | None = None
        self._t0: int | None = None
        self.count = 0

    def append(self, frame) -> None:
        px = frame.pixels
        if self._shape is None:
            self._shape = (px.shape, px.dtype)
        elif (px.shape, px.dtype) != self._shape:
            raise ValueError(
                f"frame {frame.index} is {px.shape} {px.dtype} but the recording holds "
                f"{self._shape[0]} {self._shape[1]}; a camera ROI/bit-depth change needs "
                "a new recording.")
        assert self._tw is not None, "appending after close"
        self._tw.write(px, photometric="minisblack", metadata=None, contiguous=False,
                       description=PLACEHOLDER_DESCRIPTION if self.count == 0 else None,
                       software="inscope", **self._page_kw)
        self._tw.filehandle.flush()
        p = frame.position
        t = frame.stamps.get("ready", 0)
        self._t0 = t if self._t0 is None else self._t0
        pl = self._planes
        for k, v in zip(("PositionX", "PositionY", "PositionZ"),
                        (p.x, p.y, p.z) if p is not None else (0.0, 0.0, 0.0), strict=True):
            pl[k].append(float(v))
        pl["DeltaT"].append((t - self._t0) * 1e-9)
        self.count += 1

    def ome_xml(self) -> str:
        """The OME-XML describing the pages written so far."""
        import tifffile

        assert self._shape is not None, "no frame appended yet"
        (h, w), dtype = self._shape
        ome = tifffile.OmeXml()
        ome.addimage(dtype, (self.count, h, w), (self.count, 1, 1, h, w, 1), axes="TYX",
                     **self._meta, Plane={k: list(v) for k, v in self._planes.items()})
        return ome.tostring(declaration=True)

    def close(self) -> None:
        if self._tw is None:
            return
        tw, self._tw = self._tw, None
        tw.close()
        if self.count == 0:
            return
        import tifffile

        try:
            tifffile.tiffcomment(self.path, self.ome_xml().encode(), pageindex=0)
        except (OSError, ValueError) as e:
            log.warning("OME metadata of %s could not be written (%s); the %d frames are "
                        "there and read as a plain stack.", self.path, e, self.count)


def _ome_provenance(prov: dict) -> dict:
    """OME ``Description``, ``AcquisitionDate`` and a flat ``MapAnnotation`` of *prov*."""
    det, mic = prov.get("detector") or {}, prov.get("microscope") or {}
    flat = {"inscope_version": prov.get("inscope_version"),
            "start_utc": prov.get("start_utc"),
            "start_monotonic_ns": prov.get("start_monotonic_ns"),
            "model": det.get("name"), "model_sha256": det.get("model_sha256"),
            "provider": det.get("provider"), "microscope": mic.get("name"),
            "mm_config": mic.get("mm_config"), "pixel_size_um": mic.get("pixel_size_um"),
            "channel_group": mic.get("channel_group"), "channel": mic.get("channel"),
            "calibration": prov.get("calibration")}
    flat = {k: str(v) for k, v in flat.items() if v is not None}
    out: dict = {"Description": f"inscope {prov.get('inscope_version')} run, model "
                                f"{det.get('name')} sha256 {det.get('model_sha256')}",
                 "MapAnnotation": flat}
    if prov.get("start_utc"):
        out["AcquisitionDate"] = str(prov["start_utc"]).replace("+00:00", "")
    return out


class RecordsOutput(Output):
    """Writes every processed frame's detections (and optionally the frame) to *directory*.

    Parameters
    ----------
    directory
        Created if missing. Files: ``detections.jsonl`` or ``detections.csv``,
        ``frames.ome.tif`` (when *frames*).
    format
        ``"jsonl"``: one :func:`inscope.schema.detections_message` per line (the ZMQ
        message, so the same client code reads both). ``"csv"``: one row per detection.
    frames
        Also record the raw frames (replayable OME-TIFF).
    batch, flush_s
        Detections are written (and flushed) once *batch* frames are waiting or
        *flush_s* seconds have passed, whichever comes first.
    """

    name = "records"
    queue_size = 256

    def __init__(self, directory: str | Path, format: str = "jsonl", frames: bool = False,
                 *, fps: float | None = None, queue_size: int | None = None,
                 batch: int = 64, flush_s: float = 0.25) -> None:
        super().__init__(queue_size)
        self.batch, self.flush_s = max(1, int(batch)), float(flush_s)
        self._buf = io.StringIO()
        self._pending = 0
        self._last_flush = time.monotonic()
        self.flushes = 0
        if format not in tuple(RecordFormat):
            raise ValueError(f"records format must be one of {', '.join(RecordFormat)}; got "
                             f"{format!r}.")
        self.dir = Path(directory)
        self.format, self.frames, self.fps = format, frames, fps
        self.detections_path = self.dir / f"detections.{format}"
        self.frames_path = self.dir / "frames.ome.tif" if frames else None
        self._fh: IO[str] | None = None
        self._csv: Any = None  # a csv writer
        self._tif: OmeTiffAppender | None = None
        self.rows = 0
        #: run provenance (see :mod:`inscope.provenance`), written as provenance.json and
        #: into the OME-TIFF when set before the output starts
        self.provenance: dict | None = None

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.provenance:
            (self.dir / "provenance.json").write_text(
                json.dumps(self.provenance, indent=2, default=str) + "\n", encoding="utf-8")
        self._fh = open(self.detections_path, "w", newline="" if self.format == "csv" else None,
                        encoding="utf-8")
        if self.format == "csv":
            self._csv = csv.writer(self._buf)
            self._csv.writerow(CSV_COLUMNS)

    def handle(self, r: Result) -> None:
        if self.frames:
            if self._tif is None:
                assert self.frames_path is not None  # set with frames=True
                mic = (self.provenance or {}).get("microscope") or {}
                self._tif = OmeTiffAppender(self.frames_path,
                                            pixel_size_um=r.frame.pixel_size_um, fps=self.fps,
                                            channel=mic.get("channel") or mic.get("camera"),
                                            provenance=self.provenance)
            self._tif.append(r.frame)
        msg, data = r.message()
        if self._csv is None:
            self._buf.write(data.decode())
            self._buf.write("\n")
        else:
            st = msg["stage_um"] or {"x": "", "y": "", "z": ""}
            for d in msg["detections"]:
                cu = d["center_um"] or ["", ""]
                self._csv.writerow([
                    msg["frame_index"], r.seq, msg["stamps_ns"].get("ready", ""),
                    st["x"], st["y"], st["z"], *d["box_px"], *cu, d["score"], d["class"],
                    "" if d["track_id"] is None else d["track_id"],
                    int(d["track_id"] is not None and d["track_id"] == r.target_id)])
        self.rows += 1
        self._pending += 1
        if self._pending >= self.batch or time.monotonic() - self._last_flush >= self.flush_s:
            self._flush()

    def _flush(self) -> None:
        if self._fh is None:
            return
        self._fh.write(self._buf.getvalue())
        self._fh.flush()
        self._buf.seek(0)
        self._buf.truncate()
        self._pending = 0
        self._last_flush = time.monotonic()
        self.flushes += 1

    def close(self) -> None:
        # close both files even if the first fails (a full disk fails the last flush)
        try:
            self._flush()
        finally:
            fh, self._fh = self._fh, None
            try:
                if fh is not None:
                    fh.close()
            finally:
                if self._tif is not None:
                    self._tif.close()

    def stats(self) -> dict:
        return {**super().stats(), "detections": str(self.detections_path),
                "frames": str(self.frames_path) if self.frames_path else None,
                "frames_written": self._tif.count if self._tif else 0}


#: The files a records folder gets (any format): an earlier run's are never written over.
RECORD_FILES = ("detections.jsonl", "detections.csv", "frames.ome.tif", "provenance.json")


def earlier_records(directory: str | Path) -> list[str]:
    """The files of an earlier run's records in *directory* (empty: none, or no folder).

    A new run into the same folder would replace its detections and frames, and a run of
    the other format would leave them beside its own under a new provenance.json, so
    the service refuses such a folder before it starts. A link (e.g. to a device) is
    written through, not replaced, and is not counted.
    """
    d = Path(directory)
    return [n for n in RECORD_FILES if (d / n).is_file() and not (d / n).is_symlink()]


def simulated_records(directory: str | Path) -> bool:
    """Whether *directory*'s records come from the simulated microscope (by their
    provenance.json, else the run's summary.json, as an older demo left it): the demo
    makes those again from its seed, so it may replace them."""
    d = Path(directory)
    for name, read in (("provenance.json", lambda j: (j.get("microscope") or {}).get("name")),
                       ("summary.json", lambda j: j.get("microscope"))):
        try:
            return read(json.loads((d / name).read_text(encoding="utf-8"))) == "simulated"
        except FileNotFoundError:
            continue
        except (OSError, ValueError, AttributeError):
            return False
    return False


def read_jsonl(path: str | Path) -> list[dict]:
    """All messages of a ``detections.jsonl`` record (a truncated last line is skipped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out
