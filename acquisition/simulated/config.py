"""Configuration of the simulated microscope: specimen, optics, camera and stage."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class SimConfig:
    """Every knob of the simulation; all fields have defaults (``SimConfig(seed=3)``).

    Photon rates are per µm² of specimen so that binning sums signal automatically.
    Defaults give frames that look like the H2B-GFP HeLa nuclei of the Cell Tracking
    Challenge at 10x (0.65 µm/px): ~12-30 px nuclei, ~500 per mm², SNR ~30-50.
    """

    seed: int = 0
    # camera
    shape: tuple[int, int] = (512, 512)  # (H, W) camera pixels before binning
    pixel_size_um: float = 0.65
    binning: int = 1
    bit_depth: int = 16
    exposure_ms: float = 10.0
    frame_interval_ms: float | None = None  # None -> exposure_ms
    gain_adu_per_e: float | None = None  # None -> 2.0 (>8 bit) or 0.25 (8 bit)
    offset_adu: float | None = None  # None -> 100 (>8 bit) or 10 (8 bit)
    read_noise_e: float = 1.6
    background_photons_per_um2_ms: float = 2.5
    vignetting: float = 0.1  # relative background fall-off at the corners
    cell_photons_per_um2_ms: float = 70.0
    realtime: bool = True
    # specimen
    slide_um: tuple[float, float] = (3000.0, 3000.0)  # centred on stage (0, 0)
    density_per_mm2: float = 500.0
    diameter_um: tuple[float, float] = (8.0, 20.0)
    elongation: tuple[float, float] = (1.0, 1.6)
    brightness_cv: float = 0.35
    dim_fraction: float = 0.12
    dim_brightness: tuple[float, float] = (0.08, 0.3)
    dividing_fraction: float = 0.05
    cluster_fraction: float = 0.15
    debris_per_mm2: float = 150.0
    texture: float = 0.3
    cell_z_spread_um: float = 0.5
    cell_motion_um_per_s: float = 0.0
    cell_motion_range_um: float = 50.0
    # optics / focus
    focal_z0_um: float = 0.0
    tilt: tuple[float, float] = (0.0, 0.0)  # µm of focus per µm of stage x, y
    drift_um_per_s: float = 0.0
    psf_sigma_px: float = 0.7
    defocus_blur_per_um: float = 0.35  # blur sigma (µm) per µm of defocus
    defocus_dim_um: float = 25.0  # brightness *= 1 / (1 + (dz / this)^2)
    camera_rotation_deg: float = 0.0
    camera_flip_x: bool = False
    # stage
    z_limits: tuple[float, float] = (-150.0, 150.0)
    settle_ms: float = 20.0
    z_settle_ms: float = 10.0
    xy_speed_um_per_s: float = 5000.0
    quantisation_um: float = 0.05
    max_step_xy_um: float = 5000.0
    max_step_z_um: float = 200.0
    max_rate_hz: float = 50.0
    # aliases in per-pixel / µm units (None = use the fields above); resolved on creation
    nucleus_diameter_um: tuple[float, float] | None = None  # -> diameter_um
    signal_photons_per_ms: float | None = None  # per pixel -> cell_photons_per_um2_ms
    background_photons_per_ms: float | None = None  # per pixel -> background_..._um2_ms
    gain: float | None = None  # -> gain_adu_per_e
    offset: float | None = None  # -> offset_adu
    psf_sigma_um: float | None = None  # -> psf_sigma_px
    blur_um_per_um: float | None = None  # -> defocus_blur_per_um

    def __post_init__(self) -> None:
        self.shape = tuple(int(v) for v in self.shape)  # type: ignore[assignment]
        px2 = (self.pixel_size_um * self.binning) ** 2
        if self.nucleus_diameter_um is not None:
            self.diameter_um = tuple(self.nucleus_diameter_um)  # type: ignore[assignment]
        if self.signal_photons_per_ms is not None:
            self.cell_photons_per_um2_ms = self.signal_photons_per_ms / px2
        if self.background_photons_per_ms is not None:
            self.background_photons_per_um2_ms = self.background_photons_per_ms / px2
        if self.gain is not None:
            self.gain_adu_per_e = self.gain
        if self.offset is not None:
            self.offset_adu = self.offset
        if self.psf_sigma_um is not None:
            self.psf_sigma_px = self.psf_sigma_um / (self.pixel_size_um * self.binning)
        if self.blur_um_per_um is not None:
            self.defocus_blur_per_um = self.blur_um_per_um
        h, w = self.shape
        if h < 8 or w < 8:
            raise ValueError(f"SimConfig.shape must be at least (8, 8); got {self.shape}.")
        if self.binning not in (1, 2, 3, 4):
            raise ValueError(f"SimConfig.binning must be 1, 2, 3 or 4; got {self.binning}.")
        if not 8 <= self.bit_depth <= 16:
            raise ValueError(f"SimConfig.bit_depth must be 8..16; got {self.bit_depth}.")
        if self.pixel_size_um <= 0 or self.exposure_ms <= 0:
            raise ValueError("SimConfig.pixel_size_um and exposure_ms must be positive.")
        lo, hi = self.diameter_um
        if not 0 < lo <= hi:
            raise ValueError(f"SimConfig.diameter_um must be (low, high) with 0 < low <= high; "
                             f"got {self.diameter_um}.")
        for name in ("dim_fraction", "dividing_fraction", "cluster_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"SimConfig.{name} must be in [0, 1]; got {v}.")

    # -- derived -------------------------------------------------------------------------
    @property
    def out_shape(self) -> tuple[int, int]:
        return (self.shape[0] // self.binning, self.shape[1] // self.binning)

    @property
    def pixel_size_eff_um(self) -> float:
        return self.pixel_size_um * self.binning

    @property
    def interval_s(self) -> float:
        ms = self.exposure_ms if self.frame_interval_ms is None else self.frame_interval_ms
        return ms / 1000.0

    @property
    def gain_eff(self) -> float:
        """Camera gain (ADU per electron) actually used."""
        if self.gain_adu_per_e is not None:
            return self.gain_adu_per_e
        return 0.25 if self.bit_depth == 8 else 2.0

    @property
    def offset_eff(self) -> float:
        """Camera offset (ADU) actually used."""
        if self.offset_adu is not None:
            return self.offset_adu
        return 10.0 if self.bit_depth == 8 else 100.0

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}
