"""Replay backend on real files written with tifffile / OpenCV in tmp_path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from _support.recordings import write_ndtiff, write_video

from inscope.acquisition import MicroscopeUnavailable, MoveRefused
from inscope.acquisition.factory import open_microscope
from inscope.acquisition.replay import ReplayMicroscope


@pytest.fixture
def stack() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 4000, size=(6, 2, 24, 40), dtype=np.uint16)  # T, C, Y, X


def test_plain_tiff_stack(tmp_path, stack):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, stack[:, 0])
    with pytest.warns(UserWarning, match="no pixel size"):
        scope = ReplayMicroscope(path, fps=0)
    assert len(scope) == 6 and scope.pixel_size_um == 1.0
    frames = [scope.snap() for _ in range(7)]  # snap wraps around
    for k, f in enumerate(frames):
        np.testing.assert_array_equal(f.pixels, stack[k % 6, 0])
        assert f.index == k
    assert frames[6].metadata["source_index"] == 0


def test_ome_tiff_channel_pixel_size_positions(tmp_path, stack):
    path = tmp_path / "rec.ome.tif"
    xs = [10.0 * i for i in range(12)]  # planes in C-fastest order
    tifffile.imwrite(path, stack, metadata={
        "axes": "TCYX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65, "TimeIncrement": 0.05,
        "Plane": {"PositionX": xs, "PositionY": [-1.0] * 12, "PositionZ": [3.0] * 12}})
    scope = ReplayMicroscope(path, channel=1)
    assert scope.pixel_size_um == pytest.approx(0.65)
    assert scope.fps == pytest.approx(20.0)
    f0 = scope.snap()
    np.testing.assert_array_equal(f0.pixels, stack[0, 1])
    assert (f0.position.x, f0.position.y, f0.position.z) == (10.0, -1.0, 3.0)
    np.testing.assert_allclose(f0.affine, np.eye(2) * 0.65)
    f1 = scope.snap()
    np.testing.assert_array_equal(f1.pixels, stack[1, 1])
    assert f1.position.x == 30.0
    with pytest.raises(MicroscopeUnavailable, match="2 channels"):
        ReplayMicroscope(path, channel=2)


def test_imagej_tiff_resolution_and_interval(tmp_path, stack):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, stack[:, 0], imagej=True, resolution=(1 / 0.4, 1 / 0.4),
                     metadata={"axes": "TYX", "unit": "um", "finterval": 0.5})
    scope = ReplayMicroscope(path)
    assert scope.pixel_size_um == pytest.approx(0.4, rel=1e-4)
    assert scope.fps == pytest.approx(2.0)


def test_stream_plays_all_frames_in_order_then_ends(tmp_path, stack):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, stack[:, 0])
    with pytest.warns(UserWarning):
        scope = ReplayMicroscope(path, fps=200.0)
    with scope.stream() as frames:
        got = list(frames)
    # paced at 200 fps a consumer this simple keeps up; drops would show as index gaps
    assert [f.metadata["source_index"] for f in got] == [f.index for f in got]
    assert len(got) + frames.dropped == 6
    assert got[-1].metadata["source_index"] == 5


def test_fps_zero_replays_every_frame_to_a_slow_consumer(tmp_path, stack):
    path = tmp_path / "all.tif"
    tifffile.imwrite(path, stack[:, 1])
    with pytest.warns(UserWarning):
        scope = ReplayMicroscope(path, fps=0)
    with scope.stream() as frames:
        got = []
        for f in frames:
            got.append(f)
            cv2.GaussianBlur(f.pixels, (0, 0), 3)  # a consumer slower than a file read
    assert [f.index for f in got] == list(range(6)) and frames.dropped == 0
    for t, f in enumerate(got):
        np.testing.assert_array_equal(f.pixels, stack[t, 1])


def test_stream_loops(tmp_path, stack):
    path = tmp_path / "loop.tif"
    tifffile.imwrite(path, stack[:3, 0], photometric="minisblack")
    with pytest.warns(UserWarning):
        scope = ReplayMicroscope(path, fps=500.0, loop=True)
    with scope.stream() as frames:
        got = [frames.get(timeout=2) for _ in range(8)]
    src = [f.metadata["source_index"] for f in got]
    assert max(f.index for f in got) >= 7
    assert all(s == f.index % 3 for s, f in zip(src, got, strict=True))


def test_video_replay_is_grayscale(tmp_path):
    w, h = 64, 48
    path = write_video(tmp_path / "clip.avi", 5, 8, w, h)
    with pytest.warns(UserWarning):
        scope = ReplayMicroscope(path, fps=0)
    assert scope.fps == 0
    with scope.stream() as frames:
        got = []
        while (f := frames.get(timeout=2)) is not None:
            got.append(f)
    assert got and got[0].pixels.shape == (h, w) and got[0].pixels.dtype == np.uint8
    f = got[-1]
    i = f.metadata["source_index"]
    ys, xs = np.nonzero(f.pixels > 128)
    assert xs.mean() == pytest.approx(10 + 8 * i, abs=1.5)  # the square of frame i
    with pytest.warns(UserWarning):
        assert ReplayMicroscope(path).fps == pytest.approx(25.0)


def test_moves_change_only_a_virtual_position(tmp_path, stack):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, stack[:, 0])
    with pytest.warns(UserWarning):
        scope = ReplayMicroscope(path, limits={"x": [-10, 10], "y": [-10, 10]})
    before = scope.snap().pixels
    assert scope.move_xy(5.0, -2.0)
    assert scope.move_z(1.5)
    assert (scope.position().x, scope.position().y, scope.position().z) == (5.0, -2.0, 1.5)
    f = scope.snap()
    assert (f.position.x, f.position.y) == (5.0, -2.0)  # no recorded positions: virtual
    assert not np.array_equal(f.pixels, before)  # the next recorded frame, nothing else
    with pytest.raises(MoveRefused):
        scope.move_xy(50.0, 0.0)


def test_rgb_tiff_becomes_grayscale(tmp_path):
    rgb = np.zeros((2, 16, 16, 3), np.uint8)
    rgb[0, 4:8, 4:8] = (255, 0, 0)
    rgb[1, 8:12, 8:12] = (0, 255, 0)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    with pytest.warns(UserWarning):
        scope = ReplayMicroscope(path)
    assert len(scope) == 2
    f0, f1 = scope.snap(), scope.snap()
    assert f0.pixels.shape == (16, 16)
    np.testing.assert_array_equal(f0.pixels > 0, rgb[0, ..., 0] > 0)
    np.testing.assert_array_equal(f1.pixels > 0, rgb[1, ..., 1] > 0)


def test_ndtiff_dataset(tmp_path, stack):
    write_ndtiff(tmp_path / "nd", stack)
    scope = ReplayMicroscope(tmp_path / "nd", channel=1)  # the parent folder is fine too
    assert len(scope) == stack.shape[0] and scope.pixel_size_um == pytest.approx(0.33)
    scope.snap()
    f = scope.snap()
    np.testing.assert_array_equal(f.pixels, stack[1, 1])
    assert (f.position.x, f.position.y, f.position.z) == (5.0, 1.0, 2.0)


def test_missing_and_unsupported_files_are_clear(tmp_path):
    with pytest.raises(MicroscopeUnavailable, match="not found.*--file"):
        ReplayMicroscope(tmp_path / "nope.tif")
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(MicroscopeUnavailable, match="Unsupported replay file"):
        ReplayMicroscope(bad)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff at all")
    with pytest.raises(MicroscopeUnavailable, match="Cannot read"):
        ReplayMicroscope(junk)
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(MicroscopeUnavailable, match="cannot open video"):
        ReplayMicroscope(broken)


def test_factory_replay_and_errors(tmp_path, stack):
    path = tmp_path / "f.tif"
    tifffile.imwrite(path, stack[:, 0])
    with pytest.warns(UserWarning):
        scope = open_microscope("replay", path=path, fps=0, dry_run=True)
    assert scope.move_xy(1.0, 1.0) is False  # dry-run
    with pytest.raises(ValueError, match="Unknown microscope backend 'foo'.*sim.*replay"):
        open_microscope("foo")
    with pytest.raises(TypeError, match="needs path"):
        open_microscope("replay")
    with pytest.raises(TypeError, match="Unknown option.*'speed'"):
        open_microscope("replay", path=path, speed=2)


def test_cli_stream_replay(tmp_path, stack, capsys):
    from inscope.cli import main

    path = tmp_path / "cli.ome.tif"
    tifffile.imwrite(path, stack[:, 0], metadata={"axes": "TYX", "PhysicalSizeX": 0.5})
    assert main(["stream", "--backend", "replay", "--file", str(path), "--fps", "100"]) == 0
    out = capsys.readouterr().out
    assert "replay:cli.ome.tif" in out and "fps" in out and "p99" in out
    assert main(["stream", "--backend", "replay", "--file", str(tmp_path / "x.tif")]) == 1
    assert "Replay file not found" in capsys.readouterr().err
    # the file as a backend option, as every other subcommand takes it
    assert main(["stream", "--backend", "replay", "-o", f"path={path}", "-o", "fps=100",
                 "--frames", "3"]) == 0
    assert "replay:cli.ome.tif: 3 frames" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="needs --file PATH"):
        main(["stream", "--backend", "replay", "-o", "path="])


def test_factory_sim_options_limits_dry_run():
    from inscope.acquisition import BaseMicroscope

    scope = open_microscope("sim", limits={"x": [-10, 10], "y": [-10, 10]}, dry_run=True)
    assert isinstance(scope, BaseMicroscope)
    assert scope.limits.x == (-10.0, 10.0) and scope.guard.dry_run
    assert scope.move_xy(1.0, 1.0) is False
    assert scope.snap().pixels.ndim == 2
    scope.close()
    with pytest.raises(TypeError, match="Unknown option.*'no_such_field'.*allowed"):
        open_microscope("sim", no_such_field=1)
    own = open_microscope("sim", dry_run=True)  # no limits given: the simulator's own
    assert own.limits is not None and own.limits.x is not None and own.guard.dry_run


def test_a_folder_of_image_files_plays_in_name_order(tmp_path, stack):
    """A time-lapse exported as one file per frame (t2 before t10, numbers as numbers):
    PNG 16-bit, colour PNG as grey, JPEG; read as played; every frame once with fps=0."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in (1, 2, 10):
        cv2.imwrite(str(folder / f"t{t}.png"), stack[t % 6, 0])
    (folder / "notes.txt").write_text("not a frame")
    with pytest.warns(UserWarning, match="no pixel size"):
        scope = ReplayMicroscope(folder, fps=0)
    assert len(scope) == 3 and scope.kind == "sequence"
    with scope.stream() as frames:
        got = list(frames)
    assert [f.metadata["source_index"] for f in got] == [0, 1, 2]
    for f, t in zip(got, (1, 2, 10), strict=True):
        np.testing.assert_array_equal(f.pixels, stack[t % 6, 0])
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[4:8, 4:8] = (255, 0, 0)  # red, written by OpenCV as B, G, R
    cv2.imwrite(str(tmp_path / "red.png"), np.ascontiguousarray(rgb[..., ::-1]))
    scope = ReplayMicroscope(tmp_path / "red.png", pixel_size_um=0.5)
    f = scope.snap()
    assert f.pixels.shape == (16, 16) and len(scope) == 1 and scope.pixel_size_um == 0.5
    # the mean of the colours, as for a colour TIFF (a red dye keeps a third of 255)
    assert f.pixels[5, 5] == 85 and f.pixels[0, 0] == 0


