"""The AR overlay: boxes, labels, track ids, the target, focus, fps and latency on the frame.

Rendering runs in the overlay output's thread (never in the detection loop), at a display
rate (default 30 frames/s): results arriving between two display ticks are skipped at
``submit`` (counted, never queued), so drawing and encoding cost a fixed budget whatever
the camera rate. It feeds a window, a video file and/or the ZMQ overlay stream; the video
is written on the same tick grid (a frame repeated when the loop fell behind a tick), so
it plays at the rate it was recorded at. In eyepiece mode the window instead
shows :class:`inscope.eyepiece.EyepieceRenderer`'s black image with boxes only, mapped
onto the display that is back-projected into the eyepiece.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inscope.detector.preprocess import DEFAULT_NORMALISATION, without_hot_pixels
from inscope.enums import SteerStatus
from inscope.events import Signal
from inscope.outputs import STAMP_PUBLISHED, Output, Result

#: the detector's margin for calling a pixel hot, also for the display's stretch
HOT_PIXEL_SIGMA = float(DEFAULT_NORMALISATION["hot_pixel_sigma"])

log = logging.getLogger(__name__)

# BGR colours
GREEN = (80, 220, 80)
YELLOW = (0, 220, 255)
MAGENTA = (255, 80, 255)
WHITE = (255, 255, 255)
CYAN = (255, 220, 0)


@dataclass
class OverlayStyle:
    box_color: tuple[int, int, int] = GREEN
    target_color: tuple[int, int, int] = YELLOW
    truth_color: tuple[int, int, int] | None = None  # draw ground truth when set
    thickness: int = 1
    target_thickness: int = 2
    font_scale: float = 0.4
    labels: bool = True
    max_labels: int = 40  # above this many boxes only the target is labelled (clutter)
    crosshair: bool = True
    status_bar: bool = True


def to_display(pixels: np.ndarray, low: float = 0.5, high: float = 99.8,
               subsample: int = 4) -> np.ndarray:
    """Contrast-stretch any frame to 8-bit for display: the *low* percentile and below
    black, the *high* one and above white.

    Percentiles over a strided subsample (every *subsample*-th row and column) cost a
    fraction of a full-frame percentile (~0.5 vs ~3 ms on 512x512 uint16);
    ``cv2.convertScaleAbs`` then scales and saturates in one pass. Hot pixels are
    lowered in the sample first (:func:`inscope.detector.preprocess.without_hot_pixels`):
    from 0.2 % of the frame the top percentile lay on them and every cell was shown
    nearly black. They are still shown, white, as the camera gave them.
    """
    if pixels.dtype == np.uint8 and subsample <= 0:
        return pixels
    sample = pixels[::max(1, subsample), ::max(1, subsample)]
    if sample.dtype.kind == "f" and not np.isfinite(sample).all():
        # NaN or inf pixels (a broken column, a division by zero in a flat field): the
        # percentiles of the finite ones; NaN and -inf shown black, +inf white (before,
        # inf became the largest float and the rest of the frame black)
        finite = sample[np.isfinite(sample)]
        if finite.size == 0:
            return np.zeros(pixels.shape, np.uint8)
        lo, hi = np.percentile(finite, (low, high))
        pixels = np.nan_to_num(pixels, nan=lo, posinf=hi, neginf=lo)
    else:
        sample = without_hot_pixels(np.ascontiguousarray(sample), HOT_PIXEL_SIGMA)
        lo, hi = np.percentile(sample, (low, high))
    return stretch_to_uint8(pixels, float(lo), float(hi))


def stretch_to_uint8(pixels: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """*pixels* mapped linearly to uint8, *lo* and below to 0, *hi* and above to 255.

    ``cv2.convertScaleAbs`` scales and saturates in one pass but takes the absolute
    value: a pixel below *lo* (a dead pixel, the darkest 0.5 %) came out grey or white,
    as bright as one as far above it; it is set black (one compare and a masked write,
    ~0.1 ms at 512 x 512). Used by the overlay and by the eyepiece calibration's image.
    """
    scale = 255.0 / max(hi - lo, 1e-6)
    out = cv2.convertScaleAbs(pixels, alpha=scale, beta=-lo * scale)
    out[pixels < lo] = 0
    return out


class OverlayRenderer:
    """Draws one :class:`~inscope.outputs.Result` onto its frame (BGR uint8).

    Parameters
    ----------
    style
        Colours and what to draw.
    """

    def __init__(self, style: OverlayStyle | None = None) -> None:
        self.style = style or OverlayStyle()

    def render(self, r: Result, *, fps: float | None = None,
               latency_ms: float | None = None, mode: str | None = None) -> np.ndarray:
        st = self.style
        img = cv2.cvtColor(to_display(r.frame.pixels), cv2.COLOR_GRAY2BGR)
        h, w = img.shape[:2]
        dets = r.detections
        if st.truth_color is not None and r.frame.truth is not None:
            for b in np.asarray(r.frame.truth).reshape(-1, 4):
                cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])),
                              st.truth_color, 1, cv2.LINE_4)
        tids = r.track_ids()
        names = dets.names()
        # halves round up, all alike: np.rint rounds them to even, so a box on pixel
        # edges (x.5, the classical detector's) was drawn 2 px wider or narrower with
        # each pixel its cell moved
        boxes = np.floor(np.asarray(dets.boxes, np.float64) + 0.5).astype(np.int32)
        target_box = None
        for i, b in enumerate(boxes):
            is_target = r.target_id is not None and tids[i] == r.target_id
            color = st.target_color if is_target else st.box_color
            cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), color,
                          st.target_thickness if is_target else st.thickness, cv2.LINE_AA)
            if is_target:
                target_box = b
            if st.labels and (is_target or len(boxes) <= st.max_labels):
                label = f"{names[i]} {dets.scores[i]:.2f}"
                if tids[i] is not None:
                    label = f"#{tids[i]} " + label
                cv2.putText(img, label, (int(b[0]), max(int(b[1]) - 3, 10)),
                            cv2.FONT_HERSHEY_SIMPLEX, st.font_scale, color, 1, cv2.LINE_AA)
        if st.crosshair:
            cx, cy = w // 2, h // 2
            cv2.drawMarker(img, (cx, cy), MAGENTA, cv2.MARKER_CROSS, 14, 1)
            if target_box is not None:
                tx = int((target_box[0] + target_box[2]) / 2)
                ty = int((target_box[1] + target_box[3]) / 2)
                cv2.line(img, (cx, cy), (tx, ty), st.target_color, 1, cv2.LINE_AA)
        if st.status_bar:
            line = status_line(r)
            if line:
                cv2.rectangle(img, (0, h - 16), (w, h), (0, 0, 0), -1)
                cv2.putText(img, line, (4, h - 4), cv2.FONT_HERSHEY_SIMPLEX, st.font_scale,
                            CYAN, 1, cv2.LINE_AA)
            cv2.rectangle(img, (0, 0), (w, 16), (0, 0, 0), -1)
            cv2.putText(img, header_line(r, fps, latency_ms, mode), (4, 12),
                        cv2.FONT_HERSHEY_SIMPLEX, st.font_scale, WHITE, 1, cv2.LINE_AA)
        return img


def header_line(r: Result, fps: float | None = None, latency_ms: float | None = None,
                mode: str | None = None) -> str:
    """The overlay's top bar: frame number, detections, rate, latency, mode, target and
    focus state (what the loop is doing is :func:`status_line`, at the bottom)."""
    parts = [f"#{r.frame.index}", f"{len(r.detections)} det"]
    if fps is not None:
        parts.append(f"{fps:.1f} fps")
    if latency_ms is not None:
        parts.append(f"{latency_ms:.1f} ms")
    if mode:
        parts.append(mode)
    if r.target_id is not None:
        parts.append(f"target #{r.target_id}")
    if r.focus:
        parts.append(f"focus {r.focus.get('state', '?')}")
    return "  ".join(parts)


def status_line(r: Result) -> str:
    """What the loop is doing, in words: the mission (tour), steering and focus."""
    parts = []
    c = r.control or {}
    tour = c.get("tour")
    if tour:
        parts.append(tour.get("line") or tour.get("phase", ""))
    st = c.get("status")
    tid = c.get("target_id")
    if st:
        err = c.get("error_norm_um")
        words = {"moved": "stage moving to", "centred": "centred on", "moving": "stage moving",
                 "settling": "stage settling", "no-target": "looking for a target",
                 "refused": "move refused", "dry-run": "dry-run move to",
                 "waiting-focus": "stage waits for the focus check"}.get(st, st)
        txt = f"{words} #{tid}" if tid is not None and st in (
            SteerStatus.MOVED, SteerStatus.CENTERED, SteerStatus.DRY_RUN) else words
        if err is not None and st in (SteerStatus.MOVED, SteerStatus.CENTERED):
            txt += f" ({err:.1f} um)"
        parts.append(txt)
    f = r.focus or {}
    if f.get("state"):
        z = f.get("z_center")
        words = {"locked": "focus locked", "acquiring": "finding focus",
                 "correcting": "focus drifted: correcting", "checking": "checking focus",
                 "moving": "focus: frame skipped (moving)", "settling": "focus settling",
                 "lost": "focus lost"}.get(f["state"], f"focus {f['state']}")
        parts.append(words + (f" z={z:+.2f} um" if isinstance(z, (int, float)) else ""))
    if r.frame.moving:
        parts.append("[frame taken while moving]")
    return " | ".join(p for p in parts if p)


# -- sinks -----------------------------------------------------------------------------
def display_available() -> bool:
    """True if a window can be shown: a display is set and OpenCV's highgui works."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("inscope-probe", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("inscope-probe")
        return True
    except cv2.error:
        return False


