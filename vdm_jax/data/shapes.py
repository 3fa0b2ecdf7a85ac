"""Procedural moving-shapes videos with captions: the built-in, download-free data source.

Each clip shows one filled shape of one palette colour on a black background, moving at constant
speed in one of four directions and staying fully inside the frame. Captions follow a fixed
grammar, ``"a [small|large] <colour> <shape> moving <direction>"``, so a generated video can be
scored against its prompt from pixels alone (see ``vdm_jax.eval.prompt_agreement``).

Records follow the source contract shared by every video source::

    {"video": uint8 (t, h, w, 3), "caption": str,
     "colour": int, "shape": int, "direction": int, "size": int}

The int labels index this source's own ``colour_names`` / ``shapes`` / ``directions`` / ``SIZES``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from vdm_jax.data.tokenizer import split_words

# Pure primaries and secondaries: pairwise far apart in chromaticity, so the nearest palette
# entry to a (possibly dimmed or anti-aliased) mean colour is unambiguous.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
SIZES: tuple[str, ...] = ("small", "large")
# Unit motion per direction as (dy, dx) in image coordinates (y grows downwards).
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {
    "left": (0, -1),
    "right": (0, 1),
    "up": (-1, 0),
    "down": (1, 0),
}
MIN_TRAVEL = 1 / 3  # minimum displacement over a clip, as a fraction of the frame extent


def caption_words(
    colours: Sequence[str] | Mapping[str, object] = tuple(COLOURS),
    shapes: Sequence[str] = SHAPES,
    directions: Sequence[str] = DIRECTIONS,
) -> list[str]:
    """Every word a caption can use, in a fixed grammar order (size words included)."""
    return ["a", *SIZES, *colours, *shapes, "moving", *directions]


def vocabulary() -> list[str]:
    """The default caption vocabulary (alias of ``caption_words()`` with the default grammar)."""
    return caption_words()


def make_caption(colour: str, shape: str, direction: str, size: str | None = None) -> str:
    """``"a [size] <colour> <shape> moving <direction>"``."""
    size_part = f"{size} " if size else ""
    return f"a {size_part}{colour} {shape} moving {direction}"


def parse_caption(
    text: str,
    colours: Sequence[str] | Mapping[str, object] = tuple(COLOURS),
    shapes: Sequence[str] = SHAPES,
    directions: Sequence[str] = DIRECTIONS,
) -> dict[str, str | None]:
    """Parse a grammar caption into ``dict(colour, shape, direction, size)`` (size may be None).

    Raises:
      ValueError: if ``text`` is not of the form ``"a [size] <colour> <shape> moving <dir>"``.
    """
    words = split_words(text)
    size = None
    if len(words) == 6 and words[1] in SIZES:
        size = words.pop(1)
    grammar = "'a [small|large] <colour> <shape> moving <direction>'"
    if len(words) != 5 or words[0] != "a" or words[3] != "moving":
        raise ValueError(f"caption {text!r} does not match the grammar {grammar}")
    _, colour, shape, _, direction = words
    for value, allowed, what in (
        (colour, colours, "colour"),
        (shape, shapes, "shape"),
        (direction, directions, "direction"),
    ):
        if value not in allowed:
            raise ValueError(
                f"caption {text!r}: unknown {what} {value!r}; expected one of {list(allowed)}"
            )
    return dict(colour=colour, shape=shape, direction=direction, size=size)


@dataclasses.dataclass(frozen=True)
class ShapeParams:
    """Sampled parameters of one clip; positions are bounding-box centres in pixels.

    ``centres`` is float (t, 2) as (y, x); ``side`` is the bounding-box side in pixels.
    """

    colour: int
    shape: int
    direction: int
    size: int
    side: float
    centres: np.ndarray


def _resolution(resolution: int | Sequence[int]) -> tuple[int, int]:
    """``int`` or ``(h, w)`` -> ``(h, w)``, validated."""
    hw = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    if len(hw) != 2 or min(hw) < 8:
        raise ValueError(f"resolution must be an int or (h, w) with both >= 8, got {resolution!r}")
    return int(hw[0]), int(hw[1])


def _signed_distance(shape: str, dy: np.ndarray, dx: np.ndarray, half: float) -> np.ndarray:
    """Approximate signed distance in pixels (negative inside) of a shape centred at the origin.

    ``half`` is half the bounding-box side; the triangle points up and fills its bounding box's
    base, so its fill ratio is 1/2 (circle pi/4, square 1).
    """
    if shape == "circle":
        return np.sqrt(dy**2 + dx**2) - half
    if shape == "square":
        return np.maximum(np.abs(dy), np.abs(dx)) - half
    if shape == "triangle":
        # Sides: |dx| <= (dy + half) / 2, normalised to a distance; base: dy <= half.
        sides = (np.abs(dx) - (dy + half) / 2) / np.sqrt(1.25)
        return np.maximum(dy - half, sides)
    raise ValueError(f"unknown shape {shape!r}; expected one of {list(SHAPES)}")


def render(
    shape: str, rgb: Sequence[int], centres: np.ndarray, side: float, hw: tuple[int, int]
) -> np.ndarray:
    """Render a shape at per-frame centres with a one-pixel anti-aliased edge.

    Args:
      shape: a name in ``SHAPES``.
      rgb: colour as three ints in [0, 255].
      centres: float (t, 2) bounding-box centres as (y, x) in pixels.
      side: bounding-box side in pixels.
      hw: frame size (h, w).

    Returns:
      uint8 (t, h, w, 3).
    """
    ys = np.arange(hw[0], dtype=np.float32)[None, :, None] + 0.5
    xs = np.arange(hw[1], dtype=np.float32)[None, None, :] + 0.5
    dy = ys - centres[:, 0, None, None].astype(np.float32)
    dx = xs - centres[:, 1, None, None].astype(np.float32)
    coverage = np.clip(0.5 - _signed_distance(shape, dy, dx, side / 2), 0.0, 1.0)
    video = coverage[..., None] * np.asarray(rgb, np.float32)
    return np.round(video).astype(np.uint8)


class ShapesSource:
    """Grain random-access source of captioned moving-shape clips, deterministic by index.

    Args:
      num_examples: ``len(source)``.
      num_frames: frames per clip t.
      resolution: ``int`` or ``(h, w)``.
      seed: base seed; item ``i`` uses ``np.random.default_rng([seed, i])``.
      colours: name -> RGB palette.
      shapes: shape names (a subset of ``SHAPES``).
      directions: direction names (a subset of ``DIRECTIONS``).
      size_range: bounding-box side as a fraction of ``min(h, w)``; sides below the middle of
        the range are "small", the rest "large".
      caption_size: include the size word in captions.
      min_travel: least displacement over a clip as a fraction of the frame (at least
        ``MIN_TRAVEL``); travel is drawn between it and what fits. ``1.0`` makes every object
        cross the whole frame, edge to edge.
    """

    def __init__(
        self,
        num_examples: int = 100_000,
        num_frames: int = 8,
        resolution: int | Sequence[int] = 32,
        seed: int = 0,
        colours: Mapping[str, Sequence[int]] = COLOURS,
        shapes: Sequence[str] = SHAPES,
        directions: Sequence[str] = DIRECTIONS,
        size_range: tuple[float, float] = (0.3, 0.5),
        caption_size: bool = False,
        min_travel: float = MIN_TRAVEL,
    ):
        if num_examples < 1 or num_frames < 1:
            raise ValueError(
                f"num_examples and num_frames must be >= 1, got {num_examples}, {num_frames}"
            )
        lo, hi = size_range
        if not 0 < lo <= hi <= 1 - MIN_TRAVEL:
            raise ValueError(
                f"size_range must satisfy 0 < lo <= hi <= {1 - MIN_TRAVEL:.3f} so the shape can "
                f"travel {MIN_TRAVEL:.2f} of the frame, got {size_range}"
            )
        for name, allowed, what in ((shapes, SHAPES, "shapes"), (directions, DIRECTIONS, "dirs")):
            unknown = sorted(set(name) - set(allowed))
            if unknown or not name:
                raise ValueError(f"{what} must be a non-empty subset of {allowed}, got {name}")
        if not colours:
            raise ValueError("colours must be a non-empty name -> RGB mapping")
        if not MIN_TRAVEL <= min_travel <= 1.0:
            raise ValueError(f"min_travel must be in [{MIN_TRAVEL:.3f}, 1], got {min_travel}")
        self.num_examples = int(num_examples)
        self.num_frames = int(num_frames)
        self.resolution = _resolution(resolution)
        self.seed = int(seed)
        self.colours = {k: tuple(int(c) for c in v) for k, v in colours.items()}
        self.colour_names = tuple(self.colours)
        self.shapes = tuple(shapes)
        self.directions = tuple(directions)
        self.size_range = (float(lo), float(hi))
        self.caption_size = bool(caption_size)
        self.min_travel = float(min_travel)

    def __len__(self) -> int:
        return self.num_examples

    def __repr__(self) -> str:
        return (
            f"ShapesSource(num_examples={self.num_examples}, num_frames={self.num_frames}, "
            f"resolution={self.resolution}, seed={self.seed})"
        )

    def vocabulary(self) -> list[str]:
        """Every word this source's captions can use."""
        return caption_words(self.colour_names, self.shapes, self.directions)

    def params(self, index: int) -> ShapeParams:
        """Sample the clip parameters of item ``index`` (deterministic)."""
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} out of range for {self.num_examples} examples")
        rng = np.random.default_rng([self.seed, index])
        colour = int(rng.integers(len(self.colour_names)))
        shape = int(rng.integers(len(self.shapes)))
        direction = int(rng.integers(len(self.directions)))
        lo, hi = self.size_range
        frac = rng.uniform(lo, hi)
        side = frac * min(self.resolution)
        size = int(frac >= (lo + hi) / 2)
        vec = np.array(DIRECTION_VECTORS[self.directions[direction]], np.float64)
        extent = np.array(self.resolution, np.float64)
        # Travel along the motion axis: at least min_travel of the frame, at most what fits.
        axis = int(np.argmax(np.abs(vec)))
        most = extent[axis] - side
        travel = rng.uniform(min(self.min_travel * extent[axis], most), most)
        # Start so that start + travel * vec keeps the box inside [side/2, extent - side/2].
        room = extent - side - travel * np.abs(vec)
        start = side / 2 + rng.uniform(0.0, 1.0, size=2) * room
        start = np.where(vec < 0, extent - side / 2 - (start - side / 2), start)
        steps = np.linspace(0.0, 1.0, self.num_frames)[:, None]
        centres = start[None, :] + steps * travel * vec[None, :]
        return ShapeParams(colour, shape, direction, size, float(side), centres)

    def caption(self, p: ShapeParams) -> str:
        """Caption of a parameter set."""
        size = SIZES[p.size] if self.caption_size else None
        return make_caption(
            self.colour_names[p.colour], self.shapes[p.shape], self.directions[p.direction], size
        )

    def __getitem__(self, index: int) -> dict:
        """Record ``{"video": uint8 (t, h, w, 3), "caption": str, labels...}``."""
        index = int(index)
        p = self.params(index)
        rgb = self.colours[self.colour_names[p.colour]]
        video = render(self.shapes[p.shape], rgb, p.centres, p.side, self.resolution)
        return {
            "video": video,
            "caption": self.caption(p),
            "colour": p.colour,
            "shape": p.shape,
            "direction": p.direction,
            "size": p.size,
        }
