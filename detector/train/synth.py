"""A pool of pre-rendered, domain-randomised synthetic crops from the simulated microscope.

Rendering one crop costs 25-100 ms, far more than a training step needs per sample, so a
pool of a few thousand crops is rendered ONCE with a fixed seed, cached as one .npz (in a
gitignored cache directory) and reused by every epoch and every later training run.

Domain randomisation is what lets a model trained only on these images find real nuclei:
each group of crops comes from its own :class:`~inscope.acquisition.simulated.SimConfig` with
object size (via the pixel size), density, brightness spread, dim / dividing / touching
fractions, unlabelled debris, texture, photon counts, camera offset / gain / read noise,
in-focus blur, defocus and the nuclear intensity profile (flat disc to domed ellipsoid) all
drawn at random over wide ranges.

On request (:attr:`PoolSpec.sparse_fraction`, ``inscope train --sparse-fraction F``) a
fraction of the groups is *sparse*: the same random microscope, but with 0-2 nuclei
expected per crop and the debris of a dense field, so many of its crops hold no nucleus
at all, only noise and specks. The shipped network never saw an empty field and finds
"nuclei" in one (``benchmarks/sparse_fields.py``); a network trained with 1/8 sparse
groups found far fewer there but missed lone nuclei (the model card, *Empty and sparse
fields*), so the default recipe has none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Training seeds stay below this; evaluation uses seeds >= 900000 (detector.datasets).
MAX_TRAIN_SEED = 100000


@dataclass(frozen=True)
class PoolSpec:
    """What a pool holds; the cache file name is derived from it (same spec = same pool).

    Attributes
    ----------
    n
        Number of crops.
    size
        Crop side in pixels (square).
    seed
        Base seed (< :data:`MAX_TRAIN_SEED`).
    object_size_px
        (lo, hi) typical nucleus diameter range in pixels; each group draws its size
        log-uniformly in it (individual nuclei then vary ~2x around it).
    per_scope
        Crops snapped per simulated microscope (one random config per microscope).
    sparse_fraction
        Fraction of the microscopes made sparse, 0.03-2 nuclei expected per crop
        (log-uniform; :func:`random_config`'s *sparse_nuclei*), drawn from a random
        stream of their own, so the other groups are exactly the crops a pool without
        sparse ones holds (0, the default: the pool of :data:`POOL_VERSION` 4).
    dim_low
        The faintest dim nuclei, as a fraction of a typical nucleus' brightness: each
        microscope's dim nuclei then range from a floor drawn log-uniformly between this
        and :data:`DIM_LOW` up to the simulator's own top (0.35; from a random stream of
        their own; every other draw as without it). None, the default: :data:`DIM_LOW`
        for every microscope, the pool of :data:`POOL_VERSION` 4.
    """

    n: int = 3000
    size: int = 256
    seed: int = 1
    object_size_px: tuple[float, float] = (7.0, 72.0)
    per_scope: int = 6
    sparse_fraction: float = 0.0
    dim_low: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparse_fraction <= 1.0:
            raise ValueError(f"PoolSpec.sparse_fraction must be in [0, 1], got "
                             f"{self.sparse_fraction}.")
        if self.dim_low is not None and not 0.0 < self.dim_low <= DIM_LOW:
            raise ValueError(f"PoolSpec.dim_low must be in (0, {DIM_LOW}] (the faintest "
                             f"dim nuclei as a fraction of a typical one), got "
                             f"{self.dim_low}.")

    def key(self) -> str:
        # (a pool without sparse groups keeps the cache name it had before they existed)
        d = json.dumps([self.n, self.size, self.seed, list(self.object_size_px),
                        self.per_scope, POOL_VERSION]
                       + ([self.sparse_fraction] if self.sparse_fraction else [])
                       + ([{"dim_low": self.dim_low}] if self.dim_low is not None else []))
        return hashlib.sha1(d.encode()).hexdigest()[:12]


#: The simulator's faintest dim nuclei (SimConfig.dim_brightness), as a fraction of a
#: typical nucleus' brightness.
DIM_LOW = 0.15
POOL_VERSION = 4  # 2: daughters apart, domed nuclei, small debris; 3: up to tissue density;
#                   4: truth clipped to the frame's pixel-centre extent [-0.5, w - 0.5]
#                   (sparse groups, when asked for, are in the key instead)


def default_cache_dir() -> Path:
    """``$INSCOPE_CACHE`` or ``~/.cache/inscope`` (never inside the repository)."""
    env = os.environ.get("INSCOPE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "inscope"


def random_config(rng: np.random.Generator, size: int, object_size_px: tuple[float, float],
                  seed: int, sparse_nuclei: float | None = None):
    """One domain-randomised :class:`SimConfig` for *size* x *size* crops.

    With *sparse_nuclei*, the field holds that many nuclei per crop on average instead
    of its drawn density, while its debris stays that of the dense field the draws
    describe; *rng* is drawn from exactly as without it, so a sparse group differs from
    its dense twin in the number of nuclei alone.
    """
    from inscope.acquisition.simulated import SimConfig

    lo, hi = object_size_px
    d_px = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # typical diameter, px
    d_um = rng.uniform(9.0, 16.0)
    spread = rng.uniform(1.2, 1.9)
    pixel = d_um / d_px
    # keep ~the same number of nuclei per crop whatever the pixel size: density scales
    # with 1/area of the field; from sparse (~6 % of the area covered) to tissue-like
    # packing (~50 %, where touching nuclei dominate)
    field_mm2 = (size * pixel / 1000.0) ** 2
    n_target = float(np.exp(rng.uniform(np.log(0.15), np.log(1.3)))) * (size / d_px) ** 2 * 0.5
    density = float(np.clip(n_target / max(field_mm2, 1e-6), 20, 40000))
    signal = float(np.exp(rng.uniform(np.log(4), np.log(400))))
    gain = float(np.exp(rng.uniform(np.log(0.3), np.log(8.0))))
    offset = float(rng.choice([0.0, 100.0, 500.0, 2000.0, 33000.0]) * rng.uniform(0.5, 1.2))
    exposure = float(rng.uniform(5, 50))
    # keep a typical nucleus below saturation in most groups (some still clip: real too)
    headroom = (65535.0 - offset) * rng.uniform(0.2, 1.1)
    exposure = min(exposure, max(0.5, headroom / (signal * gain)))
    return SimConfig(
        seed=seed, shape=(size, size), pixel_size_um=pixel, realtime=False,
        nucleus_diameter_um=(d_um / np.sqrt(spread), d_um * np.sqrt(spread)),
        elongation=(1.0, float(rng.uniform(1.2, 2.0))),
        brightness_cv=float(rng.uniform(0.15, 0.6)),
        dim_fraction=float(rng.uniform(0.0, 0.2)),
        dividing_fraction=float(rng.uniform(0.0, 0.25)),
        dome=float(rng.uniform(0.0, 0.7)),
        debris_radius_um=(0.03 * d_um, 0.1 * d_um),
        cluster_fraction=float(rng.uniform(0.0, 0.8)),
        debris_per_mm2=float(rng.uniform(0, 1.0) * density * rng.uniform(0, 1.2)),
        texture=float(rng.uniform(0.0, 0.8)),
        density_per_mm2=(density if sparse_nuclei is None
                         else sparse_nuclei / max(field_mm2, 1e-6)),
        signal_photons_per_ms=signal,
        background_photons_per_ms=float(signal * np.exp(rng.uniform(np.log(0.005),
                                                                     np.log(0.5)))),
        read_noise_e=float(rng.uniform(0.5, 8.0)),
        gain=gain, offset=offset, exposure_ms=exposure,
        psf_sigma_um=float(pixel * rng.uniform(0.4, 2.0)),
        blur_um_per_um=float(rng.uniform(0.2, 0.5)),
    )


def render_pool(spec: PoolSpec, worker: int = 0, workers: int = 1,
                progress: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Render this worker's share of the pool: crops uint16 and their boxes (N, 4)."""
    from inscope.acquisition.simulated import SimulatedMicroscope

    images: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    n_scopes = -(-spec.n // spec.per_scope)
    t0 = time.monotonic()
    for g in range(worker, n_scopes, workers):
        seed = spec.seed * 1000 + g
        if seed >= MAX_TRAIN_SEED:
            raise ValueError("PoolSpec.seed too large: training seeds must stay < 100000.")
        rng = np.random.default_rng([spec.seed, g])
        # sparse or not, and how sparse, from a stream of its own (see PoolSpec)
        srng = np.random.default_rng([spec.seed, g, 5])
        sparse = (float(np.exp(srng.uniform(np.log(0.03), np.log(2.0))))
                  if srng.random() < spec.sparse_fraction else None)
        cfg = random_config(rng, spec.size, spec.object_size_px, seed, sparse_nuclei=sparse)
        if spec.dim_low is not None:  # fainter dim nuclei, from a stream of their own
            drng = np.random.default_rng([spec.seed, g, 6])
            low = float(np.exp(drng.uniform(np.log(spec.dim_low), np.log(DIM_LOW))))
            cfg = dataclasses.replace(cfg, dim_brightness=(low, cfg.dim_brightness[1]))
        scope = SimulatedMicroscope(cfg)
        try:
            half = 1200.0
            for _ in range(min(spec.per_scope, spec.n - g * spec.per_scope)):
                x, y = rng.uniform(-half, half, 2)
                scope.move_xy(float(x), float(y))
                # mostly in focus, sometimes clearly defocused (autofocus not yet settled)
                dz = rng.normal(0, 1.0) if rng.random() < 0.8 else rng.uniform(-6, 6)
                scope.move_z(scope.true_focus_z() + float(dz))
                f = scope.snap()
                images.append(np.asarray(f.pixels, np.uint16))
                t = f.truth if f.truth is not None else np.zeros((0, 4), np.float32)
                boxes.append(np.asarray(t, np.float32).reshape(-1, 4))
        finally:
            scope.close()
        if progress and worker == 0:
            done = len(images) * workers
            el = time.monotonic() - t0
            print(f"\rrendering pool {done}/{spec.n}  {el:.0f}s", end="", flush=True)
    if progress and worker == 0:
        print()
    return images, boxes


def _render_worker(args):
    spec, w, workers, progress = args
    return render_pool(spec, w, workers, progress)


def load_or_render_pool(spec: PoolSpec, cache_dir: Path | None = None, workers: int = 1,
                        progress: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
    """The pool for *spec*: read from the cache, or render (with *workers*) and cache it.

    Returns
    -------
    images (N, S, S) uint16 and a list of N (k, 4) float32 box arrays.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / f"pool-{spec.key()}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            imgs, flat, counts = z["images"], z["boxes"], z["counts"]
        return imgs, list(np.split(flat, np.cumsum(counts)[:-1]))
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as p:
            parts = p.map(_render_worker, [(spec, w, workers, progress)
                                           for w in range(workers)])
        images = [im for p_ in parts for im in p_[0]]
        boxes = [b for p_ in parts for b in p_[1]]
    else:
        images, boxes = render_pool(spec, progress=progress)
    imgs = np.stack(images)
    counts = np.array([len(b) for b in boxes], np.int64)
    flat = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=imgs, boxes=flat, counts=counts)
    tmp.replace(path)
    return imgs, boxes
