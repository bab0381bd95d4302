"""How a recording plays: the frames it gives, in which order, with what attached.

Videos loop and wrap like stacks; ``snap`` wraps, a stream ends unless it loops; rewind
starts again; each frame carries the file's pixel size and its own place in the file;
pixels of any integer or float type arrive as a type the detector takes, values kept;
NDTiff channels and folders of colour TIFFs. Real files (OpenCV, tifffile, ndstorage) in
tmp_path.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import tifffile
from _support.recordings import write_ndtiff, write_video

from inscope.acquisition import MicroscopeUnavailable
from inscope.acquisition.frame import STAMP_READY
from inscope.acquisition.replay import ReplayMicroscope


def _video(path):
    """Three frames; frame i shows a white square at x = 10 + 12 i."""
    return write_video(path, 3, 12)


def _square_x(f) -> float:
    ys, xs = np.nonzero(f.pixels > 128)
    return float(xs.mean())


def _scope(path, **kw) -> ReplayMicroscope:
    return ReplayMicroscope(path, pixel_size_um=kw.pop("pixel_size_um", 1.0), **kw)


def test_a_video_snap_wraps_and_a_rewind_starts_again(tmp_path):
    scope = _scope(_video(tmp_path / "clip.avi"), fps=0)
    assert len(scope) == 3
    got = [scope.snap() for _ in range(5)]
    assert [f.metadata["source_index"] for f in got] == [0, 1, 2, 0, 1]
    assert [f.index for f in got] == [0, 1, 2, 3, 4]  # frames count on across the wrap
    assert _square_x(got[3]) == pytest.approx(_square_x(got[0]), abs=0.5)
    assert _square_x(got[1]) == pytest.approx(10 + 12, abs=1.5)
    scope.rewind()
    f = scope.snap()
    assert f.metadata["source_index"] == 0
    assert _square_x(f) == pytest.approx(10, abs=1.5)


def test_a_looping_video_stream_plays_round_and_a_plain_one_ends(tmp_path):
    path = _video(tmp_path / "clip.avi")
    with _scope(path, fps=0, loop=True).stream() as frames:
        got = [frames.get(timeout=5) for _ in range(7)]
    assert [f.metadata["source_index"] for f in got] == [0, 1, 2, 0, 1, 2, 0]
    with _scope(path, fps=0).stream() as frames:
        assert [f.metadata["source_index"] for f in frames] == [0, 1, 2]


def test_a_stream_plays_on_from_where_snaps_left_it(tmp_path):
    path = _video(tmp_path / "clip.avi")
    scope = _scope(path, fps=0)
    scope.snap()
    with scope.stream() as frames:
        assert [f.metadata["source_index"] for f in frames] == [1, 2]


def test_a_stack_stream_loops_and_rewinds(tmp_path):
    a = np.arange(3, dtype=np.uint16)[:, None, None] * np.ones((1, 8, 8), np.uint16)
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, a, photometric="minisblack", metadata={"axes": "TYX"})
    scope = _scope(path, fps=0, loop=True)
    with scope.stream() as frames:
        got = [int(frames.get(timeout=5).pixels[0, 0]) for _ in range(5)]
    assert got == [0, 1, 2, 0, 1]
    scope.rewind()
    assert scope.snap().metadata["source_index"] == 0


def test_each_frame_carries_the_pixel_size_its_place_and_when_it_was_read(tmp_path):
    a = np.zeros((2, 8, 8), np.uint16)
    path = tmp_path / "rec.ome.tif"
    tifffile.imwrite(path, a, metadata={"axes": "TYX", "PhysicalSizeX": 0.65,
                                        "PhysicalSizeY": 0.65})
    scope = ReplayMicroscope(path, fps=0)
    t0 = time.monotonic_ns()
    f = scope.snap()
    t1 = time.monotonic_ns()
    assert f.pixel_size_um == pytest.approx(0.65)
    np.testing.assert_allclose(f.affine, np.eye(2) * 0.65)
    assert t0 <= f.stamps[STAMP_READY] <= t1
    assert f.metadata == {"backend": "replay", "source": "rec.ome.tif", "source_index": 0,
                          "kind": "tiff", "pixel_size_configured": True}
    p2 = tmp_path / "plain.tif"
    tifffile.imwrite(p2, a)
    with pytest.warns(UserWarning, match="no pixel size"):
        g = ReplayMicroscope(p2, fps=0).snap()
    assert g.metadata["pixel_size_configured"] is False and g.pixel_size_um == 1.0
    h = ReplayMicroscope(p2, fps=0, pixel_size_um=0.25).snap()
    assert h.metadata["pixel_size_configured"] is True and h.pixel_size_um == 0.25
    np.testing.assert_allclose(h.affine, np.eye(2) * 0.25)


@pytest.mark.parametrize(("dtype", "values", "want"), [
    (np.int32, [0, 65535], np.uint16),  # every value fits 16 bits: kept exactly
    (np.uint32, [0, 65535], np.uint16),
    (np.int16, [-5, 300], np.float32),  # negative values: not folded into uint16
    (np.uint32, [0, 65536], np.float32),  # beyond 16 bits: not wrapped
    (np.float64, [0.25, 1e6], np.float32),
    (np.uint8, [0, 255], np.uint8),
])
def test_pixels_of_any_type_arrive_as_a_type_the_detector_takes_with_their_values(
        tmp_path, dtype, values, want):
    a = np.zeros((1, 8, 8), dtype)
    a[0, 0, :2] = values
    path = tmp_path / "px.tif"
    tifffile.imwrite(path, a, photometric="minisblack", metadata={"axes": "TYX"})
    f = _scope(path, fps=0).snap()
    assert f.pixels.dtype == want
    assert f.pixels[0, :2].tolist() == pytest.approx(values)


def _replaying(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "replaying" in r.getMessage()]


def test_a_multi_channel_recording_plays_its_first_channel_unless_told(tmp_path, caplog):
    """... and says which channel it plays, with the option for another (a wrong channel
    still plays as valid frames); a one-channel recording says nothing."""
    a = np.zeros((2, 2, 8, 8), np.uint16)  # T, C
    a[:, 1] = 7
    path = tmp_path / "c.ome.tif"
    tifffile.imwrite(path, a, metadata={"axes": "TCYX", "PhysicalSizeX": 0.5})
    with caplog.at_level("INFO", logger="inscope.acquisition.replay"):
        assert int(ReplayMicroscope(path, fps=0).snap().pixels.max()) == 0
        assert int(ReplayMicroscope(path, fps=0, channel=1).snap().pixels.max()) == 7
    assert _replaying(caplog) == [
        "c.ome.tif: replaying channel 0 of 2 (-o channel=0..1 picks another)",
        "c.ome.tif: replaying channel 1 of 2 (-o channel=0..1 picks another)"]
    tifffile.imwrite(path, a[:, :1], metadata={"axes": "TCYX", "PhysicalSizeX": 0.5})
    caplog.clear()
    with caplog.at_level("INFO", logger="inscope.acquisition.replay"):
        ReplayMicroscope(path, fps=0)
    assert _replaying(caplog) == []


def test_a_folder_of_colour_tiffs_plays_grey_frames(tmp_path):
    folder = tmp_path / "rgb"
    folder.mkdir()
    for t in range(2):
        rgb = np.zeros((8, 8, 3), np.uint8)
        rgb[..., t] = 90  # frame 0 red, frame 1 green
        tifffile.imwrite(folder / f"f{t}.tif", rgb, photometric="rgb")
    with pytest.warns(UserWarning, match="no pixel size"):
        scope = ReplayMicroscope(folder, fps=0)
    f = scope.snap()
    assert f.pixels.shape == (8, 8) and int(f.pixels[0, 0]) == 30  # the mean of R, G, B


def test_a_frame_that_is_not_one_image_is_one_clear_line(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    # a page of 5 samples per pixel: neither grey nor colour
    tifffile.imwrite(folder / "f0.tif", np.zeros((8, 8, 5), np.uint8), photometric="minisblack",
                     planarconfig="contig")
    with pytest.raises(MicroscopeUnavailable, match=r"f0.tif: a frame has shape \(8, 8, 5\)"):
        ReplayMicroscope(folder, fps=0)


def _ndtiff(folder, n_c: int = 2, positions: bool = True, pixel_size: float | None = 0.33):
    """Two time points of n_c channels; each image is filled with 10 t + c."""
    t, c = np.meshgrid(np.arange(2), np.arange(n_c), indexing="ij")
    stack = ((10 * t + c)[..., None, None] * np.ones((8, 8))).astype(np.uint16)
    return write_ndtiff(folder, stack, positions=positions, pixel_size_um=pixel_size)


def test_ndtiff_channels_first_by_default_and_a_missing_one_named(tmp_path, caplog):
    folder = _ndtiff(tmp_path / "nd")
    with caplog.at_level("INFO", logger="inscope.acquisition.replay"):
        scope = ReplayMicroscope(folder, fps=0)
    assert [m.split(": ", 1)[1] for m in _replaying(caplog)] == [
        "replaying channel 0 of 2 (-o channel=0..1 picks another)"]
    assert [int(scope.snap().pixels[0, 0]) for _ in range(2)] == [0, 10]
    assert int(ReplayMicroscope(folder, fps=0, channel=1).snap().pixels[0, 0]) == 1
    with pytest.raises(MicroscopeUnavailable, match="has 2 channels; channel=2 does not exist"):
        ReplayMicroscope(folder, channel=2)


def test_ndtiff_without_stage_positions_plays_at_the_virtual_position(tmp_path):
    folder = _ndtiff(tmp_path / "nd", n_c=1, positions=False, pixel_size=None)
    with pytest.warns(UserWarning, match="no pixel size"):
        scope = ReplayMicroscope(folder, fps=0)
    scope.move_xy(3.0, 4.0, relative=False)
    f = scope.snap()
    assert (f.position.x, f.position.y) == (3.0, 4.0)


def test_a_folder_of_frames_skips_hidden_files(tmp_path):
    """macOS leaves '._name' files beside each file it copies to a shared disk; they end
    in .tif like the frames but are not images."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(2):
        cv2.imwrite(str(folder / f"t{t}.png"), np.full((8, 8), 10 * t, np.uint8))
    (folder / "._t0.png").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")
    (folder / ".hidden.tif").write_bytes(b"not a tiff")
    scope = ReplayMicroscope(folder, fps=0, pixel_size_um=1.0)
    assert len(scope) == 2
    assert [int(scope.snap().pixels[0, 0]) for _ in range(2)] == [0, 10]
