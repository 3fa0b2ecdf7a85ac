"""A Grain source over a prepared TensorFlow Datasets video dataset (ArrayRecord files).

Built on `tfds.data_source`, which reads records by index with no TensorFlow for features
decoded in NumPy: `Tensor` and `Sequence(Image)` (PNG/JPEG frames, decoded with Pillow).
`tfds.features.Video` features (used by e.g. ucf101, moving_mnist) need TensorFlow installed
to be read, since that feature class is TensorFlow-backed in tensorflow-datasets 4.9.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from vdm_jax.data.video_folder import CLIP_SAMPLING, clip_span, clip_start
from vdm_jax.data.video_io import normalize_resolution, resize_center_crop

logger = logging.getLogger(__name__)


def import_tfds():
    """Imports tensorflow_datasets, with an actionable error when it is missing."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "TfdsVideoSource needs tensorflow-datasets: `pip install tensorflow-datasets` "
            "(TensorFlow itself is not needed for Tensor or Sequence(Image) video features)"
        ) from e
    return tfds


def to_text(value) -> str:
    """A caption/feature value (str, bytes, numpy bytes/str scalar) as str."""
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def to_rgb_video(value, key: str) -> np.ndarray:
    """A decoded video feature (array or list of frames) as uint8 `(t, h, w, 3)`."""
    video = np.stack(value) if isinstance(value, list | tuple) else np.asarray(value)
    if video.dtype != np.uint8:
        raise ValueError(f"expected feature {key!r} to be uint8, got {video.dtype}")
    if video.ndim != 4 or video.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"expected feature {key!r} of shape (t, h, w, c) with c in (1, 3, 4), got {video.shape}"
        )
    if video.shape[-1] == 1:  # grayscale, e.g. Moving MNIST
        return np.repeat(video, 3, axis=-1)
    return video[..., :3]  # drop alpha


class TfdsVideoSource:
    """Clips of `num_frames` frames from a TFDS dataset, as a Grain random-access source.

    Returns `{"video": uint8 (num_frames, H, W, 3), "caption": str}`. The caption comes from
    `caption_key` (a text feature) or `label_key` (a `ClassLabel`, mapped to its class name),
    formatted with `caption_template` (e.g. `"a video of {}"`); with neither, it is
    `default_caption`. Index `i` maps to example `i // clips_per_example`; clips are evenly
    spaced ("uniform") or drawn with `np.random.default_rng([seed, i])` ("random").
    An example with too few frames returns None and is counted in `num_too_short`.
    """

    def __init__(
        self,
        name: str,
        *,
        split: str = "train",
        data_dir: str | os.PathLike | None = None,
        num_frames: int,
        resolution: int | tuple[int, int],
        frame_stride: int = 1,
        clips_per_example: int = 1,
        clip_sampling: str = "uniform",
        seed: int = 0,
        video_key: str = "video",
        caption_key: str | None = None,
        label_key: str | None = None,
        caption_template: str = "{}",
        default_caption: str = "",
    ):
        if caption_key is not None and label_key is not None:
            raise ValueError("expected at most one of caption_key and label_key")
        if num_frames < 1 or frame_stride < 1 or clips_per_example < 1:
            raise ValueError(
                "expected num_frames, frame_stride and clips_per_example >= 1, got "
                f"{num_frames}, {frame_stride}, {clips_per_example}"
            )
        if clip_sampling not in CLIP_SAMPLING:
            raise ValueError(f"expected clip_sampling in {CLIP_SAMPLING}, got {clip_sampling!r}")
        tfds = import_tfds()
        data_dir = os.fspath(data_dir) if data_dir is not None else None
        self.source = tfds.data_source(name, split=split, data_dir=data_dir)
        self.name, self.split = name, split
        self.num_frames, self.frame_stride = num_frames, frame_stride
        self.resolution = normalize_resolution(resolution)
        self.clips_per_example, self.clip_sampling, self.seed = (
            clips_per_example, clip_sampling, seed,
        )
        self.video_key, self.caption_key, self.label_key = video_key, caption_key, label_key
        self.caption_template, self.default_caption = caption_template, default_caption
        self.num_too_short = 0
        self.class_names = self._check_features(self.source.dataset_info.features)

    def _check_features(self, features) -> Sequence[str] | None:
        """Validates the keys against the dataset; returns the label class names, if any."""
        keys = [k for k in (self.video_key, self.caption_key, self.label_key) if k is not None]
        for key in keys:
            if key not in features:
                raise ValueError(
                    f"{self.name}: no feature {key!r}; available: {sorted(features.keys())}"
                )
        shape = getattr(features[self.video_key], "shape", None)
        need = clip_span(self.num_frames, self.frame_stride)
        if shape and shape[0] is not None and shape[0] < need:
            raise ValueError(
                f"{self.name}: feature {self.video_key!r} has {shape[0]} frames per example; "
                f"num_frames={self.num_frames}, frame_stride={self.frame_stride} need {need}"
            )
        if self.label_key is None:
            return None
        return getattr(features[self.label_key], "names", None)

    def __len__(self) -> int:
        return len(self.source) * self.clips_per_example

    def captions(self) -> list[str]:
        """Every caption the source can produce (e.g. to build a vocabulary).

        With `label_key` these are the formatted class names; with `caption_key` every example
        is read once (slow for large datasets).
        """
        if self.caption_key is not None:
            return [self.caption(self.source[i]) for i in range(len(self.source))]
        if self.label_key is not None and self.class_names:
            return [self.caption_template.format(name) for name in self.class_names]
        return [self.default_caption]

    def caption(self, example: dict) -> str:
        """The caption of one decoded example."""
        if self.caption_key is not None:
            return self.caption_template.format(to_text(example[self.caption_key]))
        if self.label_key is not None:
            label = int(np.asarray(example[self.label_key]))
            text = self.class_names[label] if self.class_names else str(label)
            return self.caption_template.format(text)
        return self.default_caption

    def __getitem__(self, index: int) -> dict | None:
        """`{"video": uint8 (num_frames, H, W, 3), "caption": str}`, or None if too short."""
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        example_index, clip = divmod(index, self.clips_per_example)
        example = self.source[example_index]
        video = to_rgb_video(example[self.video_key], self.video_key)
        span = clip_span(self.num_frames, self.frame_stride)
        if video.shape[0] < span:
            self.num_too_short += 1
            logger.warning(
                "TfdsVideoSource: example %d of %s has %d frames, need %d; dropped",
                example_index, self.name, video.shape[0], span,
            )
            return None
        rng = np.random.default_rng([self.seed, index]) if self.clip_sampling == "random" else None
        start = clip_start(video.shape[0], span, clip, self.clips_per_example, rng)
        clip_frames = video[start : start + span : self.frame_stride]
        return {
            "video": resize_center_crop(clip_frames, self.resolution),
            "caption": self.caption(example),
        }

    def __repr__(self) -> str:
        return f"TfdsVideoSource({self.name!r}, split={self.split!r}, clips={len(self)})"
