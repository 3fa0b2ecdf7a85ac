"""Video files in and out: MP4 (H.264 via PyAV, which bundles FFmpeg), GIF and PNG frame grids.

Videos are channels-last arrays `(t, h, w, c)`: either uint8 in [0, 255] or float in [-1, 1]
(model space). Writers accept both; readers return uint8 RGB.
"""

from __future__ import annotations

import os
from fractions import Fraction

import av
import einops
import numpy as np
from PIL import Image

PathLike = str | os.PathLike


def to_uint8(video) -> np.ndarray:
    """Converts a video (any shape) to uint8: uint8 passes through, floats map [-1, 1] -> [0, 255].

    Float values outside [-1, 1] are clipped (samplers overshoot slightly); NaN maps to black.
    """
    x = np.asarray(video)
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"expected a uint8 or float video, got dtype {x.dtype}")
    x = np.nan_to_num(x.astype(np.float32), nan=-1.0, posinf=1.0, neginf=-1.0)
    return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def to_float(video) -> np.ndarray:
    """uint8 video (any shape) -> float32 in [-1, 1], the inverse of :func:`to_uint8`."""
    return np.asarray(video).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _as_rgb(video, ndim: int = 4) -> np.ndarray:
    """Validates and converts `(..., h, w, c)` with c in {1, 3} to uint8 RGB `(..., h, w, 3)`."""
    x = to_uint8(video)
    if x.ndim != ndim or x.shape[-1] not in (1, 3):
        layout = "(t, h, w, c)" if ndim == 4 else "(n, t, h, w, c)"
        raise ValueError(f"expected a video of shape {layout} with c in (1, 3), got {x.shape}")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x


