"""Optics and camera: per-object sprites on the camera grid, defocus blur, noise.

Each object is rendered once, in focus, as a small float32 sprite on the *world pixel
grid* (``w = A_true^-1 @ stage_um``, so camera rotation / flip / binning are built in) and
cached; defocus blurs a cached sprite per (object, quantised sigma), which handles tilt
and per-cell heights exactly at the cell centre. A frame is the sum of sprites at integer
positions, shifted by the common sub-pixel stage offset with one ``cv2.warpAffine``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from acquisition.simulated.config import SimConfig
from acquisition.simulated.specimen import Cell


def true_affine(cfg: SimConfig) -> np.ndarray:
    """Pixel offset -> stage offset (µm), with camera rotation and flip."""
    th = math.radians(cfg.camera_rotation_deg)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    flip = np.diag([-1.0 if cfg.camera_flip_x else 1.0, 1.0])
    return cfg.pixel_size_eff_um * rot @ flip


@dataclass(slots=True)
class Sprite:
    img: np.ndarray  # float32 photons / pixel / ms
    ix0: int  # world pixel index of img[0, 0]
    iy0: int
    mask: np.ndarray | None  # bool, same frame as img (in-focus extent, for truth)
    box: tuple[int, int, int, int] | None  # world indices x0, y0, x1, y1 (exclusive)
    mx0: int = 0  # world pixel index of mask[0, 0]
    my0: int = 0


class SpriteCache:
    """Renders and caches object sprites for one optical configuration."""

    def __init__(self, cfg: SimConfig, max_items: int = 20000) -> None:
        self.cfg = cfg
        self.A = true_affine(cfg)
        self.Ainv = np.linalg.inv(self.A)
        self.px_area = cfg.pixel_size_eff_um ** 2
        self._base: OrderedDict[int, Sprite] = OrderedDict()
        self._blur: OrderedDict[tuple[int, float], Sprite] = OrderedDict()
        self.max_items = max_items

    def world(self, x_um: float, y_um: float) -> np.ndarray:
        return self.Ainv @ np.array([x_um, y_um])

    def get(self, c: Cell, sigma_extra: float) -> Sprite:
        base = self._base.get(c.id)
        if base is None:
            base = self._base[c.id] = self._render(c)
            if len(self._base) > self.max_items:
                self._base.popitem(last=False)
        q = _quantise(sigma_extra)
        if q <= 0.0:
            return base
        key = (c.id, q)
        s = self._blur.get(key)
        if s is None:
            s = self._blur[key] = _blur(base, q)
            if len(self._blur) > self.max_items // 4:
                self._blur.popitem(last=False)
        return s

    def _render(self, c: Cell) -> Sprite:
        cfg = self.cfg
        ps = cfg.pixel_size_eff_um
        wc = self.world(c.x_um, c.y_um)
        pad = int(math.ceil(c.radius_um / ps + 3 * cfg.psf_sigma_px + 2))
        ix0, iy0 = int(math.floor(wc[0])) - pad, int(math.floor(wc[1])) - pad
        n = 2 * pad + 1
        g = np.arange(n, dtype=np.float32)
        dx = (g + ix0 + 0.5 - wc[0])[None, :]
        dy = (g + iy0 + 0.5 - wc[1])[:, None]
        sx = (self.A[0, 0] * dx + self.A[0, 1] * dy).astype(np.float32)
        sy = (self.A[1, 0] * dx + self.A[1, 1] * dy).astype(np.float32)
        rng = np.random.default_rng(c.seed)
        if c.kind == "dividing":
            h = c.sep_um / 2.0
            ca, sa = math.cos(c.angle), math.sin(c.angle)
            prof1, m1 = _blob(sx - h * ca, sy - h * sa, c, rng, c.angle + rng.normal(0, .3))
            prof2, m2 = _blob(sx + h * ca, sy + h * sa, c, rng, c.angle + rng.normal(0, .3))
            prof, mask = np.maximum(prof1, prof2), m1 | m2
        else:
            prof, mask = _blob(sx, sy, c, rng, c.angle)
        img = prof * np.float32(c.brightness * cfg.cell_photons_per_um2_ms * self.px_area)
        if cfg.psf_sigma_px > 0:
            img = cv2.GaussianBlur(img, (0, 0), cfg.psf_sigma_px)
        box = None
        if c.labelled and mask.any():
            cols = np.flatnonzero(mask.any(axis=0))
            rows = np.flatnonzero(mask.any(axis=1))
            box = (ix0 + int(cols[0]), iy0 + int(rows[0]),
                   ix0 + int(cols[-1]) + 1, iy0 + int(rows[-1]) + 1)
        return Sprite(img, ix0, iy0, mask if c.labelled else None, box, ix0, iy0)


def _blob(sx: np.ndarray, sy: np.ndarray, c: Cell, rng: np.random.Generator,
          angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Soft-edged irregular ellipse with chromatin texture; coordinates in µm."""
    ca, sa = math.cos(angle), math.sin(angle)
    u = ca * sx + sa * sy
    v = -sa * sx + ca * sy
    a, b = c.a_um, c.b_um
    un, vn = u / a, v / b
    rho = np.sqrt(un * un + vn * vn)
    th = np.arctan2(vn, un)
    r = np.ones_like(rho)
    irregular = 0.02 if c.kind == "debris" else 0.06
    for k in (2, 3, 4):
        r += np.float32(rng.normal(0, irregular / k * 2)) * np.cos(k * th + rng.uniform(0, 6.3))
    edge_um = 0.25 if c.kind in ("dividing", "debris") else 0.45
    t = (r - rho) * np.float32(min(a, b) / edge_um)
    prof = 1.0 / (1.0 + np.exp(-np.clip(t, -30, 30)))
    prof *= 1.0 - 0.25 * np.minimum(rho / r, 1.0) ** 2  # slight dome
    tex = c_tex = 0.0
    if c.kind != "debris":
        tex = _texture(u, v, rng, grain_um=1.2 if c.kind == "interphase" else 0.6)
        c_tex = 0.5 * _texture(u, v, rng, grain_um=3.0)
        amp = 0.3 * (1.0 if c.kind == "interphase" else 1.5)
        prof *= np.clip(1.0 + amp * (tex + c_tex), 0.2, None)
        if c.kind == "interphase":  # nucleoli: darker spots
            for _ in range(int(rng.integers(0, 4))):
                cu, cv = rng.uniform(-0.5, 0.5) * a, rng.uniform(-0.5, 0.5) * b
                rr = rng.uniform(0.6, 1.3)
                prof *= 1.0 - 0.45 * np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * rr * rr))
    return prof.astype(np.float32), rho <= r


