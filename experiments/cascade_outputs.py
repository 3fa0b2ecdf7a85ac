"""What ``experiments.sample_cascade`` writes: each stage's video (MP4, GIF and a PNG frame
strip), one picture of every stage at the final size, and the timings (Markdown and JSON)."""

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from experiments.report import markdown_table
from vdm_jax.data import video_io

SEPARATOR = 2  # pixels between frames in the PNG grids
LABEL_WIDTH = 64  # the comparison picture's column of stage names


def display_scale(height: int) -> int:
    """Nearest-neighbour upscaling for viewing: frames at least 128 pixels high."""
    return max(1, 128 // height)


def write_stage_video(out: Path, name: str, video: np.ndarray, fps: int) -> None:
    """``out/<name>.mp4``, ``.gif`` and ``.png`` (a frame strip) of ``video (t, h, w, 3)`` in
    [-1, 1], upscaled by ``display_scale(h)``."""
    scale = display_scale(video.shape[1])
    video_io.write_mp4(out / f"{name}.mp4", video, fps=fps, scale=scale)
    video_io.write_gif(out / f"{name}.gif", video, fps=fps, scale=scale)
    video_io.write_frame_grid(out / f"{name}.png", video, scale=scale, separator=SEPARATOR)


def frame_positions(num_frames: int, final_frames: int) -> np.ndarray:
    """Where each of ``num_frames`` frames sits in the ``final_frames``-frame video: keyframe ``i``
    at ``i * skip`` (evenly spread, first and last frames kept)."""
    if num_frames == 1:
        return np.zeros(1, int)
    return np.arange(num_frames) * (final_frames - 1) // (num_frames - 1)


def at_final_size(video: np.ndarray, final_frames: int, size: tuple[int, int]) -> np.ndarray:
    """``video (t, h, w, 3)`` as ``(final_frames, *size, 3)``: nearest-upsampled, its frames at
    :func:`frame_positions`, the frames between them black."""
    t, h, w, c = video.shape
    rows = np.arange(size[0]) * h // size[0]
    cols = np.arange(size[1]) * w // size[1]
    out = np.full((final_frames, *size, c), -1.0, np.float32)
    out[frame_positions(t, final_frames)] = video[:, rows][:, :, cols]
    return out


def write_comparison(path: Path, videos: dict[str, np.ndarray]) -> np.ndarray:
    """One row per stage (``videos``: name -> ``(t, h, w, 3)`` in [-1, 1], in cascade order),
    each brought to the last stage's frame count and size, the stage's name on the left; returns
    the picture written."""
    final = list(videos.values())[-1]
    rows = np.stack([at_final_size(v, final.shape[0], final.shape[1:3])
                     for v in videos.values()])
    scale = display_scale(final.shape[1])
    grid = video_io.frame_grid(rows, scale=scale, separator=SEPARATOR)
    picture = _with_labels(grid, list(videos), final.shape[1] * scale + SEPARATOR)
    Image.fromarray(picture).save(path, format="PNG")
    return picture


def _with_labels(grid: np.ndarray, names: list[str], row_pitch: int) -> np.ndarray:
    image = Image.new("RGB", (LABEL_WIDTH + grid.shape[1], grid.shape[0]), "white")
    image.paste(Image.fromarray(grid), (LABEL_WIDTH, 0))
    draw = ImageDraw.Draw(image)
    for i, name in enumerate(names):
        draw.text((4, i * row_pitch + row_pitch // 2 - 6), name, fill="black")
    return np.asarray(image)


def timing_table(rows: list[dict]) -> str:
    """The per-stage Markdown table of a cascade report's ``stages``."""
    head = ["stage", "task", "sampler", "steps", "guidance", "compile (s)", "run (s)", "output"]
    cells = [[r["stage"], r["task"], r["sampler"], str(r["num_steps"]), f"{r['guidance']:g}",
              f"{r['compile_seconds']:.2f}", f"{r['run_seconds']:.2f}",
              "×".join(str(d) for d in r["output_shape"])] for r in rows]
    return markdown_table(head, cells)


def write_report(path: Path, report: dict) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
