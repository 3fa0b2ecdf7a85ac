"""Video I/O: MP4 round trips through PyAV, GIF and PNG grids through Pillow, probing, resizing."""

import av
import numpy as np
import pytest
from PIL import Image

from vdm_jax.data.video_io import (
    frame_grid,
    probe_video,
    read_video,
    resize_center_crop,
    to_float,
    to_uint8,
    write_frame_grid,
    write_gif,
    write_mp4,
)


def ramp_video(t=8, h=32, w=32):
    """uint8 (t, h, w, 3): flat grey level 20*i + 10 per frame (survives H.264 almost exactly)."""
    levels = (20 * np.arange(t) + 10).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (t, h, w, 3)).copy()


def frame_levels(video):
    """Mean grey level of each frame of (t, h, w, 3)."""
    return video.reshape(video.shape[0], -1).mean(axis=1)


@pytest.fixture(scope="module")
def ramp_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("io") / "ramp.mp4"
    write_mp4(path, ramp_video(t=12), fps=8)
    return path


def test_to_uint8_maps_model_range():
    x = np.array([-1.0, -2.0, 0.0, 1.0, 3.0], np.float32)
    np.testing.assert_array_equal(to_uint8(x), [0, 0, 128, 255, 255])
    u = np.arange(5, dtype=np.uint8)
    assert to_uint8(u) is u
    with pytest.raises(TypeError, match="uint8 or float"):
        to_uint8(np.arange(3, dtype=np.int32))


def test_to_float_inverts_to_uint8():
    video = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    x = to_float(video)
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(to_uint8(x), video)


def test_mp4_round_trip_and_probe(ramp_mp4):
    num_frames, h, w, fps = probe_video(ramp_mp4)
    assert (num_frames, h, w, fps) == (12, 32, 32, 8.0)
    video = read_video(ramp_mp4)
    assert video.shape == (12, 32, 32, 3) and video.dtype == np.uint8
    np.testing.assert_allclose(frame_levels(video), 20 * np.arange(12) + 10, atol=3)


def test_mp4_moving_square_is_preserved(tmp_path):
    video = np.zeros((6, 32, 32, 3), np.uint8)
    for i in range(6):
        video[i, 8:16, 2 + 3 * i : 10 + 3 * i] = (255, 0, 0)
    write_mp4(tmp_path / "sq.mp4", video)
    back = read_video(tmp_path / "sq.mp4").astype(np.float32)
    assert np.abs(back - video).mean() < 4.0


@pytest.mark.parametrize("start,stride,num_frames", [(0, 1, 4), (3, 2, 4), (1, 3, 3), (11, 1, 1)])
def test_read_video_clip_selection(ramp_mp4, start, stride, num_frames):
    full = read_video(ramp_mp4)
    clip = read_video(ramp_mp4, num_frames=num_frames, stride=stride, start=start)
    expected = full[start : start + (num_frames - 1) * stride + 1 : stride]
    np.testing.assert_array_equal(clip, expected)


def test_read_video_too_few_frames_raises(ramp_mp4):
    with pytest.raises(ValueError, match="expected at least 14 frames"):
        read_video(ramp_mp4, num_frames=7, stride=2, start=1)
    with pytest.raises(ValueError, match="stride >= 1"):
        read_video(ramp_mp4, stride=0)


def test_mp4_float_input_odd_size_and_scale(tmp_path):
    video = np.linspace(-1, 1, 5 * 9 * 7 * 3, dtype=np.float32).reshape(5, 9, 7, 3)
    write_mp4(tmp_path / "odd.mp4", video)
    assert probe_video(tmp_path / "odd.mp4")[:3] == (5, 10, 8)  # padded to even
    back = read_video(tmp_path / "odd.mp4")[:, :9, :7]
    assert np.abs(back.astype(np.float32) - to_uint8(video)).mean() < 12.0
    write_mp4(tmp_path / "big.mp4", ramp_video(t=3, h=5, w=7), scale=4)
    assert probe_video(tmp_path / "big.mp4")[:3] == (3, 20, 28)


def test_probe_counts_frames_when_metadata_missing(tmp_path):
    path = tmp_path / "clip.mkv"
    write_mp4(path, ramp_video(t=7), fps=5)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # Matroska stores no frame count
    assert probe_video(path) == (7, 32, 32, 5.0)


def test_probe_rejects_non_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")
    with pytest.raises(av.error.FFmpegError):
        probe_video(path)


def test_write_gif(tmp_path):
    write_gif(tmp_path / "a.gif", ramp_video(t=4, h=6, w=5), fps=4, scale=3)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 4 and gif.size == (15, 18)
        assert gif.info["loop"] == 0 and gif.info["duration"] == 250
        gif.seek(2)
        np.testing.assert_allclose(np.asarray(gif.convert("RGB")), 50, atol=2)


def test_frame_grid_layout(tmp_path):
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 200, size=(2, 3, 4, 5, 3), dtype=np.uint8)
    grid = write_frame_grid(tmp_path / "g.png", videos, scale=2, separator=2)
    assert grid.shape == (2 * 8 + 2, 3 * 10 + 2 * 2, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g.png")), grid)
    for n in range(2):
        for t in range(3):
            cell = grid[n * 10 : n * 10 + 8, t * 12 : t * 12 + 10]
            np.testing.assert_array_equal(cell, videos[n, t].repeat(2, 0).repeat(2, 1))
    assert (grid[8:10] == 255).all() and (grid[:, 10:12] == 255).all()
    assert frame_grid(videos[0]).shape == (4, 3 * 5 + 2 * 2, 3)  # one video = one row
    with pytest.raises(ValueError, match=r"\(n, t, h, w, c\)"):
        frame_grid(videos[..., :2])


def test_resize_center_crop_geometry():
    video = np.zeros((2, 40, 48, 3), np.uint8)
    video[:, 20:28, 24:32] = 255  # square whose centre is at (24, 28)
    out = resize_center_crop(video, (16, 24))  # scale 0.5 -> 20x24, crop 2 rows top
    assert out.shape == (2, 16, 24, 3) and out.dtype == np.uint8
    ys, xs = np.nonzero(out[0, :, :, 0] > 127)
    assert abs(ys.mean() + 0.5 - (24 * 0.5 - 2)) < 0.6 and abs(xs.mean() + 0.5 - 14) < 0.6
    assert resize_center_crop(video, 8).shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(resize_center_crop(video, (40, 40)), video[:, :, 4:44])
    with pytest.raises(ValueError, match="positive int"):
        resize_center_crop(video, (0, 4))
