"""Settings of the simulated microscope (specimen, optics, camera, stage)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SimConfig:
    """Everything that defines a simulated microscope; same config + seed = same frames.

    Units: µm for the specimen and the stage, pixels for the camera, ms for times.
    """

    seed: int = 0
    # -- camera -------------------------------------------------------------------------
    shape: tuple[int, int] = (512, 512)  # (H, W) sensor pixels before binning
    pixel_size_um: float = 0.65  # specimen-plane size of one sensor pixel (10x, 6.5 µm sCMOS)
    binning: int = 1
    bit_depth: int = 16  # 16 -> uint16 (values clipped to 2**16-1), 8 -> uint8, 12 -> uint16
    exposure_ms: float = 10.0
    frame_interval_ms: float | None = None  # None: paced by the exposure
    gain: float = 1.0  # ADU per electron
    offset: float = 100.0  # ADU
    read_noise_e: float = 1.6
    background_photons_per_ms: float = 2.0
    signal_photons_per_ms: float = 60.0  # peak photon rate of a typical nucleus at focus
    # Camera defects, each pixel at full scale: hot pixels (a fraction of the sensor, the
    # same pixels in every frame: an sCMOS without its hot-pixel correction) and cosmic-ray
    # hits (single pixels at random places, a Poisson number with this mean per frame)
    hot_pixel_fraction: float = 0.0
    cosmic_rays_per_frame: float = 0.0
    camera_rotation_deg: float = 0.0  # camera vs stage axes: what calibration must find
    camera_flip_x: bool = False
    realtime: bool = True  # sleep to pace frames and moves; False: as fast as possible
    # realtime streams render in a separate process (shared memory), as a camera would:
    # the loop's process pays only the copy of the frame. False: render in a thread.
    camera_process: bool = True
    # -- specimen -----------------------------------------------------------------------
    slide_um: tuple[float, float] = (3000.0, 3000.0)  # centred on stage (0, 0)
    density_per_mm2: float = 700.0
    nucleus_diameter_um: tuple[float, float] = (10.0, 20.0)
    elongation: tuple[float, float] = (1.0, 1.6)  # long / short axis
    brightness_cv: float = 0.35  # lognormal spread of nucleus brightness
    dim_fraction: float = 0.1  # dim nuclei (still labelled), at dim_brightness ...
    dim_brightness: tuple[float, float] = (0.15, 0.35)  # ... of a typical one's, uniform
    dividing_fraction: float = 0.06  # condensed mitotic chromatin; a pair = two daughter boxes
    cluster_fraction: float = 0.25  # nuclei placed touching a neighbour
    debris_per_mm2: float = 300.0  # small bright specks, never labelled
    debris_radius_um: tuple[float, float] = (0.4, 1.5)  # kept below the smallest nucleus
    # Intensity profile across a nucleus: (1 - r^2) ** dome. A nucleus is a flattened
    # ellipsoid, so its widefield image fades towards the envelope (0.5 = solid ellipsoid,
    # 0 = flat disc with a sharp edge). The box is the full envelope, as annotators draw it.
    dome: float = 0.3
    texture: float = 0.35  # chromatin granularity (0 = flat)
    # Nuclei in 3-D: half-thickness (z) as a fraction of each nucleus' short semi-axis,
    # centred on the focal surface; a frame sums the optical sections, each blurred by
    # its own distance from the focal plane (render.py). 0 = thin: the whole nucleus in
    # the focal plane, one blur per frame (fastest). Adherent nuclei: ~0.4-0.6.
    thickness_ratio: float = 0.0
    # Place nuclei at their true sub-pixel position (the image follows sub-pixel stage
    # moves, truth boxes sit on it exactly). False: at the nearest whole pixel (up to
    # half a pixel off the truth; what earlier figures and tests were made with).
    subpixel: bool = False
    cell_motion_um_per_s: float = 0.0  # speed of each cell (random fixed direction)
    moving_fraction: float = 1.0  # the fraction of cells that move (the rest stay put)
    # -- optics / focus -----------------------------------------------------------------
    focus_z0_um: float = 0.0
    tilt: tuple[float, float] = (0.0, 0.0)  # dz/dx, dz/dy of the focal surface
    drift_um_per_s: float = 0.0
    blur_um_per_um: float = 0.35  # defocus blur sigma (µm) per µm of defocus
    psf_sigma_um: float = 0.4  # in-focus blur
    # The objective, for the depth of field that sizes the focus lock's dither (a 20x/0.5
    # air objective imaging GFP; the blur above matches it: sigma grows by sqrt(2) at
    # ~1.1 µm, about a third of the depth of field).
    na: float = 0.5
    wavelength_um: float = 0.52
    immersion_index: float = 1.0
    # -- stage --------------------------------------------------------------------------
    z_limits_um: tuple[float, float] = (-150.0, 150.0)
    xy_settle_ms: float = 20.0
    z_settle_ms: float = 10.0
    xy_quantum_um: float = 0.05  # positions read back quantised, like Micro-Manager's DXYStage
    z_quantum_um: float = 0.01
    start_xy_um: tuple[float, float] = (0.0, 0.0)
    start_z_um: float | None = None  # None: in focus (focus_z0_um)

    def __post_init__(self) -> None:
        self.shape = (int(self.shape[0]), int(self.shape[1]))
        if min(self.shape) < 16:
            raise ValueError(f"SimConfig.shape must be at least 16x16 pixels; got {self.shape}.")
        if self.binning not in (1, 2, 3, 4, 8):
            raise ValueError(f"SimConfig.binning must be 1, 2, 3, 4 or 8; got {self.binning}.")
        if self.bit_depth not in (8, 10, 12, 14, 16):
            raise ValueError(
                f"SimConfig.bit_depth must be 8, 10, 12, 14 or 16; got {self.bit_depth}.")
        if not (self.pixel_size_um > 0 and self.exposure_ms > 0):
            raise ValueError("SimConfig.pixel_size_um and exposure_ms must be positive.")
        if not 0.0 <= self.thickness_ratio <= 2.0:
            raise ValueError(f"SimConfig.thickness_ratio must be in [0, 2] (half-thickness "
                             f"/ short semi-axis; 0 = thin nuclei); got "
                             f"{self.thickness_ratio}.")
        dlo, dhi = self.dim_brightness
        if not 0 < dlo <= dhi:
            raise ValueError(f"SimConfig.dim_brightness must be (min, max) fractions of a "
                             f"typical nucleus' brightness with 0 < min <= max; got "
                             f"{self.dim_brightness}.")
        lo, hi = self.nucleus_diameter_um
        if not 0 < lo <= hi:
            raise ValueError(
                f"SimConfig.nucleus_diameter_um must be (min, max) with 0 < min <= max; "
                f"got {self.nucleus_diameter_um}.")

    @property
    def binned_shape(self) -> tuple[int, int]:
        return (self.shape[0] // self.binning, self.shape[1] // self.binning)

    @property
    def binned_pixel_um(self) -> float:
        return self.pixel_size_um * self.binning

    @property
    def interval_ms(self) -> float:
        return self.frame_interval_ms if self.frame_interval_ms else self.exposure_ms
