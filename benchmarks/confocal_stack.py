"""A confocal-like z-stack of packed, thick nuclei with 3-D labels, for benchmarks.

The HeLa 3-D slide (:func:`inscope.acquisition.slide.extrude_to_stack`) extrudes a 2-D
frame: every plane of a nucleus is the same 2-D texture with a hard edge. A real optical
section is not like that: the chromatin texture changes from plane to plane, the axial
point-spread function blurs each plane with its neighbours, and towards a nucleus'
poles the cut surface is oblique, so the edge of the shrinking cross-section looks soft.
This generator builds such a stack from scratch (nothing here comes from real data):

* nuclei are ellipsoids (semi-axes 4-8 µm across, 2.5-4.5 µm high, random orientation)
  packed side by side in a monolayer (centres within ``z_spread_um`` of the middle
  plane) or at any depth (``z_spread_um=None``), touching but not overlapping;
* brightness varies 1.5x between nuclei; chromatin texture is smoothed 3-D noise;
* a 3-D Gaussian PSF (``psf_z_um`` along z, ``psf_xy_um`` across) and a weak wide haze
  (out-of-focus light a pinhole does not reject entirely);
* Poisson photon noise plus Gaussian read noise; uint16.

Defaults: 60 planes x 0.29 µm, 0.26 µm pixels (a high-NA confocal's sampling).

Run ``python -m benchmarks.confocal_stack OUT.npz`` to write one (``image``, ``labels``,
``pixel_size_um``, ``z_step_um``) for ``--backend slide -o path=OUT.npz``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def confocal_nuclei_stack(shape: tuple[int, int, int] = (60, 512, 512),
                          pixel_size_um: float = 0.26, z_step_um: float = 0.29,
                          z_spread_um: float | None = 1.5, psf_z_um: float = 0.6,
                          psf_xy_um: float = 0.12, haze: float = 0.1, texture: float = 0.5,
                          seed: int = 0, tries: int = 1200) -> tuple[np.ndarray, np.ndarray]:
    """``(stack, labels)``: a (Z, Y, X) uint16 stack and its int32 instance labels."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    nz, h, w = shape
    px, dz = float(pixel_size_um), float(z_step_um)
    depth = nz * dz
    lab = np.zeros(shape, np.int32)
    placed: list[tuple[float, float, float, float, float]] = []
    for _ in range(tries):
        a, b = rng.uniform(5.0, 8.0), rng.uniform(4.0, 7.0)
        c = rng.uniform(2.5, 4.5)
        if z_spread_um is None:
            cz = rng.uniform(c + 1.0, depth - c - 1.0)
        else:
            cz = depth / 2 + rng.uniform(-z_spread_um, z_spread_um)
        if cz - c < 0.5 or cz + c > depth - 0.5:
            continue
        cx, cy = rng.uniform(-3.0, w * px + 3.0), rng.uniform(-3.0, h * px + 3.0)
        r = max(a, b)
        if any(np.hypot(cx - x, cy - y) < 0.85 * (r + rr) and abs(cz - z) < 0.8 * (c + cc)
               for x, y, z, rr, cc in placed):
            continue  # would overlap one already placed (touching is fine)
        placed.append((cx, cy, cz, r, c))
        # the ellipsoid, evaluated in its bounding box only
        x0, x1 = int(max((cx - r) / px, 0)), int(min((cx + r) / px + 2, w))
        y0, y1 = int(max((cy - r) / px, 0)), int(min((cy + r) / px + 2, h))
        z0, z1 = int(max((cz - c) / dz, 0)), int(min((cz + c) / dz + 2, nz))
        if x1 <= x0 or y1 <= y0 or z1 <= z0:
            continue
        zz, yy, xx = np.meshgrid(np.arange(z0, z1) * dz, np.arange(y0, y1) * px,
                                 np.arange(x0, x1) * px, indexing="ij")
        th = rng.uniform(0.0, np.pi)
        u = ((xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)) / a
        v = (-(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)) / b
        inside = u * u + v * v + ((zz - cz) / c) ** 2 <= 1.0
        sub = lab[z0:z1, y0:y1, x0:x1]
        sub[inside & (sub == 0)] = len(placed)
    bright = np.r_[0.0, rng.lognormal(0.0, 0.4, len(placed))]
    tex = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape), (1.0, 2.0, 2.0))
    tex = np.clip(1.0 + texture * tex / max(float(tex.std()), 1e-9), 0.2, None)
    signal = bright[lab] * tex * 200.0
    img = ndimage.gaussian_filter(signal, (psf_z_um / dz, psf_xy_um / px, psf_xy_um / px))
    img += haze * ndimage.gaussian_filter(signal, (3.0 / dz, 2.0 / px, 2.0 / px))
    img = rng.poisson(np.maximum(img + 10.0, 0.0)) + rng.normal(0.0, 3.0, shape)
    return np.clip(img, 0, 65535).astype(np.uint16), lab


def write_confocal_slide(path: str | Path, seed: int = 0, **kw) -> Path:
    """Write :func:`confocal_nuclei_stack` as a slide npz; returns its path."""
    stack, labels = confocal_nuclei_stack(seed=seed, **kw)
    px, dz = kw.get("pixel_size_um", 0.26), kw.get("z_step_um", 0.29)
    path = Path(path)
    np.savez(path, image=stack, labels=labels, pixel_size_um=px, z_step_um=dz)
    return path


def write_confocal_tiff(path: str | Path, seed: int = 0, **kw) -> tuple[Path, Path]:
    """Write :func:`confocal_nuclei_stack` as a Fiji (ImageJ) two-channel hyperstack,
    axes ZCYX, µm sizes in its resolution and ``spacing``, the nuclei in channel 1 (a
    dim copy of them, standing for a second stain, in channel 0), and the labels as a
    TIFF beside it (``<stem>_labels.tif``): the layout of a two-channel confocal stack
    saved from Fiji, opened with ``-o path=OUT.tif -o channel=1 -o labels=...``.
    Returns both paths."""
    import tifffile

    stack, labels = confocal_nuclei_stack(seed=seed, **kw)
    px, dz = kw.get("pixel_size_um", 0.26), kw.get("z_step_um", 0.29)
    other = (stack.astype(np.float32) * 0.3 + 200).astype(np.uint16)
    path = Path(path)
    tifffile.imwrite(path, np.stack([other, stack], axis=1), imagej=True,
                     resolution=(1 / px, 1 / px),
                     metadata={"axes": "ZCYX", "spacing": dz, "unit": "um"})
    lab = path.with_name(path.stem + "_labels.tif")
    tifffile.imwrite(lab, labels.astype(np.uint16))
    return path, lab


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="npz to write (or .tif: a Fiji two-channel hyperstack "
                                "and <stem>_labels.tif, see write_confocal_tiff)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=512, help="Y and X size (px)")
    ap.add_argument("--planes", type=int, default=60)
    ap.add_argument("--any-depth", action="store_true",
                    help="nuclei at any depth (default: a monolayer, +/-1.5 µm)")
    args = ap.parse_args(argv)
    kw = {"shape": (args.planes, args.size, args.size),
          "z_spread_um": None if args.any_depth else 1.5}
    if Path(args.out).suffix.lower() in (".tif", ".tiff"):
        p, lab = write_confocal_tiff(args.out, args.seed, **kw)
        print(f"wrote {p} (nuclei in channel 1) and {lab}")
    else:
        print(f"wrote {write_confocal_slide(args.out, args.seed, **kw)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
