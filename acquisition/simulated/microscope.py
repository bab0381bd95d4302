"""`SimulatedMicroscope`: virtual specimen + camera + XY stage + Z focus, with ground truth."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from acquisition.frame import Frame, StagePosition
from acquisition.microscope import BaseMicroscope
from acquisition.safety import MoveGuard, SoftLimits
from acquisition.simulated.config import SimConfig
from acquisition.simulated.render import SpriteCache, background_field, expose, true_affine
from acquisition.simulated.specimen import Specimen
from acquisition.stream import FrameStream


@dataclass
class GroundTruth:
    """Labelled objects in the current field (boxes in this field's pixels)."""

    boxes: np.ndarray  # (N, 4) float32 x0, y0, x1, y1, clipped to the frame
    ids: np.ndarray  # (N,) int64
    visible_fraction: np.ndarray  # (N,) float32
    centers_um: np.ndarray  # (N, 2) stage positions that centre each object
    sizes_um: np.ndarray  # (N, 2) unclipped box width, height in µm (pixel size x px)
    brightness: np.ndarray  # (N,) relative brightness (1 = typical; dim cells ~0.1-0.3)
    kinds: list[str]


class SimClock:
    """Simulated time: wall time when realtime, else virtual time advanced explicitly."""

    def __init__(self, realtime: bool) -> None:
        self.realtime = realtime
        self._t0 = time.monotonic()
        self._virtual = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        if self.realtime:
            return time.monotonic() - self._t0
        return self._virtual

    def advance(self, dt: float) -> None:
        if dt <= 0:
            return
        if self.realtime:
            time.sleep(dt)
        else:
            with self._lock:
                self._virtual += dt


class SimulatedMicroscope(BaseMicroscope):
    """A deterministic virtual fluorescence microscope with ground truth.

    ``SimulatedMicroscope(SimConfig(seed=1), guard=None)`` or the shortcut
    ``SimulatedMicroscope(seed=1, realtime=False)``. With ``realtime=False`` time is
    virtual: frames advance it by the frame interval, moves by their settle time, and the
    guard's rate limiting advances it instead of sleeping.
    """

    name = "simulated"

    def __init__(self, cfg: SimConfig | None = None, guard: MoveGuard | None = None,
                 specimen: Specimen | None = None, **overrides) -> None:
        cfg = cfg or SimConfig()
        if overrides:
            bad = set(overrides) - SimConfig.field_names()
            if bad:
                raise TypeError(f"Unknown SimConfig field(s) {sorted(bad)}; valid fields: "
                                f"{sorted(SimConfig.field_names())}.")
            cfg = dataclasses.replace(cfg, **overrides)
        self.cfg = cfg
        self.clock = SimClock(cfg.realtime)
        if guard is None:
            w, h = cfg.slide_um
            guard = MoveGuard(
                limits=SoftLimits(x=(-w / 2, w / 2), y=(-h / 2, h / 2), z=tuple(cfg.z_limits),
                                  max_step_xy_um=cfg.max_step_xy_um,
                                  max_step_z_um=cfg.max_step_z_um,
                                  max_rate_hz=cfg.max_rate_hz),
                require_limits=False, clock=self.clock.now, sleep=self.clock.advance)
        super().__init__(guard)
        self._specimen = specimen if specimen is not None else Specimen(cfg)
        self._sprites = SpriteCache(cfg)
        self._bg = background_field(cfg)
        self._rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, 99])
        self._pos = [0.0, 0.0, float(cfg.focal_z0_um)]
        self._lock = threading.RLock()
        self._snaps = 0
        self._pending_settle = 0.0
        self._closed = False

    # -- properties ----------------------------------------------------------------------
    @property
    def specimen(self) -> Specimen:
        return self._specimen

    @specimen.setter
    def specimen(self, spec: Specimen) -> None:
        with self._lock:
            self._specimen = spec
            self._sprites = SpriteCache(self.cfg)

    @property
    def pixel_size_um(self) -> float:
        return self.cfg.pixel_size_eff_um

    @property
    def true_affine(self) -> np.ndarray:
        """The TRUE pixel->stage map (rotation / flip included): what calibration finds."""
        return true_affine(self.cfg)

    @property
    def sim_time_s(self) -> float:
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        """Let *seconds* of simulated time pass (sleeps when realtime)."""
        self.clock.advance(seconds)

    def true_focus_z(self, x_um: float | None = None, y_um: float | None = None,
                     t_s: float | None = None) -> float:
        """Focus-drive z that focuses the slide under stage (x, y) at sim time *t_s*."""
        c = self.cfg
        x = self._pos[0] if x_um is None else x_um
        y = self._pos[1] if y_um is None else y_um
        t = self.clock.now() if t_s is None else t_s
        return c.focal_z0_um + c.tilt[0] * x + c.tilt[1] * y + c.drift_um_per_s * t

    # -- stage -----------------------------------------------------------------------------
    def _q(self, v: float) -> float:
        q = self.cfg.quantisation_um
        return round(v / q) * q if q > 0 else v

    def _read_position(self) -> StagePosition:
        with self._lock:
            return StagePosition(*self._pos)

    def _set_xy(self, x: float, y: float) -> None:
        with self._lock:
            d = math.hypot(x - self._pos[0], y - self._pos[1])
            self._pos[0], self._pos[1] = self._q(x), self._q(y)
            self._pending_settle = self.cfg.settle_ms / 1000 + d / self.cfg.xy_speed_um_per_s

    def _set_z(self, z: float) -> None:
        with self._lock:
            self._pos[2] = round(z / 0.01) * 0.01
            self._pending_settle = self.cfg.z_settle_ms / 1000

    def _wait_xy(self) -> None:
        dt, self._pending_settle = self._pending_settle, 0.0
        self.clock.advance(dt)

    _wait_z = _wait_xy

    # -- rendering -------------------------------------------------------------------------
    def _field(self, pos, t: float):
        """Objects in view with their sprites and integer canvas anchors."""
        cfg = self.cfg
        h, w = cfg.out_shape
        sc = self._sprites
        off = np.array([w / 2.0, h / 2.0]) - sc.Ainv @ np.array(pos[:2])
        n = np.floor(off)
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float) - off
        st = corners @ sc.A.T
        x0, y0 = st.min(axis=0)
        x1, y1 = st.max(axis=0)
        items = []
        for c in self._specimen.objects_near(x0, y0, x1, y1):
            cx, cy = c.position(t)
            if not (x0 - c.radius_um * 4 - 60 <= cx <= x1 + c.radius_um * 4 + 60
                    and y0 - c.radius_um * 4 - 60 <= cy <= y1 + c.radius_um * 4 + 60):
                continue
            dz = pos[2] - self.true_focus_z(cx, cy, t) - c.z_offset_um
            sig = cfg.defocus_blur_per_um * abs(dz) / cfg.pixel_size_eff_um
            sp = sc.get(c, min(sig, 80.0))
            shift = np.zeros(2)
            if (cx, cy) != (c.x_um, c.y_um):
                shift = np.round(sc.Ainv @ np.array([cx - c.x_um, cy - c.y_um]))
            gain = 1.0 / (1.0 + (dz / cfg.defocus_dim_um) ** 2)
            items.append((c, sp, int(shift[0]), int(shift[1]), gain, (cx, cy)))
        return off, n.astype(int), items

    def _render(self, pos, t: float) -> tuple[np.ndarray, GroundTruth, float]:
        cfg = self.cfg
        h, w = cfg.out_shape
        off, n, items = self._field(pos, t)
        canvas = np.zeros((h + 2, w + 2), np.float32)
        truth = []
        for c, sp, sx, sy, gain, cxy in items:
            ix, iy = sp.ix0 + sx + n[0] + 1, sp.iy0 + sy + n[1] + 1
            sh, sw = sp.img.shape
            a0, b0 = max(ix, 0), max(iy, 0)
            a1, b1 = min(ix + sw, w + 2), min(iy + sh, h + 2)
            if a1 > a0 and b1 > b0:
                patch = sp.img[b0 - iy:b1 - iy, a0 - ix:a1 - ix]
                if gain < 0.999:
                    patch = patch * np.float32(gain)
                canvas[b0:b1, a0:a1] += patch
            if sp.box is not None:
                truth.append(self._truth_item(c, sp, sx, sy, off, cxy))
        f = off - n
        if f[0] > 1e-9 or f[1] > 1e-9:
            m = np.array([[1, 0, 1 - f[0]], [0, 1, 1 - f[1]]], np.float32)
            img = cv2.warpAffine(canvas, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        else:
            img = canvas[1:h + 1, 1:w + 1]
        gt = self._pack_truth([t_ for t_ in truth if t_ is not None])
        return img, gt, float(off[0])

    def _truth_item(self, c, sp, sx, sy, off, cxy):
        h, w = self.cfg.out_shape
        bx0, by0, bx1, by1 = sp.box
        box = np.array([bx0 + sx + off[0], by0 + sy + off[1],
                        bx1 + sx + off[0], by1 + sy + off[1]])
        clipped = np.array([max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)])
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            return None
        if (clipped == box).all():
            vis = 1.0
        else:
            # Fraction of mask pixels whose centre falls inside the frame.
            mh, mw = sp.mask.shape
            px = np.arange(mw) + sp.mx0 + sx + 0.5 + off[0]
            py = np.arange(mh) + sp.my0 + sy + 0.5 + off[1]
            inside = ((py >= 0) & (py < h))[:, None] & ((px >= 0) & (px < w))[None, :]
            tot = sp.mask.sum()
            vis = float((sp.mask & inside).sum() / tot) if tot else 0.0
            if vis <= 0.0:
                return None
        ps = self.cfg.pixel_size_eff_um
        return (clipped, c.id, vis, cxy, ((box[2] - box[0]) * ps, (box[3] - box[1]) * ps),
                c.brightness, c.kind)

    @staticmethod
    def _pack_truth(items) -> GroundTruth:
        items.sort(key=lambda it: it[1])
        n = len(items)
        return GroundTruth(
            boxes=np.array([it[0] for it in items], np.float32).reshape(n, 4),
            ids=np.array([it[1] for it in items], np.int64),
            visible_fraction=np.array([it[2] for it in items], np.float32),
            centers_um=np.array([it[3] for it in items], float).reshape(n, 2),
            sizes_um=np.array([it[4] for it in items], float).reshape(n, 2),
            brightness=np.array([it[5] for it in items], np.float32),
            kinds=[it[6] for it in items])

    def ground_truth(self) -> GroundTruth:
        """Labelled objects in the current field at the current sim time."""
        with self._lock:
            pos, t = tuple(self._pos), self.clock.now()
            off, n, items = self._field(pos, t)
            truth = [self._truth_item(c, sp, sx, sy, off, cxy)
                     for c, sp, sx, sy, _g, cxy in items if sp.box is not None]
        return self._pack_truth([x for x in truth if x is not None])

    def _make_frame(self, index: int) -> Frame:
        with self._lock:
            if self._closed:
                raise RuntimeError("This SimulatedMicroscope is closed; create a new one.")
            pos, t = tuple(self._pos), self.clock.now()
            photons, gt, _ = self._render(pos, t)
            photons += self._bg
            pixels = expose(photons, self.cfg, self._rng)
            self.clock.advance(0.0 if self.cfg.realtime else self.cfg.interval_s)
        focus = self.true_focus_z(pos[0], pos[1], t)
        return Frame(
            pixels=pixels, index=index, position=StagePosition(*pos),
            pixel_size_um=self.pixel_size_um, affine=self.affine.copy(),
            metadata={
                "camera": "simulated", "exposure_ms": self.cfg.exposure_ms,
                "sim_time_s": t, "defocus_um": pos[2] - focus, "true_focus_z_um": focus,
                "truth_ids": [int(i) for i in gt.ids],
                "truth_visible_fraction": [float(v) for v in gt.visible_fraction],
                "binning": self.cfg.binning, "bit_depth": self.cfg.bit_depth,
                "seed": self.cfg.seed,
            },
            truth=gt.boxes)

    # -- acquisition -----------------------------------------------------------------------
    def snap(self) -> Frame:
        """Expose one frame; in realtime mode this takes the exposure time."""
        t0 = time.monotonic()
        frame = self._make_frame(self._snaps)
        self._snaps += 1
        if self.cfg.realtime:
            rest = self.cfg.exposure_ms / 1000 - (time.monotonic() - t0)
            if rest > 0:
                time.sleep(rest)
            frame.stamp("ready")
        return frame

    def stream(self, n_frames: int | None = None) -> FrameStream:
        """Continuous acquisition, newest first; paced at the frame interval when realtime.

        *n_frames* ends the stream after that many frames (None: until closed).
        """
        def producer(emit, stop: threading.Event) -> None:
            i = 0
            next_t = time.monotonic()
            while not stop.is_set() and (n_frames is None or i < n_frames):
                if self.cfg.realtime:
                    next_t += self.cfg.interval_s
                frame = self._make_frame(i)
                if self.cfg.realtime:
                    rest = next_t - time.monotonic()
                    if rest > 0:
                        stop.wait(rest)
                    else:
                        next_t = time.monotonic()
                    frame.stamp("ready")
                emit(frame)
                i += 1

        return FrameStream(producer, name="simulated")

    def close(self) -> None:
        self._closed = True
