"""Files users bring: compressed TIFFs as OpenCV and Fiji write them (LZW, deflate), and an
NDTiff z-stack written by a real pycro-manager acquisition (real MMCore + DemoCamera)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile

from inscope.acquisition.replay import ReplayMicroscope
from inscope.detector.datasets import read_image


@pytest.fixture
def frames():
    rng = np.random.default_rng(1)
    return rng.integers(0, 4000, (5, 48, 64), dtype=np.uint16)  # 5: not RGB(A)


def test_opencv_lzw_tiff(tmp_path, frames):
    path = tmp_path / "cv.tif"
    assert cv2.imwrite(str(path), frames[0])  # OpenCV's TIFF writer compresses with LZW
    with tifffile.TiffFile(path) as t:
        assert t.pages[0].compression == tifffile.COMPRESSION.LZW
    np.testing.assert_array_equal(read_image(path), frames[0])
    f = ReplayMicroscope(path).snap()
    np.testing.assert_array_equal(f.pixels, frames[0])


@pytest.mark.parametrize("compression", ["lzw", "zlib"])
def test_compressed_tiff_stacks_replay(tmp_path, frames, compression):
    path = tmp_path / f"{compression}.tif"
    tifffile.imwrite(path, frames, compression=compression)  # what Fiji's "Save As" offers
    with tifffile.TiffFile(path) as t:
        assert t.pages[0].compression != tifffile.COMPRESSION.NONE
    scope = ReplayMicroscope(path)
    got = [scope.snap().pixels for _ in range(len(frames))]
    np.testing.assert_array_equal(np.stack(got), frames)


def test_pycromanager_ndtiff_zstack_replays_each_frames_z(tmp_path, mm_scope):
    from pycromanager import Acquisition, multi_d_acquisition_events

    with Acquisition(directory=str(tmp_path), name="zstack") as acq:
        acq.acquire(multi_d_acquisition_events(z_start=-2.0, z_end=4.0, z_step=2.0))
    folder = next(tmp_path.glob("zstack*"))
    scope = ReplayMicroscope(folder)
    zs = [scope.snap().position.z for _ in range(len(scope))]
    # pycro-manager records only the intended Z of a z-stack: each frame keeps its own
    assert zs == pytest.approx([-2.0, 0.0, 2.0, 4.0])


def test_pycromanager_ndtiff_zstack_opens_as_a_slide(tmp_path, mm_scope):
    """The slide backend on the NDTiff folder a real pycro-manager acquisition writes
    (real MMCore + DemoCamera): its z planes in order, the pixel size and z step from
    the summary metadata; the parent folder works too; a folder without NDTiff gets one
    line (channels and a top-down stack: tests/acquisition/test_slide_truth.py, on
    NDTiffs written with ndstorage, since DemoCamera draws the same image in every
    channel)."""
    from ndstorage import Dataset
    from pycromanager import Acquisition, multi_d_acquisition_events

    from inscope.acquisition.errors import MicroscopeUnavailable
    from inscope.acquisition.slide import SlideMicroscope

    with Acquisition(directory=str(tmp_path / "acq"), name="z") as acq:
        acq.acquire(multi_d_acquisition_events(z_start=0.0, z_end=3.0, z_step=1.5))
    folder = next((tmp_path / "acq").glob("z*"))
    ds = Dataset(str(folder))
    want = np.stack([np.asarray(ds.read_image(z=z)) for z in range(3)])
    ds.close()
    for path in (folder, tmp_path / "acq"):
        s = SlideMicroscope(path, fov=32, noise=0, realtime=False)
        assert s.shape_zyx == want.shape
        np.testing.assert_array_equal(s._stack, want)
        assert s.pixel_size_um == pytest.approx(mm_scope.pixel_size_um)
        assert s.z_step_um == pytest.approx(1.5)

    (tmp_path / "empty").mkdir()
    with pytest.raises(MicroscopeUnavailable, match="without NDTiff.index"):
        SlideMicroscope(tmp_path / "empty", pixel_size_um=1.0, realtime=False)
