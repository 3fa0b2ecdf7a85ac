"""Prompt-agreement metric: accuracy on real shapes clips, sensitivity, robustness to garbage."""

import numpy as np
import pytest

from vdm_jax.data.shapes import DIRECTIONS, SHAPES, ShapesSource, make_caption, parse_caption
from vdm_jax.eval import detect, format_report, prompt_agreement, temporal_consistency

SETTINGS = [(8, 32, 300), (16, 64, 150)]


@pytest.fixture(scope="module", params=SETTINGS, ids=lambda s: f"{s[0]}x{s[1]}")
def clips(request):
    frames, res, n = request.param
    src = ShapesSource(num_examples=n, num_frames=frames, resolution=res, seed=11)
    recs = [src[i] for i in range(n)]
    return np.stack([r["video"] for r in recs]), [r["caption"] for r in recs]


def test_detector_accuracy_on_source_videos(clips):
    videos, captions = clips
    scores = prompt_agreement(videos, captions)
    print(f"\n{videos.shape[1:3]}: {format_report(scores)}")
    for key in ("colour", "shape", "direction", "colour_and_direction", "all"):
        assert scores[key] >= 0.95, (key, scores)
    assert scores["temporal_consistency"] >= 0.95
    assert scores["count"] == len(captions)


def test_float_input_and_mild_noise(clips):
    videos, captions = clips
    floats = videos[:60].astype(np.float32) / 127.5 - 1.0
    assert prompt_agreement(floats, captions[:60])["all"] >= 0.95
    noisy = floats + 0.1 * np.random.default_rng(0).normal(size=floats.shape).astype(np.float32)
    assert prompt_agreement(noisy, captions[:60])["all"] >= 0.9


def test_wrong_prompts_score_low(clips):
    videos, captions = clips
    n = 60
    wrong = []
    for c in captions[:n]:
        p = parse_caption(c)
        shape = SHAPES[(SHAPES.index(p["shape"]) + 1) % len(SHAPES)]
        direction = DIRECTIONS[(DIRECTIONS.index(p["direction"]) + 1) % len(DIRECTIONS)]
        wrong.append(make_caption(p["colour"], shape, direction))
    scores = prompt_agreement(videos[:n], wrong)
    assert scores["colour"] >= 0.95
    assert scores["shape"] <= 0.05 and scores["direction"] <= 0.05 and scores["all"] <= 0.05


def test_detection_fields(clips):
    videos, captions = clips
    d = detect(videos[0])
    t = videos.shape[1]
    assert d.present_frames.shape == (t,) and d.present_frames.all()
    assert d.sizes.shape == (t,) and np.all(d.sizes > 0)
    assert d.centroids.shape == (t, 2)
    target = parse_caption(captions[0])
    assert (d.colour, d.shape, d.direction) == (target["colour"], target["shape"],
                                                target["direction"])


def garbage():
    rng = np.random.default_rng(0)
    return {
        "black": np.zeros((8, 32, 32, 3), np.uint8),
        "white": np.full((8, 32, 32, 3), 255, np.uint8),
        "uniform_noise": rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8),
        "gaussian_float": rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
        "nan_float": np.full((8, 32, 32, 3), np.nan, np.float32),
        "one_frame": np.zeros((1, 32, 32, 3), np.uint8),
    }


@pytest.mark.parametrize("name", list(garbage()))
def test_garbage_videos_do_not_crash(name):
    video = garbage()[name]
    d = detect(video)
    assert d.present_frames.shape == (len(video),) and not d.present_frames.any()
    assert (d.colour, d.shape, d.direction) == (None, None, None)
    assert temporal_consistency(video) == 0.0
    scores = prompt_agreement([video], ["a red square moving left"])
    assert scores["all"] == 0.0 and scores["temporal_consistency"] == 0.0
    assert "0.0%" in format_report(scores)


def test_temporal_consistency_penalises_flicker_and_jumps():
    src = ShapesSource(num_examples=20, num_frames=8, resolution=32, seed=5)
    video = src[0]["video"]
    assert temporal_consistency(video) > 0.95
    flicker = video.copy()
    flicker[::2] = 0  # object missing in half the frames
    assert temporal_consistency(flicker) < 0.6
    shuffled = video[np.array([0, 7, 1, 6, 2, 5, 3, 4])]  # same object, erratic path
    assert temporal_consistency(shuffled) < 0.8 * temporal_consistency(video)


def test_bad_inputs():
    with pytest.raises(ValueError, match="videos but"):
        prompt_agreement(np.zeros((2, 4, 8, 8, 3), np.uint8), ["a red square moving left"])
    with pytest.raises(ValueError, match=r"\(t, h, w, 3\)"):
        detect(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="grammar"):
        prompt_agreement(np.zeros((1, 4, 8, 8, 3), np.uint8), ["hello"])
