"""Rendering a field of view: sprites of the nuclei in view, defocus blur, camera noise.

Budget: a 512x512 frame must render in well under 10 ms on one core so the simulated
camera can stream at 100 frames/s. Each object's in-focus image (a "sprite") is rendered
once and cached; a frame is then a handful of slice-adds, one OpenCV blur and one noise
draw. Sprites are placed at their true sub-pixel position (bilinear), so the image moves
with the stage by fractions of a pixel as a real one does and the truth boxes sit on it.

Thick nuclei (``SimConfig.thickness_ratio`` > 0): each nucleus is an ellipsoid of
half-thickness ``thickness_ratio`` x its short semi-axis, centred on the focal surface,
imaged as a widefield microscope does: the sum of its optical sections (its in-focus image
cut to the ellipsoid's cross-section at that height), each blurred by its own distance
from the focal plane. Sections of all nuclei at about the same distance share one blur,
so a frame costs one blur per distinct distance (a dozen or so) instead of one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from inscope.acquisition.simulated.config import SimConfig
from inscope.acquisition.simulated.specimen import KIND_DEBRIS, KIND_PAIR, Cell

#: Spacing (µm) of a thick nucleus' optical sections, and the relative step of blur
#: widths under which sections share one blur.
SECTION_UM = 0.5
BLUR_STEP = 0.08


def _paste(canvas: np.ndarray, spr: np.ndarray, x0: float, y0: float) -> None:
    """Add *spr* to *canvas* with its pixel (0, 0) at (x0, y0): a whole-pixel slice-add,
    bilinear when the position has a fraction (a moving nucleus)."""
    h, w = canvas.shape
    n = spr.shape[0]
    ix, iy = math.floor(x0 + 1e-6), math.floor(y0 + 1e-6)
    fx, fy = x0 - ix, y0 - iy
    if fx > 1e-6 or fy > 1e-6:
        sh = np.zeros((n + 1, n + 1), np.float32)
        sh[:n, :n] += np.float32((1 - fx) * (1 - fy)) * spr
        sh[:n, 1:] += np.float32(fx * (1 - fy)) * spr
        sh[1:, :n] += np.float32((1 - fx) * fy) * spr
        sh[1:, 1:] += np.float32(fx * fy) * spr
        spr, n = sh, n + 1
    a, c = max(ix, 0), max(iy, 0)
    b, d = min(ix + n, w), min(iy + n, h)
    if b > a and d > c:
        canvas[c:d, a:b] += spr[c - iy:d - iy, a - ix:b - ix]


@dataclass(slots=True)
class GroundTruth:
    """Labelled objects in one field of view.

    Attributes
    ----------
    boxes
        (N, 4) float32 x0, y0, x1, y1 in the frame's pixels (pixel centres at integers),
        clipped to the frame's extent [-0.5, w - 0.5] x [-0.5, h - 0.5].
    ids
        (N,) int64 object ids (stable across frames; the two daughters of a dividing cell
        are two boxes under the cell's one id).
    visible_fraction
        (N,) float32: clipped box area / full box area (1 = fully in view).
    centers_um
        (N, 2) stage positions (µm) that centre each object.
    sizes_um
        (N, 2) full box width and height in µm (stage axes).
    """

    boxes: np.ndarray
    ids: np.ndarray
    visible_fraction: np.ndarray
    centers_um: np.ndarray
    sizes_um: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class Renderer:
    """Turns (specimen objects, stage position, defocus, time) into camera pixels."""

    def __init__(self, config: SimConfig, true_affine: np.ndarray) -> None:
        self.cfg = config
        self.A = np.asarray(true_affine, float)  # µm per binned pixel, true map
        self.Ainv = np.linalg.inv(self.A)
        self.shape = config.binned_shape
        h, w = self.shape
        self.center = np.array([w / 2.0, h / 2.0])
        self._sprites: dict[int, np.ndarray] = {}
        self._radii: dict[int, np.ndarray] = {}  # normalised radius of each sprite pixel
        self._sections: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}
        self._extents: dict[int, tuple[float, float]] = {}
        self._parts: dict[int, tuple[tuple[float, float], list[np.ndarray]]] = {}
        self._still: tuple[tuple, np.ndarray] | None = None  # see render()
        self._bank: np.ndarray | None = None
        self._noise_rng = np.random.default_rng([config.seed & 0xFFFFFFFF, 99])
        self._ray_rng = np.random.default_rng([config.seed & 0xFFFFFFFF, 98])
        self._hot: tuple[int, np.ndarray] | None = None  # (frame size, hot flat indices)

    # -- geometry ----------------------------------------------------------------------
    def field_rect_um(self, stage_xy: tuple[float, float]) -> tuple[float, float, float, float]:
        """Axis-aligned stage rectangle covering the field of view."""
        h, w = self.shape
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float) - self.center
        pts = np.asarray(stage_xy) + corners @ self.A.T
        return (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())

    def _pixel_extent(self, c: Cell) -> tuple[float, float]:
        """Half width/height in pixels of the whole object (both daughters of a pair)."""
        ext = self._extents.get(c.id)
        if ext is None:
            (phx, phy), offs = self._parts_px(c)
            ext = self._extents[c.id] = (phx + max(abs(o[0]) for o in offs),
                                         phy + max(abs(o[1]) for o in offs))
        return ext

    def _parts_px(self, c: Cell) -> tuple[tuple[float, float], list[np.ndarray]]:
        """Half extent in pixels of one ellipse (exact) and each part's centre offset
        (cached per object: its shape never changes, and the truth of every frame needs
        it for every object in view)."""
        got = self._parts.get(c.id)
        if got is None:
            got = self._parts[c.id] = self._compute_parts_px(c)
        return got

    def _compute_parts_px(self, c: Cell) -> tuple[tuple[float, float], list[np.ndarray]]:
        rot = np.array([[math.cos(c.angle), -math.sin(c.angle)],
                        [math.sin(c.angle), math.cos(c.angle)]])
        m = self.Ainv @ rot @ np.diag([c.a_um, c.b_um])
        offs = [self.Ainv @ np.asarray(o) for o in c.part_offsets_um()]
        return (float(np.linalg.norm(m[0])), float(np.linalg.norm(m[1]))), offs

    # -- sprites -----------------------------------------------------------------------
    def _frac(self, c: Cell) -> np.ndarray:
        """Fraction (x, y) of the object's slide position in pixels, at time 0: baked
        into its sprite, so a static object needs only whole-pixel adds."""
        if not self.cfg.subpixel:
            return np.zeros(2)
        q = self.Ainv @ np.array([c.x_um, c.y_um])
        return q - np.floor(q)

    def _origin(self, c: Cell, p: np.ndarray, shift: np.ndarray) -> tuple[float, float]:
        """Where the sprite's pixel (0, 0) goes in the canvas (before the frame's global
        sub-pixel *shift*) so that its centre lands on *p*."""
        r = self.sprite(c).shape[0] // 2
        if not self.cfg.subpixel:  # the nearest whole pixel
            return float(int(round(p[0])) - r), float(int(round(p[1])) - r)
        o = p - shift - self._frac(c) - r
        return float(o[0]), float(o[1])

    def sprite(self, c: Cell) -> np.ndarray:
        s = self._sprites.get(c.id)
        if s is None:
            s, rr = self._render_sprite(c)
            if len(self._sprites) > 20_000:
                self._sprites.clear()
                self._radii.clear()
                self._extents.clear()
                self._parts.clear()
            self._sprites[c.id] = s
            self._radii[c.id] = rr
        return s

    def half_thickness_um(self, c: Cell) -> float:
        """Half the z extent of a nucleus (0: thin, all of it in the focal plane)."""
        if c.kind == KIND_DEBRIS:
            return 0.0
        return float(self.cfg.thickness_ratio) * min(c.a_um, c.b_um)

    def sections(self, c: Cell) -> tuple[np.ndarray, list[np.ndarray]]:
        """Heights ``u`` (-1 bottom .. 1 top, in half-thicknesses) of a thick nucleus'
        optical sections and their images, which sum to its sprite: section *u* keeps the
        pixels inside the ellipsoid's cross-section at that height (soft edged), each
        pixel's brightness shared among the sections that contain it."""
        got = self._sections.get(c.id)
        if got is not None:
            return got
        spr = self.sprite(c)
        rr = self._radii[c.id]
        h = self.half_thickness_um(c)
        n = max(3, int(math.ceil(2.0 * h / SECTION_UM)))
        u = -1.0 + (2.0 * np.arange(n) + 1.0) / n
        px = abs(float(np.linalg.det(self.A))) ** 0.5
        edge = max(0.06, 0.5 * px / max(min(c.a_um, c.b_um), 1e-3))
        masks = [1.0 / (1.0 + np.exp((rr - math.sqrt(1.0 - v * v)) / edge)) for v in u]
        total = np.maximum(sum(masks), 1e-6)
        secs = [(spr * m / total).astype(np.float32) for m in masks]
        if len(self._sections) > 2_000:
            self._sections.clear()
        self._sections[c.id] = (u, secs)
        return u, secs

    def _render_sprite(self, c: Cell) -> tuple[np.ndarray, np.ndarray]:
        """The object's in-focus image and each pixel's normalised radius in it (0 at a
        centre, 1 on the envelope; the nearer daughter's for a pair)."""
        hx, hy = self._pixel_extent(c)
        r = int(math.ceil(max(hx, hy))) + 2
        g = np.arange(-r, r + 1, dtype=np.float32)
        du, dv = np.meshgrid(g, g)
        fx, fy = self._frac(c)
        du, dv = du - np.float32(fx), dv - np.float32(fy)  # centre at r + fraction
        dx = self.A[0, 0] * du + self.A[0, 1] * dv
        dy = self.A[1, 0] * du + self.A[1, 1] * dv
        ca, sa = math.cos(c.angle), math.sin(c.angle)
        u = dx * ca + dy * sa
        v = -dx * sa + dy * ca
        # daughters of a pair sit apart across the plate (along the short axis, v)
        centres = ([-c.pair_sep_um / 2, c.pair_sep_um / 2] if c.kind == KIND_PAIR else [0.0])
        rng = np.random.default_rng(c.texture_seed)
        img = np.zeros_like(du)
        rr_min = np.full_like(du, np.inf)
        px = abs(float(np.linalg.det(self.A))) ** 0.5  # µm per pixel
        edge = max(0.06, 0.5 * px / max(c.b_um, 1e-3))  # soft edge ~ half a pixel
        dome = self.cfg.dome if c.kind != KIND_DEBRIS else 0.5
        for v0 in centres:
            rr = np.sqrt((u / c.a_um) ** 2 + ((v - v0) / c.b_um) ** 2)
            rr_min = np.minimum(rr_min, rr)
            prof = 1.0 / (1.0 + np.exp((rr - 1.0) / edge))
            if dome > 0:  # ellipsoid thickness: fades towards the envelope
                prof *= np.clip(1.0 - rr * rr, 1e-3, 1.0) ** dome
            img = np.maximum(img, prof)
        if c.kind != KIND_DEBRIS and self.cfg.texture > 0:
            # chromatin granularity: smooth noise at ~1 µm, plus a few dim nucleoli
            tex = rng.standard_normal(du.shape).astype(np.float32)
            # float32 in, float32 out: asarray only tells mypy (no copy)
            tex = np.asarray(cv2.GaussianBlur(tex, (0, 0), max(0.6, 0.8 / px)), np.float32)
            tex /= tex.std() + 1e-6
            img *= np.clip(1.0 + self.cfg.texture * 0.5 * tex, 0.2, 2.0)
            for _ in range(int(rng.integers(0, 4))):
                nu, nv = rng.uniform(-0.5, 0.5) * c.a_um, rng.uniform(-0.5, 0.5) * c.b_um
                nr = rng.uniform(0.12, 0.25) * c.b_um
                img *= 1.0 - 0.45 * self.cfg.texture * np.exp(
                    -((u - nu) ** 2 + (v - nv) ** 2) / (2 * nr * nr))
            # brighter rim of condensed chromatin at the envelope, as in H2B images
            img *= 1.0 + 0.15 * np.clip(1 - np.abs(rr - 0.85) / 0.15, 0, 1)
        return (img * c.brightness).astype(np.float32), rr_min.astype(np.float32)

    # -- frames ------------------------------------------------------------------------
    def render(self, cells: list[Cell], stage_xy: tuple[float, float], t_s: float,
               defocus_um: float) -> tuple[np.ndarray, GroundTruth]:
        """Noise-free photon-rate image (relative units) and the ground truth.

        *defocus_um* is the focal plane's height above the focal surface at the field's
        centre; thick nuclei (``thickness_ratio``) use their own (the surface may tilt).
        """
        h, w = self.shape
        sx, sy = stage_xy
        truth = self.truth(cells, stage_xy, t_s)
        # objects sit at whole pixels of the canvas plus their own (baked) fraction; the
        # stage's fraction of a pixel shifts the whole frame, inside the blur
        t = self.center - self.Ainv @ np.array([sx, sy])
        shift = t - np.floor(t) if self.cfg.subpixel else np.zeros(2)
        if self.cfg.thickness_ratio > 0:
            return self._render_thick(cells, stage_xy, t_s, defocus_um, shift), truth
        # The objects that stand still land on the same whole pixels while the stage
        # stays within one pixel: their sum is kept and only the moving ones are added
        # each frame (pasting ~100 sprites every frame was a large part of its time)
        still = [c for c in cells if not (c.vx_um_s or c.vy_um_s)]
        # (without sub-pixel placement each object rounds its own position: exact key)
        at = (int(math.floor(t[0])), int(math.floor(t[1]))) if self.cfg.subpixel else (
            float(t[0]), float(t[1]))
        key = (*at, tuple(c.id for c in still))
        if self._still is None or self._still[0] != key:
            base = np.zeros((h, w), np.float32)
            for c in still:
                self._paste_at(base, c, t_s, sx, sy, shift)
            self._still = (key, base)
        canvas = self._still[1].copy()
        for c in cells:
            if c.vx_um_s or c.vy_um_s:
                self._paste_at(canvas, c, t_s, sx, sy, shift)
        return self._blur(canvas, defocus_um, shift), truth

    def _paste_at(self, canvas: np.ndarray, c: Cell, t_s: float, sx: float, sy: float,
                  shift: np.ndarray) -> None:
        cx_um, cy_um = c.position(t_s)
        p = self.Ainv @ np.array([cx_um - sx, cy_um - sy]) + self.center
        _paste(canvas, self.sprite(c), *self._origin(c, p, shift))

    def _render_thick(self, cells: list[Cell], stage_xy: tuple[float, float], t_s: float,
                      defocus_um: float, shift: np.ndarray) -> np.ndarray:
        """Sum of every nucleus' optical sections, each blurred by its distance from the
        focal plane (sections at about the same distance share one blur)."""
        cfg = self.cfg
        h, w = self.shape
        sx, sy = stage_xy
        px = abs(float(np.linalg.det(self.A))) ** 0.5
        canvases: dict[int, np.ndarray] = {}

        def key_of(dist_um: float) -> int:
            sigma = math.hypot(cfg.psf_sigma_um, cfg.blur_um_per_um * dist_um) / px
            return int(round(math.log(max(sigma, 1e-3)) / math.log(1.0 + BLUR_STEP)))

        def add(key: int, img: np.ndarray, o: tuple[float, float]) -> None:
            cv = canvases.get(key)
            if cv is None:
                cv = canvases[key] = np.zeros((h, w), np.float32)
            _paste(cv, img, *o)

        for c in cells:
            cx_um, cy_um = c.position(t_s)
            p = self.Ainv @ np.array([cx_um - sx, cy_um - sy]) + self.center
            o = self._origin(c, p, shift)
            # the focal plane's height above this nucleus' centre (on the focal surface)
            dz = defocus_um - cfg.tilt[0] * (cx_um - sx) - cfg.tilt[1] * (cy_um - sy)
            hz = self.half_thickness_um(c)
            if hz <= 0:
                add(key_of(dz), self.sprite(c), o)
                continue
            u, secs = self.sections(c)
            groups: dict[int, np.ndarray] = {}
            for v, sec in zip(u, secs, strict=True):
                k = key_of(dz - hz * float(v))
                groups[k] = groups[k] + sec if k in groups else sec
            for k, img in groups.items():
                add(k, img, o)
        out = np.zeros((h, w), np.float32)
        for key, cv in canvases.items():
            out += self._blur_sigma(cv, (1.0 + BLUR_STEP) ** key, shift)
        return out

    def truth(self, cells: list[Cell], stage_xy: tuple[float, float], t_s: float
              ) -> GroundTruth:
        """Boxes of the labelled objects that reach into the field (cheap: no pixels).

        Boxes are exact for the ellipse at its true (sub-pixel) position, where the
        sprite is placed too (bilinear).
        """
        h, w = self.shape
        sx, sy = stage_xy
        rows = []
        for c in cells:
            if not c.labelled:
                continue
            cx_um, cy_um = c.position(t_s)
            p = self.Ainv @ np.array([cx_um - sx, cy_um - sy]) + self.center
            (hx, hy), offs = self._parts_px(c)
            ehx, ehy = c.part_half_extent_um()
            for o_px, o_um in zip(offs, c.part_offsets_um(), strict=True):
                q = p + o_px
                # pixel centres at integers: the frame spans [-0.5, w - 0.5]
                cl = (max(q[0] - hx, -0.5), max(q[1] - hy, -0.5),
                      min(q[0] + hx, w - 0.5), min(q[1] + hy, h - 0.5))
                if cl[2] <= cl[0] or cl[3] <= cl[1]:
                    continue
                rows.append((cl, c.id, (cl[2] - cl[0]) * (cl[3] - cl[1]) / (4 * hx * hy),
                             (cx_um + o_um[0], cy_um + o_um[1]), (2 * ehx, 2 * ehy)))
        return GroundTruth(np.array([r[0] for r in rows], np.float32).reshape(-1, 4),
                           np.array([r[1] for r in rows], np.int64),
                           np.array([r[2] for r in rows], np.float32),
                           np.array([r[3] for r in rows], float).reshape(-1, 2),
                           np.array([r[4] for r in rows], float).reshape(-1, 2))

    def _blur(self, img: np.ndarray, defocus_um: float,
              shift: np.ndarray | None = None) -> np.ndarray:
        cfg = self.cfg
        sigma = math.hypot(cfg.psf_sigma_um, cfg.blur_um_per_um * defocus_um) / (
            abs(float(np.linalg.det(self.A))) ** 0.5)
        return self._blur_sigma(img, sigma, shift)

    @staticmethod
    def _blur_sigma(img: np.ndarray, sigma: float, shift: np.ndarray | None = None
                    ) -> np.ndarray:
        """Gaussian blur of *sigma* pixels that also moves the content by *shift* (x, y)
        pixels (a fraction: the stage's sub-pixel position), exactly: the Gaussian is
        sampled around the shifted centre."""
        sx, sy = (0.0, 0.0) if shift is None else (float(shift[0]), float(shift[1]))
        if sigma <= 6 and sigma >= 0.3:
            if sx == 0.0 and sy == 0.0:
                return cv2.GaussianBlur(img, (0, 0), sigma)
            rad = int(math.ceil(3.5 * sigma)) + 1
            k = np.arange(-rad, rad + 1, dtype=np.float64)
            kx = np.exp(-0.5 * ((k + sx) / sigma) ** 2)
            ky = np.exp(-0.5 * ((k + sy) / sigma) ** 2)
            return cv2.sepFilter2D(img, -1, (kx / kx.sum()).astype(np.float32),
                                   (ky / ky.sum()).astype(np.float32))
        if sigma < 0.3:
            if sx == 0.0 and sy == 0.0:
                return img
            mat = np.array([[1.0, 0.0, sx], [0.0, 1.0, sy]])
            return cv2.warpAffine(img, mat, (img.shape[1], img.shape[0]),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        # Large blur: blur a downsampled copy (same result to within a few %, 10x cheaper
        # than a 6-sigma-wide kernel at full size).
        f = max(2, int(sigma // 3))
        h, w = img.shape
        small = cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / f)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        if sx or sy:  # a fraction of a pixel under a blur this wide: bilinear is exact enough
            mat = np.array([[1.0, 0.0, sx], [0.0, 1.0, sy]])
            out = cv2.warpAffine(out, mat, (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT_101)
        return out

    def expose(self, rate: np.ndarray) -> np.ndarray:
        """Camera model: photons -> electrons with shot noise -> ADU with read noise."""
        cfg = self.cfg
        exp = cfg.exposure_ms
        binf = cfg.binning ** 2
        e = rate * np.float32(cfg.signal_photons_per_ms * exp * binf)
        e += np.float32(cfg.background_photons_per_ms * exp * binf)
        # Shot (Poisson) + read (Gaussian) noise as one Gaussian of matching variance:
        # exact enough above ~10 photons and ~10x faster than numpy's Poisson sampler.
        # The standard normals come from a bank drawn once per microscope, read at a
        # seeded random offset each frame: drawing 262k fresh normals costs ~3.5 ms, more
        # than all the rest of a frame. In-place float32 arithmetic keeps it ~1 ms.
        n = self._noise(e.size).reshape(e.shape)
        sd = e + np.float32(cfg.read_noise_e ** 2 * binf)
        np.sqrt(sd, out=sd)
        sd *= n
        adu = e
        adu += sd
        adu *= np.float32(cfg.gain)
        adu += np.float32(cfg.offset)
        hi = float(2 ** cfg.bit_depth - 1)
        np.clip(adu, 0, hi, out=adu)
        self._defects(adu, hi)
        return adu.astype(np.uint8 if cfg.bit_depth == 8 else np.uint16)

    def _defects(self, adu: np.ndarray, full: float) -> None:
        """Hot pixels and cosmic-ray hits (``SimConfig``), at full scale, in place."""
        cfg = self.cfg
        flat = adu.reshape(-1)
        if cfg.hot_pixel_fraction > 0:
            if self._hot is None or self._hot[0] != flat.size:  # (binning changes it)
                rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, 97, flat.size])
                self._hot = (flat.size, np.flatnonzero(rng.random(flat.size)
                                                       < cfg.hot_pixel_fraction))
            flat[self._hot[1]] = full
        if cfg.cosmic_rays_per_frame > 0:
            n = int(self._ray_rng.poisson(cfg.cosmic_rays_per_frame))
            flat[self._ray_rng.integers(0, flat.size, n)] = full

    def _noise(self, size: int) -> np.ndarray:
        bank = self._bank
        if bank is None or bank.size < 2 * size:
            bank = self._noise_rng.standard_normal(2 * size, dtype=np.float32)
            self._bank = bank
        off = int(self._noise_rng.integers(0, bank.size - size))
        return bank[off:off + size]
