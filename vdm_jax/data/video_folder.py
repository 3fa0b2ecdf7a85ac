"""A Grain random-access source over a folder of video files, decoded with PyAV.

Record format (shared by every video source): `{"video": uint8 (t, h, w, 3), "caption": str}`,
or `None` for a clip that fails to decode at read time (the pipeline drops and counts those).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from vdm_jax.data.video_io import normalize_resolution, probe_video, read_video, resize_center_crop

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
CLIP_SAMPLING = ("uniform", "random")


def clip_span(num_frames: int, stride: int) -> int:
    """Frames a clip covers in the file: `(num_frames - 1) * stride + 1`."""
    return (num_frames - 1) * stride + 1


def clip_start(
    available: int,
    span: int,
    clip: int,
    clips_per_video: int,
    rng: np.random.Generator | None = None,
) -> int:
    """First frame of clip `clip` of `clips_per_video` in a video of `available` frames.

    Uniform clips are evenly spaced from the first to the last possible start (one clip starts
    at frame 0); with `rng`, the start is drawn uniformly instead.
    """
    max_start = available - span
    if max_start < 0:
        raise ValueError(f"expected a video of at least {span} frames, got {available}")
    if rng is not None:
        return int(rng.integers(0, max_start + 1))
    if clips_per_video == 1:
        return 0
    return round(clip * max_start / (clips_per_video - 1))


def _find_videos(root: Path, extensions: Sequence[str]) -> list[str]:
    """Relative POSIX paths of files under `root` with a video extension, sorted."""
    exts = {e.lower() for e in extensions}
    found = (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    return sorted(p.relative_to(root).as_posix() for p in found)


def _probe(path: Path, need: int) -> tuple[int, str | None]:
    """Returns `(num_frames, None)` for a usable video or `(0, reason)` for one to skip."""
    try:
        num_frames, _, _, _ = probe_video(path)
    except Exception as e:  # any decoder/container failure means "skip", never a crash
        return 0, f"unreadable: {type(e).__name__}: {e}"
    if num_frames < need:
        return 0, f"too short: {num_frames} frames, need at least {need}"
    return num_frames, None


def _sidecar_caption(root: Path, rel: str) -> str | None:
    """Caption from `clip.txt` (or `clip.mp4.txt`) next to the video, if present."""
    path = root / rel
    for txt in (path.with_suffix(".txt"), path.with_name(path.name + ".txt")):
        if txt.is_file():
            return txt.read_text(encoding="utf-8").strip()
    return None


class VideoFolderSource:
    """Clips of `num_frames` frames from every video under `root`, as a Grain source.

    Videos are found recursively (sorted, so indices are stable) and probed once here: files
    that cannot be opened or hold fewer than `(num_frames - 1) * frame_stride + 1` frames are
    skipped and listed in `self.skipped` as `(relative_path, reason)`. Index `i` maps to video
    `i // clips_per_video`, clip `i % clips_per_video`; clips are evenly spaced
    (`clip_sampling="uniform"`) or drawn with `np.random.default_rng([seed, i])` ("random").
    Frames are resized to cover `resolution` and centre-cropped.

    Captions: `captions` is a JSON file name in `root` mapping relative path -> caption (videos
    missing from it, or all videos when the file is absent, fall back to a `<video>.txt`
    sidecar), a callable `relative_path -> str | None`, or None (every caption is
    `default_caption` or ""). A video without a caption gets `default_caption`; when that is
    None too, construction raises naming the files.

    A clip that fails to decode at read time returns None, increments `self.num_read_failures`
    (per process: Grain workers each keep their own count) and logs a warning.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        num_frames: int,
        resolution: int | tuple[int, int],
        frame_stride: int = 1,
        clips_per_video: int = 1,
        captions: str | Callable[[str], str | None] | None = "captions.json",
        default_caption: str | None = None,
        extensions: Sequence[str] = VIDEO_EXTENSIONS,
        clip_sampling: str = "uniform",
        seed: int = 0,
        probe_threads: int = 8,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"expected a directory of videos, got {self.root}")
        if num_frames < 1 or frame_stride < 1 or clips_per_video < 1:
            raise ValueError(
                "expected num_frames, frame_stride and clips_per_video >= 1, got "
                f"{num_frames}, {frame_stride}, {clips_per_video}"
            )
        if clip_sampling not in CLIP_SAMPLING:
            raise ValueError(f"expected clip_sampling in {CLIP_SAMPLING}, got {clip_sampling!r}")
        self.num_frames, self.frame_stride = num_frames, frame_stride
        self.resolution = normalize_resolution(resolution)
        self.clips_per_video, self.clip_sampling, self.seed = clips_per_video, clip_sampling, seed
        self.num_read_failures = 0
        self._scan(extensions, probe_threads)
        self._captions = self._resolve_captions(captions, default_caption)

    def _scan(self, extensions: Sequence[str], probe_threads: int) -> None:
        """Probes every candidate file; keeps usable ones, records the rest in `skipped`."""
        candidates = _find_videos(self.root, extensions)
        need = clip_span(self.num_frames, self.frame_stride)
        with ThreadPoolExecutor(max(1, probe_threads)) as pool:
            results = list(pool.map(lambda rel: _probe(self.root / rel, need), candidates))
        self.paths: list[str] = []
        self.frame_counts: list[int] = []
        self.skipped: list[tuple[str, str]] = []
        for rel, (count, reason) in zip(candidates, results, strict=True):
            if reason is None:
                self.paths.append(rel)
                self.frame_counts.append(count)
            else:
                self.skipped.append((rel, reason))
        if self.skipped:
            logger.warning(
                "VideoFolderSource: skipped %d of %d videos under %s (see .skipped); first: %s",
                len(self.skipped), len(candidates), self.root, self.skipped[0],
            )
        if not self.paths:
            raise ValueError(
                f"no usable videos (extensions {tuple(extensions)}, at least {need} frames) "
                f"under {self.root}; skipped: {self.skipped[:5]}"
            )

    def _resolve_captions(self, captions, default_caption: str | None) -> list[str]:
        """One caption per usable video, in `self.paths` order."""
        if captions is None:
            return [default_caption or ""] * len(self.paths)
        if callable(captions):
            lookup = captions
        else:
            table_path = self.root / captions
            table = {}
            if table_path.is_file():
                table = json.loads(table_path.read_text(encoding="utf-8"))
                if not isinstance(table, dict):
                    raise ValueError(f"expected {table_path} to hold a JSON object path -> caption")

            def lookup(rel: str) -> str | None:
                return table.get(rel, _sidecar_caption(self.root, rel))

        found = [lookup(rel) for rel in self.paths]
        missing = [rel for rel, c in zip(self.paths, found, strict=True) if c is None]
        if missing and default_caption is None:
            raise ValueError(
                f"{len(missing)} videos under {self.root} have no caption (e.g. {missing[:3]}); "
                f"add them to {captions!r}, write a <video>.txt next to each, "
                "or pass default_caption="
            )
        return [default_caption if c is None else str(c) for c in found]

    def __len__(self) -> int:
        return len(self.paths) * self.clips_per_video

    def captions(self) -> list[str]:
        """The caption of every usable video, in `self.paths` order (e.g. to build a vocabulary)."""
        return list(self._captions)

    def clip_location(self, index: int) -> tuple[str, int]:
        """`(relative_path, first_frame)` of clip `index`; deterministic by index."""
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        video, clip = divmod(index, self.clips_per_video)
        rng = None
        if self.clip_sampling == "random":
            rng = np.random.default_rng([self.seed, index])
        span = clip_span(self.num_frames, self.frame_stride)
        start = clip_start(self.frame_counts[video], span, clip, self.clips_per_video, rng)
        return self.paths[video], start

    def __getitem__(self, index: int) -> dict | None:
        """`{"video": uint8 (num_frames, H, W, 3), "caption": str}`, or None if decoding fails."""
        index = int(index)
        rel, start = self.clip_location(index)
        try:
            frames = read_video(
                self.root / rel, num_frames=self.num_frames, stride=self.frame_stride, start=start
            )
        except Exception as e:  # a corrupt file must not end a long run; the pipeline counts it
            self.num_read_failures += 1
            logger.warning(
                "VideoFolderSource: cannot read clip %d (%s @ %d): %s", index, rel, start, e
            )
            return None
        video = resize_center_crop(frames, self.resolution)
        return {"video": video, "caption": self._captions[index // self.clips_per_video]}

    def __repr__(self) -> str:
        return (
            f"VideoFolderSource(root={str(self.root)!r}, videos={len(self.paths)}, "
            f"clips={len(self)}, skipped={len(self.skipped)})"
        )