def upscale(video: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of `(..., h, w, c)` by an integer factor (tiny videos)."""
    if int(scale) != scale or scale < 1:
        raise ValueError(f"expected an integer scale >= 1, got {scale}")
    if scale == 1:
        return video
    return np.repeat(np.repeat(video, scale, axis=-3), scale, axis=-2)


def _pad_to_even(video: np.ndarray) -> np.ndarray:
    """Pads `(t, h, w, 3)` by edge replication to even h and w (H.264 with yuv420p needs them)."""
    _, h, w, _ = video.shape
    return np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_mp4(
    path: PathLike,
    video,
    fps: float = 8,
    *,
    scale: int = 1,
    crf: int = 18,
    codec_options: dict[str, str] | None = None,
) -> None:
    """Writes `(t, h, w, c)` (uint8, or float in [-1, 1]) as H.264/yuv420p.

    The container follows the file extension (`.mp4` by convention; `.mkv` works too). Odd
    sizes are padded by one replicated row/column; `scale` upscales with nearest neighbour
    first. MP4 files get `+faststart` (index at the front) so browsers can stream them.
    """
    frames = _pad_to_even(upscale(_as_rgb(video), scale))
    _, h, w, _ = frames.shape
    fmt_options = {"movflags": "+faststart"} if str(path).lower().endswith(".mp4") else {}
    with av.open(os.fspath(path), mode="w", options=fmt_options) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), **(codec_options or {})}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush delayed frames


def write_gif(path: PathLike, video, fps: float = 8, scale: int = 1) -> None:
    """Writes `(t, h, w, c)` (uint8, or float in [-1, 1]) as a GIF that loops forever."""
    frames = [Image.fromarray(f) for f in upscale(_as_rgb(video), scale)]
    frames[0].save(
        os.fspath(path),
        save_all=True,
        append_images=frames[1:],
        duration=1000.0 / fps,
        loop=0,
    )


def frame_grid(videos, scale: int = 1, separator: int = 2, fill: int = 255) -> np.ndarray:
    """Lays out `(n, t, h, w, c)` videos as one uint8 image: a row per video, a column per frame.

    Returns `(n*h*s + (n-1)*sep, t*w*s + (t-1)*sep, 3)`; `(t, h, w, c)` is one row.
    """
    x = np.asarray(videos)
    x = _as_rgb(x[None] if x.ndim == 4 else x, ndim=5)
    x = upscale(x, scale)
    # A `separator`-wide border on the bottom/right of every cell, trimmed off the grid's edge.
    x = np.pad(x, ((0, 0), (0, 0), (0, separator), (0, separator), (0, 0)), constant_values=fill)
    grid = einops.rearrange(x, "n t h w c -> (n h) (t w) c")
    return grid[: grid.shape[0] - separator, : grid.shape[1] - separator]


def write_frame_grid(path: PathLike, videos, scale: int = 1, separator: int = 2) -> np.ndarray:
    """Writes `frame_grid(videos, scale, separator)` as a PNG and returns the grid array."""
    grid = frame_grid(videos, scale=scale, separator=separator)
    Image.fromarray(grid).save(os.fspath(path), format="PNG")
    return grid


def probe_video(path: PathLike) -> tuple[int, int, int, float]:
    """Returns `(num_frames, height, width, fps)` of the first video stream.

    Uses container metadata; when the frame count is missing (e.g. Matroska/WebM) the frames
    are counted by decoding. Raises `ValueError` for a file without a video stream and
    `av.error.FFmpegError` for unreadable files.
    """
    with av.open(os.fspath(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream found")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        height, width = stream.codec_context.height, stream.codec_context.width
        num_frames = stream.frames
        if num_frames <= 0:
            num_frames = sum(1 for _ in container.decode(stream))
    return int(num_frames), int(height), int(width), float(rate) if rate else 0.0


def read_video(
    path: PathLike, *, num_frames: int | None = None, stride: int = 1, start: int = 0
) -> np.ndarray:
    """Decodes frames `start, start+stride, ...` (`num_frames` of them, or to the end) as uint8.

    Returns `(t, h, w, 3)` RGB. Raises `ValueError` when the file holds fewer frames than asked
    for, and `av.error.FFmpegError` when the stream cannot be decoded.
    """
    if stride < 1 or start < 0 or (num_frames is not None and num_frames < 1):
        raise ValueError(
            f"expected stride >= 1, start >= 0, num_frames >= 1 or None; "
            f"got stride={stride}, start={start}, num_frames={num_frames}"
        )
    frames = []
    with av.open(os.fspath(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream found")
        stream = container.streams.video[0]
        # Decoding is sequential from the start; frames before `start` are decoded, not converted.
        for i, frame in enumerate(container.decode(stream)):
            if i >= start and (i - start) % stride == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == num_frames:
                    break
    if num_frames is not None and len(frames) < num_frames:
        need = start + (num_frames - 1) * stride + 1
        raise ValueError(
            f"{path}: expected at least {need} frames for num_frames={num_frames}, "
            f"stride={stride}, start={start}; decoded only {len(frames)} matching frames"
        )
    if not frames:
        raise ValueError(f"{path}: no frames decoded at or after start={start}")
    return np.stack(frames)


def resize_center_crop(video: np.ndarray, resolution: int | tuple[int, int]) -> np.ndarray:
    """Resizes uint8 `(t, h, w, 3)` so it covers `resolution` (Pillow bilinear, antialiased when
    shrinking), then centre-crops to `(t, H, W, 3)`. An int resolution means a square."""
    out_h, out_w = normalize_resolution(resolution)
    _, h, w, _ = video.shape
    s = max(out_h / h, out_w / w)
    new_h, new_w = max(out_h, round(h * s)), max(out_w, round(w * s))
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    box = (left, top, left + out_w, top + out_h)
    if (new_h, new_w) == (h, w):
        return np.ascontiguousarray(video[:, top : top + out_h, left : left + out_w])
    resized = [
        np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.Resampling.BILINEAR).crop(box))
        for f in video
    ]
    return np.stack(resized)


def normalize_resolution(resolution: int | tuple[int, int]) -> tuple[int, int]:
    """`16 -> (16, 16)`; `(h, w)` passes through. Raises for non-positive sizes."""
    hw = (resolution, resolution) if np.isscalar(resolution) else tuple(resolution)
    if len(hw) != 2 or any(int(v) != v or v < 1 for v in hw):
        raise ValueError(
            f"expected resolution as a positive int or (height, width), got {resolution}"
        )
    return int(hw[0]), int(hw[1])