class VideoSink:
    """A cv2.VideoWriter that is verified to be open, with a fallback codec.

    ``.mp4`` is written with ``mp4v``, ``.avi`` with ``MJPG``. If the requested writer does
    not open (codec missing in this OpenCV build), the other one is tried and the path's
    suffix changed accordingly, with one clear log line. A frame of odd width or height
    gets one black column or row at the right or bottom (the encoders take even sizes).
    """

    CODECS = {".mp4": "mp4v", ".avi": "MJPG"}

    def __init__(self, path: str | Path, fps: float = 20.0) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        if not 0.1 <= self.fps <= 240:  # inf/NaN made the writer hang, then write nothing
            raise ValueError(f"video fps = {fps!r} is not allowed; use a finite number in "
                             "[0.1, 240] (outputs.video_fps).")
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0

    def _open(self, size: tuple[int, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        suffix = self.path.suffix.lower()
        if suffix not in self.CODECS:
            raise ValueError(f"video path {self.path} must end in .mp4 or .avi; change "
                             "--video to e.g. runs/overlay.mp4.")
        tried = []
        for sfx in (suffix, *[s for s in self.CODECS if s != suffix]):
            path = self.path.with_suffix(sfx)
            fourcc = cv2.VideoWriter_fourcc(*self.CODECS[sfx])  # type: ignore[attr-defined]
            w = cv2.VideoWriter(str(path), fourcc,
                                self.fps, size)
            if w.isOpened():
                if path != self.path:
                    log.warning("video: %s (%s) did not open in this OpenCV build; writing "
                                "%s (%s) instead", self.path, self.CODECS[suffix], path,
                                self.CODECS[sfx])
                self.path, self._writer = path, w
                return
            tried.append(f"{path.name} ({self.CODECS[sfx]})")
        raise OSError(f"cannot open a video writer for {', '.join(tried)}; check that the "
                      "folder is writable and OpenCV has video support "
                      "(pip install opencv-python).")

    #: Stop before the disk is full: OpenCV's FFmpeg writer does not raise on a failed
    #: write (it prints a line per frame) and needs room left to finish the file.
    MIN_FREE_BYTES = 1 << 20

    def write(self, img: np.ndarray) -> None:
        # the encoders (mp4v, MJPG) take even sizes only and silently dropped the last
        # column and row of an odd frame (517 x 333 played as 516 x 332, cutting boxes at
        # the edge): one black column / row is added instead, every pixel where it was
        h, w = img.shape[:2]
        if h % 2 or w % 2:
            img = cv2.copyMakeBorder(img, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=0)
        if self._writer is None:
            self._open((img.shape[1], img.shape[0]))
        free = shutil.disk_usage(self.path.parent).free
        if free < self.MIN_FREE_BYTES + img.nbytes:
            raise OSError(errno.ENOSPC, f"No space left on device ({free} bytes free, the "
                          "video stops here and is finalised)", str(self.path))
        assert self._writer is not None  # opened above (or raised)
        self._writer.write(img)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class OverlayOutput(Output):
    """Renders the overlay at a display rate and sends it to a video file, a window
    and/or ZMQ.

    Parameters
    ----------
    video
        Path of an .mp4/.avi file, or None.
    video_fps
        Frame rate of the video and of the tick grid it is written on (None: the
        display rate). Each tick holds the newest frame rendered by then, so the video
        plays in real time.
    display_fps
        Render rate: a result whose frame is ready less than ``1 / display_fps`` after
        the last one accepted is skipped at :meth:`submit` (counted in ``skipped``).
    window
        True: show a window (if a display is available); None: show one only if it is.
        Without a display, one info line says so and the window is skipped.
    publisher
        A :class:`inscope.zmq_api.PubOutput` to stream rendered frames through
        (``[b"overlay", header, pixels]``), or None.
    eyepiece
        A :class:`inscope.eyepiece.EyepieceRenderer`; the window then shows the eyepiece
        image (black, boxes only) and the publisher also gets it (``kind="eyepiece"``).

    Attributes
    ----------
    quit_requested
        Emitted (from this output's thread) when the user presses ``q`` or Esc in the
        window (:class:`inscope.events.Signal`).
    """

    name = "overlay"
    queue_size = 2  # overlay is for eyes: newest frames matter, old ones are dropped

    def __init__(self, *, video: str | Path | None = None, video_fps: float | None = None,
                 display_fps: float = 30.0, window: bool | None = None, publisher=None,
                 eyepiece=None, style: OverlayStyle | None = None, mode: str | None = None,
                 title: str = "inscope") -> None:
        super().__init__()
        if not display_fps > 0:
            raise ValueError(f"display_fps must be > 0; got {display_fps}.")
        self.display_fps = float(display_fps)
        self.renderer = OverlayRenderer(style)
        self.video_fps = float(video_fps or display_fps)
        self.video = VideoSink(video, self.video_fps) if video else None
        self.window_wanted = window
        self.window = False
        self.publisher = publisher
        self.eyepiece = eyepiece
        self.mode = mode
        self.quit_requested: Signal[str] = Signal("quit_requested")
        self.title = title
        self._fps: float | None = None
        self._last_ready: int | None = None
        self._period_ns = int(1e9 / self.display_fps)
        self._next_ns: int | None = None
        self._t0: int | None = None  # ready stamp of the first video frame
        self._tick = -1  # last video tick written
        self._held: np.ndarray | None = None  # the image drawn last: the video's until the next
        self.skipped = 0
        self.last_image: np.ndarray | None = None

    def submit(self, item: Result) -> bool:
        """Accept *item* if a display tick has passed since the last one accepted; skip
        it otherwise (cheap: one comparison in the publishing thread)."""
        t = item.stamps.get("ready", 0)
        if self._next_ns is not None and t < self._next_ns:
            self.skipped += 1
            return True
        if self._t0 is None:
            self._t0 = t  # the video's time zero: the first frame offered, not rendered
        nxt = (self._next_ns or t) + self._period_ns
        self._next_ns = nxt if nxt > t else t + self._period_ns // 2  # never run behind
        return super().submit(item)

    def open(self) -> None:
        if self.window_wanted is not False:
            self.window = display_available()
            if not self.window and self.window_wanted is None:
                log.info("no display available (DISPLAY unset or OpenCV without GUI): "
                         "not showing the overlay window")
            elif not self.window:
                log.warning("an overlay window was asked for but no display is available "
                            "(DISPLAY unset or OpenCV without GUI); not showing it")

    def handle(self, r: Result) -> None:
        t = r.stamps.get("ready")
        if self._last_ready is not None and t and t > self._last_ready:
            inst = 1e9 / (t - self._last_ready)
            self._fps = inst if self._fps is None else 0.9 * self._fps + 0.1 * inst
        self._last_ready = t
        lat = None
        if STAMP_PUBLISHED in r.stamps and t:
            lat = (r.stamps[STAMP_PUBLISHED] - t) * 1e-6
        img = self.renderer.render(r, fps=self._fps, latency_ms=lat, mode=self.mode)
        self.last_image = img
        if self.video is not None:
            self._write_video(img, t or 0)
        eye = None
        if self.eyepiece is not None:
            eye = self.eyepiece.render_result(r)
        if self.window:
            cv2.imshow(self.title, eye if eye is not None else img)
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27):
                self.quit_requested.emit("window closed (q)")
        if self.publisher is not None:
            self.publisher.submit_overlay(r.frame.index, img, dict(r.stamps))
            if eye is not None:
                self.publisher.submit_overlay(r.frame.index, eye, dict(r.stamps), "eyepiece")

    def _write_video(self, img: np.ndarray, ready_ns: int) -> None:
        """Write *img* at its own tick of the video's grid, nothing when that tick was
        already written, so video time = run time.

        The ticks the loop skipped before it (up to 2 s) repeat the image drawn before
        (the one on screen then), not *img*: filled with *img*, every frame of a camera
        slower than the video showed one camera period early (a 2 frames/s replay's
        second frame at 0.03 s instead of 0.5 s) and the first flashed for one tick.
        """
        assert self.video is not None  # called only with a video
        if self._t0 is None:
            self._t0 = ready_ns
        tick = int((ready_ns - self._t0) * self.video_fps // 1_000_000_000)
        n = min(tick - self._tick, int(2 * self.video_fps))
        if n > 0:
            held = self._held if self._held is not None else img  # none before the first
            for _ in range(n - 1):
                self.video.write(held)
            self.video.write(img)
        self._held = img
        self._tick = max(tick, self._tick)

    def close(self) -> None:
        if self.video is not None:
            self.video.close()
        if self.window:
            try:
                cv2.destroyWindow(self.title)
            except cv2.error:
                pass

    def stats(self) -> dict:
        return {**super().stats(),
                "skipped": self.skipped,
                "display_fps": self.display_fps,
                "video": str(self.video.path) if self.video else None,
                "video_fps": self.video_fps if self.video else None,
                "video_frames": self.video.frames if self.video else 0,
                "window": self.window}