def test_a_folder_of_tiffs_takes_the_pixel_size_of_its_first(tmp_path, stack):
    folder = tmp_path / "tiffs"
    folder.mkdir()
    for t in range(3):
        tifffile.imwrite(folder / f"img_{t:03d}.tif", stack[t, 1], imagej=True,
                         resolution=(1 / 0.25, 1 / 0.25), metadata={"unit": "um"})
    scope = ReplayMicroscope(folder, fps=0)
    assert scope.pixel_size_um == pytest.approx(0.25) and len(scope) == 3
    np.testing.assert_array_equal(scope.snap().pixels, stack[0, 1])


def test_a_folder_of_multi_page_tiffs_plays_their_first_planes_and_says_so(tmp_path, stack,
                                                                            caplog):
    folder = tmp_path / "stacks"
    folder.mkdir()
    for t in range(2):
        tifffile.imwrite(folder / f"t{t}.tif", stack[t])  # 2 planes (channels) each
    with caplog.at_level("WARNING", logger="inscope.acquisition.replay"), \
            pytest.warns(UserWarning, match="no pixel size"):
        scope = ReplayMicroscope(folder, fps=0)
    assert "t0.tif holds 2 images; a folder of frames plays the first of each" in caplog.text
    assert len(scope) == 2
    np.testing.assert_array_equal(scope.snap().pixels, stack[0, 0])


def test_bad_image_folders_and_frames_are_one_clear_line(tmp_path, stack):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no frames here")
    with pytest.raises(MicroscopeUnavailable, match="without image files.*TIFF / PNG"):
        ReplayMicroscope(empty)
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "f0.png"), stack[0, 0])
    (folder / "f1.png").write_bytes(b"truncated")
    scope = ReplayMicroscope(folder, fps=0, pixel_size_um=1.0)
    assert scope.snap().metadata["source_index"] == 0
    with pytest.raises(MicroscopeUnavailable, match="f1.png.*as a picture"):
        scope.snap()
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(MicroscopeUnavailable, match="bad.png"):
        ReplayMicroscope(tmp_path / "bad.png")
