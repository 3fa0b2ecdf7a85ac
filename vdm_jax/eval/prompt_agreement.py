"""Prompt agreement on procedural shapes videos, measured from pixels (no pretrained network).

``detect`` finds the single bright object of a shapes clip and reads its colour (nearest palette
colour), shape (bounding-box fill ratio and top/bottom asymmetry) and direction (least-squares
slope of the centroid over frames). ``prompt_agreement`` compares detections of generated videos
with their prompts, parsed with the shapes grammar. Everything is numpy and never raises on
garbage videos: attributes that cannot be read are ``None`` and count as wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from vdm_jax.data.shapes import COLOURS, DIRECTION_VECTORS, parse_caption
from vdm_jax.data.video_io import to_uint8

MIN_BRIGHTNESS = 64.0  # a frame whose brightest pixel is below this (of 255) has no object
MAX_AREA_FRACTION = 0.4  # larger "objects" are noise or a bright background, not a shape
MIN_AREA_PIXELS = 4
# Fill ratio of the bounding box: square 1, circle pi/4, triangle 1/2.
FILL_SQUARE, FILL_CIRCLE_TRIANGLE = 0.9, 0.64
TRIANGLE_ASYMMETRY = 1.6  # bottom-half / top-half pixel mass of an upward triangle is 3


@dataclasses.dataclass(frozen=True)
class Detection:
    """What ``detect`` read from one video; ``None`` where nothing could be read.

    Attributes:
      colour, shape, direction: names from the shapes grammar, or None.
      present_frames: bool (t,), an object was found in the frame.
      sizes: float (t,), object area in pixels, anti-aliased edge counted fractionally (0 where
        absent).
      centroids: float (t, 2), object centroid as (y, x) in pixels (nan where absent).
      fill_ratio: median bounding-box fill ratio over present frames (nan if none).
      mean_rgb: mean colour of the object's core pixels in [0, 255] (nan if none).
    """

    colour: str | None
    shape: str | None
    direction: str | None
    present_frames: np.ndarray
    sizes: np.ndarray
    centroids: np.ndarray
    fill_ratio: float
    mean_rgb: np.ndarray


def to_uint8_range(video: np.ndarray) -> np.ndarray:
    """uint8 (t, h, w, 3) or float in [-1, 1] -> float32 in [0, 255], same shape."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be (t, h, w, 3), got shape {video.shape}")
    if not (video.dtype == np.uint8 or np.issubdtype(video.dtype, np.floating)):
        raise ValueError(f"video must be uint8 or float in [-1, 1], got dtype {video.dtype}")
    return to_uint8(video).astype(np.float32)


def _frame_masks(video: np.ndarray) -> dict[str, np.ndarray]:
    """Object masks and soft coverage per frame.

    Args:
      video: float (t, h, w, 3) in [0, 255].

    Returns:
      dict of ``mask`` bool (t, h, w), the half-peak-brightness region (the shape's geometry);
      ``core`` bool (t, h, w), its bright interior (for colour); ``coverage`` float (t, h, w),
      brightness / peak on the object and its anti-aliased edge, 0 elsewhere (for sub-pixel
      area and centroid); ``present`` bool (t,).
    """
    brightness = video.max(axis=-1)
    peak = brightness.reshape(len(video), -1).max(axis=1)[:, None, None]
    threshold = np.maximum(0.5 * peak, MIN_BRIGHTNESS)
    mask = brightness > threshold
    edge = brightness > np.maximum(0.2 * peak, 0.5 * MIN_BRIGHTNESS)
    coverage = np.where(edge, brightness / np.maximum(peak, 1.0), 0.0)
    area = mask.sum(axis=(1, 2))
    h, w = video.shape[1:3]
    present = (peak[:, 0, 0] >= MIN_BRIGHTNESS) & (area >= MIN_AREA_PIXELS)
    present &= area <= MAX_AREA_FRACTION * h * w
    return dict(mask=mask, core=brightness > 1.5 * threshold, coverage=coverage, present=present)


