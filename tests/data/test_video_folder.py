"""VideoFolderSource over small MP4/MKV files written here with PyAV, plus broken files."""

import json
import logging
import pickle
import shutil

import numpy as np
import pytest

from vdm_jax.data.video_folder import VideoFolderSource, clip_start
from vdm_jax.data.video_io import write_mp4

NUM_FRAMES, STRIDE = 4, 2  # a clip spans 7 frames


def moving_square(t=12, h=40, w=48):
    """uint8 (t, h, w, 3): grey background 10 + 15*i (encodes the frame index) and a white
    8x8 square at rows 16..24, columns 2+3i .. 10+3i."""
    video = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        video[i] = 10 + 15 * i
        video[i, 16:24, 2 + 3 * i : 10 + 3 * i] = 255
    return video


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    (root / "a").mkdir()
    (root / "b").mkdir()
    write_mp4(root / "a" / "clip1.mp4", moving_square())
    write_mp4(root / "b" / "clip2.mkv", moving_square(t=10, h=32, w=32))
    (root / "b" / "clip2.txt").write_text("caption from a sidecar\n")
    write_mp4(root / "short.mp4", moving_square(t=3))
    (root / "bad.mp4").write_text("this is a text file, not a video")
    write_mp4(root / "full.mp4", moving_square())
    # The index (moov) is at the front, so a file cut inside its frame data (mdat) still probes
    # as 12 frames and fails only when decoded.
    data = (root / "full.mp4").read_bytes()
    mdat = data.index(b"mdat")
    (root / "full.mp4").unlink()
    (root / "trunc.mp4").write_bytes(data[: mdat + (len(data) - mdat) // 4])
    (root / "notes.txt").write_text("not a video extension; ignored")
    captions = {"a/clip1.mp4": "a white square moves right", "trunc.mp4": "never read"}
    (root / "captions.json").write_text(json.dumps(captions))
    return root


def make(root, **kwargs):
    kwargs = {"num_frames": NUM_FRAMES, "resolution": 16, "frame_stride": STRIDE, **kwargs}
    return VideoFolderSource(root, **kwargs)


def background_levels(video):
    """Per-frame grey level of the top rows of (t, h, w, 3), away from the square."""
    return video[:, :3].reshape(video.shape[0], -1).mean(axis=1)


def test_skips_unreadable_and_short_files(root, caplog):
    with caplog.at_level(logging.WARNING):
        src = make(root, clips_per_video=2)
    assert src.paths == ["a/clip1.mp4", "b/clip2.mkv", "trunc.mp4"]
    assert src.frame_counts == [12, 10, 12]
    reasons = dict(src.skipped)
    assert sorted(reasons) == ["bad.mp4", "short.mp4"]
    assert reasons["bad.mp4"].startswith("unreadable")
    assert reasons["short.mp4"] == "too short: 3 frames, need at least 7"
    assert len(src) == 3 * 2
    summaries = [r for r in caplog.records if "skipped 2 of 5 videos" in r.getMessage()]
    assert len(summaries) == 1


def test_records_shapes_and_captions(root):
    src = make(root, resolution=(16, 24))
    first, second = src[0], src[1]
    assert first["video"].shape == (NUM_FRAMES, 16, 24, 3) and first["video"].dtype == np.uint8
    assert first["caption"] == "a white square moves right"
    assert second["video"].shape == (NUM_FRAMES, 16, 24, 3)
    assert second["caption"] == "caption from a sidecar"
    assert src.captions() == ["a white square moves right", "caption from a sidecar", "never read"]
    # 40x48 -> 20x24 (scale 0.5), 2 rows cropped: frame 0's square centre (20, 6) -> (8, 3).
    frame = first["video"][0, :, :, 0].astype(np.float32)
    ys, xs = np.nonzero(frame > (10 + 255) / 2)
    assert abs(ys.mean() + 0.5 - 8) < 0.75 and abs(xs.mean() + 0.5 - 3) < 0.75


def test_uniform_clips_follow_stride_and_spacing(root):
    src = make(root, clips_per_video=2)
    # clip1: 12 frames, span 7 -> starts 0 and 5; frames start + 2k.
    assert [src.clip_location(i) for i in range(2)] == [("a/clip1.mp4", 0), ("a/clip1.mp4", 5)]
    for index, start in [(0, 0), (1, 5)]:
        frames = start + STRIDE * np.arange(NUM_FRAMES)
        np.testing.assert_allclose(background_levels(src[index]["video"]), 10 + 15 * frames, atol=3)
    assert src.clip_location(2) == ("b/clip2.mkv", 0) and src.clip_location(3) == ("b/clip2.mkv", 3)


def test_random_clips_are_deterministic_by_index(root):
    a = make(root, clips_per_video=3, clip_sampling="random", seed=7)
    b = make(root, clips_per_video=3, clip_sampling="random", seed=7)
    other = make(root, clips_per_video=3, clip_sampling="random", seed=8)
    starts = [a.clip_location(i)[1] for i in range(6)]
    assert starts == [b.clip_location(i)[1] for i in range(6)]
    assert starts != [other.clip_location(i)[1] for i in range(6)]
    assert all(0 <= s <= 5 for s in starts[:3]) and all(0 <= s <= 3 for s in starts[3:])
    frames = starts[1] + STRIDE * np.arange(NUM_FRAMES)
    np.testing.assert_allclose(background_levels(a[1]["video"]), 10 + 15 * frames, atol=3)


def test_truncated_file_returns_none_and_counts(root, caplog):
    src = make(root)
    assert src.paths[2] == "trunc.mp4"
    with caplog.at_level(logging.WARNING):
        assert src[2] is None
        assert src[2] is None
    assert src.num_read_failures == 2
    assert any("trunc.mp4" in r.getMessage() for r in caplog.records)
    assert src[0] is not None and src.num_read_failures == 2


def test_missing_caption_raises_or_uses_default(root, tmp_path):
    shutil.copy(root / "a" / "clip1.mp4", tmp_path / "lonely.mp4")
    with pytest.raises(ValueError, match="lonely.mp4"):
        make(tmp_path)
    assert make(tmp_path, default_caption="a video")[0]["caption"] == "a video"
    assert make(tmp_path, captions=None)[0]["caption"] == ""
    src = make(tmp_path, captions=lambda rel: f"caption of {rel}")
    assert src[0]["caption"] == "caption of lonely.mp4"


def test_bad_arguments_and_empty_folder(root, tmp_path):
    src = make(root)
    with pytest.raises(IndexError, match="out of range for 3 clips"):
        src[3]
    with pytest.raises(ValueError, match="no usable videos"):
        make(tmp_path)
    with pytest.raises(ValueError, match="clip_sampling"):
        make(root, clip_sampling="middle")


def test_source_pickles_for_grain_workers(root):
    src = make(root)
    copy = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(copy[1]["video"], src[1]["video"])


def test_clip_start():
    assert [clip_start(10, 4, j, 4) for j in range(4)] == [0, 2, 4, 6]
    assert clip_start(10, 4, 0, 1) == 0
    with pytest.raises(ValueError, match="at least 4 frames"):
        clip_start(3, 4, 0, 1)