def _texture(u: np.ndarray, v: np.ndarray, rng: np.random.Generator,
             grain_um: float) -> np.ndarray:
    """Smooth unit-ish random field sampled at local coordinates (rotates with the cell)."""
    ext = float(max(np.abs(u).max(), np.abs(v).max())) + grain_um
    n = int(2 * ext / grain_um) + 3
    grid = rng.standard_normal((n, n)).astype(np.float32)
    mx = ((u + ext) / grain_um).astype(np.float32)
    my = ((v + ext) / grain_um).astype(np.float32)
    return cv2.remap(grid, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) * 1.4


def _quantise(s: float) -> float:
    if s < 0.3:
        return 0.0
    if s < 4.0:
        return round(s * 4) / 4.0
    return float(round(math.exp(round(math.log(s) * 20) / 20), 2))  # ~5% steps


def _blur(base: Sprite, sigma: float) -> Sprite:
    p = int(math.ceil(3 * sigma)) + 1
    img = cv2.copyMakeBorder(base.img, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
    if sigma > 4.0:
        # Blur a downsampled copy: cost independent of sigma (Gaussian is smooth anyway).
        f = int(sigma // 2)
        h, w = img.shape
        small = cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / f)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    return Sprite(img, base.ix0 - p, base.iy0 - p, base.mask, base.box, base.mx0, base.my0)


# -- camera ----------------------------------------------------------------------------------
_BANKS: dict[tuple[int, int], np.ndarray] = {}


def noise_bank(shape: tuple[int, int]) -> np.ndarray:
    """Shared standard-normal bank, 2x the frame size; frames take seeded random crops.

    Drawing 512x512 normals costs ~3 ms; a crop of a fixed bank costs nothing and gives
    512*512 distinct noise patterns (x 4 flips), plenty for streaming and training.
    """
    h, w = shape
    bank = _BANKS.get(shape)
    if bank is None:
        bank = np.random.default_rng(12345).standard_normal((2 * h, 2 * w), dtype=np.float32)
        _BANKS[shape] = bank
    return bank


def background_field(cfg: SimConfig) -> np.ndarray:
    """Background photons / pixel / ms, with mild vignetting."""
    h, w = cfg.out_shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    bg = cfg.background_photons_per_um2_ms * cfg.pixel_size_eff_um ** 2
    return (bg * (1.0 - cfg.vignetting * r2 / 2.0)).astype(np.float32)


def expose(photons_per_ms: np.ndarray, cfg: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """Electrons -> noisy ADU in the camera's dtype.

    Shot noise uses the Gaussian approximation of Poisson (variance = mean electrons),
    combined with Gaussian read noise into one draw: accurate above ~10 e- and ~10x faster.
    """
    e = photons_per_ms * np.float32(cfg.exposure_ms)
    h, w = e.shape
    bank = noise_bank((h, w))
    oy, ox = int(rng.integers(0, h)), int(rng.integers(0, w))
    n = bank[oy:oy + h, ox:ox + w]
    flip = int(rng.integers(0, 4))
    if flip & 1:
        n = n[:, ::-1]
    if flip & 2:
        n = n[::-1, :]
    std = cv2.sqrt(e + np.float32(cfg.read_noise_e ** 2))
    adu = (e + std * n) * np.float32(cfg.gain_eff) + np.float32(cfg.offset_eff)
    top = float(2 ** cfg.bit_depth - 1)
    np.clip(adu, 0.0, top, out=adu)
    return adu.astype(np.uint8 if cfg.bit_depth == 8 else np.uint16)