def _frame_geometry(mask: np.ndarray) -> tuple[float, float]:
    """Bounding-box fill ratio and bottom/top pixel-mass ratio of one bool (h, w) mask."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    fill = len(ys) / float((y1 - y0 + 1) * (x1 - x0 + 1))
    mid = (y0 + y1) / 2.0
    top, bottom = np.sum(ys < mid), np.sum(ys > mid)
    return fill, (bottom + 1.0) / (top + 1.0)


def _weighted_centroids(coverage: np.ndarray) -> np.ndarray:
    """Coverage-weighted centroids, float (t, 2) as (y, x); pixel centres at +0.5."""
    t, h, w = coverage.shape
    total = np.maximum(coverage.sum(axis=(1, 2)), 1e-6)
    cy = (coverage.sum(axis=2) * (np.arange(h) + 0.5)).sum(axis=1) / total
    cx = (coverage.sum(axis=1) * (np.arange(w) + 0.5)).sum(axis=1) / total
    return np.stack([cy, cx], axis=1)


def _classify_shape(fill: float, asymmetry: float) -> str:
    """Shape name from bounding-box fill ratio and vertical asymmetry."""
    if asymmetry > TRIANGLE_ASYMMETRY or fill < FILL_CIRCLE_TRIANGLE:
        return "triangle"
    return "square" if fill > FILL_SQUARE else "circle"


def _nearest_colour(rgb: np.ndarray, palette: Mapping[str, Sequence[int]]) -> str:
    """Palette name nearest to ``rgb`` after normalising both by their brightest channel."""
    names = list(palette)
    table = np.asarray([palette[n] for n in names], np.float32)
    table /= np.maximum(table.max(axis=1, keepdims=True), 1e-6)
    query = rgb / max(float(rgb.max()), 1e-6)
    return names[int(np.argmin(((table - query) ** 2).sum(axis=1)))]


def _direction(centroids: np.ndarray, present: np.ndarray) -> str | None:
    """Direction of the larger least-squares centroid slope over present frames."""
    frames = np.nonzero(present)[0]
    if len(frames) < 2:
        return None
    t = frames.astype(np.float64)
    slopes = np.polyfit(t - t.mean(), centroids[frames], deg=1)[0]  # (2,) as (dy, dx)
    axis = int(np.argmax(np.abs(slopes)))
    if slopes[axis] == 0:
        return None
    step = [0, 0]
    step[axis] = int(np.sign(slopes[axis]))
    names = {tuple(v): k for k, v in DIRECTION_VECTORS.items()}
    return names[tuple(step)]


def detect(video: np.ndarray, palette: Mapping[str, Sequence[int]] = COLOURS) -> Detection:
    """Read colour, shape and direction of the one object in a shapes video.

    Args:
      video: uint8 (t, h, w, 3) or float (t, h, w, 3) in [-1, 1].
      palette: colour name -> RGB to choose from.
    """
    frames = to_uint8_range(video)
    m = _frame_masks(frames)
    mask, core, present = m["mask"], m["core"], m["present"]
    sizes = np.where(present, m["coverage"].sum(axis=(1, 2)), 0.0).astype(np.float32)
    centroids = np.where(present[:, None], _weighted_centroids(m["coverage"]), np.nan)
    centroids = centroids.astype(np.float32)
    geometry = [_frame_geometry(mask[i]) for i in np.nonzero(present)[0]]
    fills, asymmetries = [g[0] for g in geometry], [g[1] for g in geometry]
    if not present.any():
        nan3 = np.full((3,), np.nan, np.float32)
        return Detection(None, None, None, present, sizes, centroids, float("nan"), nan3)
    fill, asym = float(np.median(fills)), float(np.median(asymmetries))
    core_pixels = frames[core & present[:, None, None]]
    if len(core_pixels) == 0:
        core_pixels = frames[mask & present[:, None, None]]
    mean_rgb = core_pixels.mean(axis=0)
    return Detection(
        colour=_nearest_colour(mean_rgb, palette),
        shape=_classify_shape(fill, asym),
        direction=_direction(centroids, present),
        present_frames=present,
        sizes=sizes,
        centroids=centroids,
        fill_ratio=fill,
        mean_rgb=mean_rgb,
    )


def consistency_from_detection(d: Detection) -> float:
    """Temporal consistency in [0, 1] of a detection; see ``temporal_consistency``."""
    present = d.present_frames
    if present.sum() == 0:
        return 0.0
    presence = float(present.mean())
    areas = d.sizes[present]
    area_stability = max(0.0, 1.0 - float(areas.std() / max(areas.mean(), 1e-6)))
    smoothness = 1.0
    path = d.centroids[present]
    if len(path) >= 3:
        # Centroid acceleration relative to the object's size: 0 for constant-speed motion.
        jerk = np.linalg.norm(np.diff(path, n=2, axis=0), axis=1).mean()
        scale = max(float(np.sqrt(areas.mean())), 1.0)
        smoothness = float(np.exp(-jerk / scale))
    return float(np.clip(presence * area_stability * smoothness, 0.0, 1.0))


def temporal_consistency(video: np.ndarray) -> float:
    """Score in [0, 1]: object present in every frame, stable area, smooth centroid path.

    The product of the fraction of frames with an object, ``1 - std/mean`` of its area, and
    ``exp(-mean |second difference of centroid| / sqrt(area))``.
    """
    return consistency_from_detection(detect(video))


def prompt_agreement(
    videos: np.ndarray | Sequence[np.ndarray],
    prompts: Sequence[str],
    palette: Mapping[str, Sequence[int]] = COLOURS,
) -> dict[str, float]:
    """Agreement of generated shapes videos with their prompts.

    Args:
      videos: (n, t, h, w, 3) uint8 or float in [-1, 1], or a sequence of (t, h, w, 3).
      prompts: n grammar captions (``"a red square moving left"``).

    Returns:
      Fractions in [0, 1]: ``colour``, ``shape``, ``direction`` (per-attribute accuracy),
      ``colour_and_direction``, ``all``, mean ``temporal_consistency``; and ``count``.
    """
    if len(videos) != len(prompts):
        raise ValueError(f"got {len(videos)} videos but {len(prompts)} prompts")
    if len(prompts) == 0:
        raise ValueError("prompt_agreement needs at least one video")
    hits = {k: [] for k in ("colour", "shape", "direction", "colour_and_direction", "all")}
    consistency = []
    for video, prompt in zip(videos, prompts, strict=True):
        target = parse_caption(prompt, colours=tuple(palette))
        d = detect(video, palette)
        ok = {k: getattr(d, k) == target[k] for k in ("colour", "shape", "direction")}
        for k, v in ok.items():
            hits[k].append(v)
        hits["colour_and_direction"].append(ok["colour"] and ok["direction"])
        hits["all"].append(all(ok.values()))
        consistency.append(consistency_from_detection(d))
    scores = {k: float(np.mean(v)) for k, v in hits.items()}
    scores["temporal_consistency"] = float(np.mean(consistency))
    scores["count"] = float(len(prompts))
    return scores


def format_report(scores: Mapping[str, float]) -> str:
    """One-paragraph summary of ``prompt_agreement`` scores."""
    n = int(scores.get("count", 0))
    return (
        f"Prompt agreement over {n} videos: colour {scores['colour']:.1%}, "
        f"shape {scores['shape']:.1%}, direction {scores['direction']:.1%}; "
        f"colour and direction {scores['colour_and_direction']:.1%}, "
        f"all three {scores['all']:.1%}. "
        f"Mean temporal consistency {scores['temporal_consistency']:.3f} (1 = one object in "
        f"every frame with a stable area and a constant-velocity path)."
    )
