"""Run records: detections as JSONL (default) or CSV, raw frames as a replayable OME-TIFF.

Encoded and written in the records output's own thread, in batches (every
``flush_s`` = 0.25 s or ``batch`` = 64 frames, and at stop), so the disk is touched a few
times a second whatever the frame rate; a crash loses at most the last batch. The
OME-TIFF is a single (T, Y, X) series with the pixel size and every plane's stage
position, so a run replays through
``open_microscope("replay", path=".../frames.ome.tif")`` with its real positions.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from pathlib import Path

from inscope import schema
from inscope.outputs import Output, Result

log = logging.getLogger("inscope")

CSV_COLUMNS = ("frame_index", "seq", "t_ready_ns", "stage_x_um", "stage_y_um", "stage_z_um",
               "x0", "y0", "x1", "y1", "center_x_um", "center_y_um", "score", "class",
               "track_id", "is_target")


class OmeTiffAppender:
    """Append 2-D frames to one OME-TIFF series, one page per frame, flushed per frame.

    tifffile writes OME-XML when the file is closed, from the metadata of the first write;
    we keep that metadata dict and extend its per-plane positions as frames arrive. If
    the process dies before :meth:`close`, the pages are still on disk (tifffile reads
    them as a plain stack), and the detections record holds each frame's position.
    """

    def __init__(self, path: str | Path, *, pixel_size_um: float | None = None,
                 fps: float | None = None) -> None:
        import tifffile

        self.path = Path(path)
        self._tw = tifffile.TiffWriter(self.path, bigtiff=True, ome=True)
        self._meta: dict = {"axes": "TYX", "Plane": {"PositionX": [], "PositionY": [],
                                                     "PositionZ": [], "DeltaT": []}}
        if pixel_size_um:
            self._meta.update(PhysicalSizeX=float(pixel_size_um),
                              PhysicalSizeY=float(pixel_size_um))
        if fps:
            self._meta["TimeIncrement"] = 1.0 / float(fps)
        self._shape = None
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
        p = frame.position
        t = frame.stamps.get("ready", 0)
        self._t0 = t if self._t0 is None else self._t0
        plane = self._meta["Plane"]
        for k, v in zip(("PositionX", "PositionY", "PositionZ"),
                        (p.x, p.y, p.z) if p is not None else (0.0, 0.0, 0.0), strict=True):
            plane[k].append(float(v))
        plane["DeltaT"].append((t - self._t0) * 1e-9)
        self._tw.write(px, contiguous=True, metadata=self._meta if self.count == 0 else None)
        self._tw._fh.flush()
        self.count += 1

    def close(self) -> None:
        if self._tw is None:
            return
        tw, self._tw = self._tw, None
        if self.count == 0:
            tw.close()
            return
        # tifffile's contiguous writing grows the series' data shape but not the stored
        # page count that its OME-XML writer checks; set it to the frames written.
        try:
            tw._storedshape.frames = self.count
        except AttributeError:  # a future tifffile: let it write what it can
            pass
        try:
            tw.close()
        except ValueError as e:
            log.warning("OME metadata of %s could not be written (%s); the pages are "
                        "there and read as a plain stack.", self.path, e)
            tw._omexml = None
            tw.close()


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
        if format not in ("jsonl", "csv"):
            raise ValueError(f"records format must be 'jsonl' or 'csv'; got {format!r}.")
        self.dir = Path(directory)
        self.format, self.frames, self.fps = format, frames, fps
        self.detections_path = self.dir / f"detections.{format}"
        self.frames_path = self.dir / "frames.ome.tif" if frames else None
        self._fh = None
        self._csv = None
        self._tif: OmeTiffAppender | None = None
        self.rows = 0

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.detections_path, "w", newline="" if self.format == "csv" else None,
                        encoding="utf-8")
        if self.format == "csv":
            self._csv = csv.writer(self._buf)
            self._csv.writerow(CSV_COLUMNS)

    def handle(self, r: Result) -> None:
        if self.frames:
            if self._tif is None:
                self._tif = OmeTiffAppender(self.frames_path,
                                            pixel_size_um=r.frame.pixel_size_um, fps=self.fps)
            self._tif.append(r.frame)
        msg = schema.detections_message(r.frame, r.detections, tracks=r.tracks,
                                        target_id=r.target_id, control=r.control,
                                        focus=r.focus, extra={"seq": r.seq})
        if self._csv is None:
            self._buf.write(schema.dumps(msg).decode())
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
        if self._fh is not None:
            self._flush()
            self._fh.close()
            self._fh = None
        if self._tif is not None:
            self._tif.close()

    def stats(self) -> dict:
        return {**super().stats(), "detections": str(self.detections_path),
                "frames": str(self.frames_path) if self.frames_path else None,
                "frames_written": self._tif.count if self._tif else 0}


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
