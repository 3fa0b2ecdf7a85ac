"""Procedural shapes source: determinism, grammar coverage, geometry and motion."""

import numpy as np
import pytest

from vdm_jax.data import shapes
from vdm_jax.data.shapes import (
    COLOURS,
    DIRECTION_VECTORS,
    DIRECTIONS,
    SHAPES,
    SIZES,
    ShapesSource,
    parse_caption,
)


@pytest.fixture(scope="module")
def source():
    return ShapesSource(num_examples=300, num_frames=8, resolution=32, seed=3)


@pytest.fixture(scope="module")
def records(source):
    return [source[i] for i in range(len(source))]


def test_record_format(records):
    r = records[0]
    assert r["video"].shape == (8, 32, 32, 3) and r["video"].dtype == np.uint8
    assert isinstance(r["caption"], str)
    assert {"colour", "shape", "direction", "size"} <= set(r)


def test_deterministic_by_index(source, records):
    again = ShapesSource(num_examples=300, num_frames=8, resolution=32, seed=3)
    for i in (0, 17, 299):
        np.testing.assert_array_equal(again[i]["video"], records[i]["video"])
        assert again[i]["caption"] == records[i]["caption"]
    # Order of access does not matter, and a different seed gives different clips.
    assert source[17]["caption"] == records[17]["caption"]
    other = ShapesSource(num_examples=300, num_frames=8, resolution=32, seed=4)
    assert any(not np.array_equal(other[i]["video"], records[i]["video"]) for i in range(5))


def test_all_grammar_values_occur(records):
    captions = [parse_caption(r["caption"]) for r in records]
    assert {c["colour"] for c in captions} == set(COLOURS)
    assert {c["shape"] for c in captions} == set(SHAPES)
    assert {c["direction"] for c in captions} == set(DIRECTIONS)
    assert {r["size"] for r in records} == {0, 1}


def test_labels_match_caption(records):
    for r in records[:50]:
        c = parse_caption(r["caption"])
        assert list(COLOURS)[r["colour"]] == c["colour"]
        assert SHAPES[r["shape"]] == c["shape"]
        assert DIRECTIONS[r["direction"]] == c["direction"]


def test_colour_is_rendered(records):
    for r in records[:30]:
        rgb = np.asarray(COLOURS[parse_caption(r["caption"])["colour"]])
        bright = r["video"].reshape(-1, 3)
        bright = bright[bright.max(axis=1) == 255]
        np.testing.assert_array_equal(bright, np.broadcast_to(rgb, bright.shape))


@pytest.mark.parametrize("num_frames,resolution", [(8, 32), (16, (24, 40)), (3, 16)])
def test_object_stays_inside_and_moves(num_frames, resolution):
    src = ShapesSource(num_examples=60, num_frames=num_frames, resolution=resolution, seed=1)
    h, w = src.resolution
    for i in range(len(src)):
        p = src.params(i)
        half = p.side / 2
        assert np.all(p.centres[:, 0] - half >= 0) and np.all(p.centres[:, 0] + half <= h)
        assert np.all(p.centres[:, 1] - half >= 0) and np.all(p.centres[:, 1] + half <= w)
        video = src[i]["video"].astype(np.float64)
        # Nothing is clipped at the border: the rendered mass is the same in every frame.
        mass = video.sum(axis=(1, 2, 3))
        np.testing.assert_allclose(mass, mass[0], rtol=0.03)
        # The intensity centroid moves the captioned way by at least a third of the frame.
        weight = video.max(axis=-1)
        cy = (weight.sum(axis=2) * np.arange(h)).sum(axis=1) / weight.sum(axis=(1, 2))
        cx = (weight.sum(axis=1) * np.arange(w)).sum(axis=1) / weight.sum(axis=(1, 2))
        dy, dx = cy[-1] - cy[0], cx[-1] - cx[0]
        vy, vx = DIRECTION_VECTORS[parse_caption(src[i]["caption"])["direction"]]
        along, extent = (dy * vy, h) if vy else (dx * vx, w)
        across = dx if vy else dy
        assert along >= extent / 3 - 0.5, (i, dy, dx)
        assert abs(across) < 0.5


def test_size_caption_and_vocabulary():
    src = ShapesSource(num_examples=40, caption_size=True, seed=0)
    vocab = set(shapes.vocabulary())
    for i in range(len(src)):
        r = src[i]
        parsed = parse_caption(r["caption"])
        assert parsed["size"] == SIZES[r["size"]]
        assert set(r["caption"].split()) <= vocab
    assert set(src.vocabulary()) == vocab


def test_parse_caption_round_trip_and_errors():
    for colour in COLOURS:
        for size in (None, *SIZES):
            text = shapes.make_caption(colour, "triangle", "up", size)
            assert parse_caption(text) == dict(
                colour=colour, shape="triangle", direction="up", size=size
            )
    assert parse_caption("A Red Square moving LEFT.")["direction"] == "left"
    with pytest.raises(ValueError, match="unknown colour 'purple'"):
        parse_caption("a purple square moving left")
    with pytest.raises(ValueError, match="grammar"):
        parse_caption("a red square")
    with pytest.raises(ValueError, match="unknown direction"):
        parse_caption("a red square moving sideways")


def test_bad_arguments():
    with pytest.raises(ValueError, match="shapes"):
        ShapesSource(shapes=("hexagon",))
    with pytest.raises(ValueError, match="size_range"):
        ShapesSource(size_range=(0.5, 0.9))
    with pytest.raises(ValueError, match="resolution"):
        ShapesSource(resolution=(4, 4))
    with pytest.raises(IndexError):
        ShapesSource(num_examples=3)[3]


def test_fast_enough():
    import time

    src = ShapesSource(num_examples=200, num_frames=8, resolution=32)
    start = time.perf_counter()
    for i in range(200):
        src[i]
    per_frame_ms = (time.perf_counter() - start) / (200 * 8) * 1e3
    assert per_frame_ms < 1.0, per_frame_ms


def test_full_travel_crosses_the_frame_edge_to_edge():
    src = ShapesSource(num_examples=40, num_frames=8, resolution=16, seed=2, min_travel=1.0)
    for i in range(len(src)):
        p = src.params(i)
        axis = int(np.argmax(np.abs(p.centres[-1] - p.centres[0])))
        lo, hi = sorted((p.centres[0, axis], p.centres[-1, axis]))
        np.testing.assert_allclose([lo, hi], [p.side / 2, 16 - p.side / 2], atol=1e-9)
    with pytest.raises(ValueError, match="min_travel"):
        ShapesSource(min_travel=0.1)
