"""Data: Grain sources (built-in shapes, video folders, TFDS), video file I/O and input pipelines.

Names are imported lazily so `import vdm_jax.data` stays cheap and optional dependencies
(tensorflow-datasets) load only when their source is used.
"""

import importlib

_EXPORTS = {
    "ShapesSource": "vdm_jax.data.shapes",
    "WordTokenizer": "vdm_jax.data.tokenizer",
    "make_pipeline": "vdm_jax.data.pipeline",
    "build_source": "vdm_jax.data.sources",
    "build_tokenizer": "vdm_jax.data.sources",
    "VideoFolderSource": "vdm_jax.data.video_folder",
    "TfdsVideoSource": "vdm_jax.data.tfds_source",
    "read_video": "vdm_jax.data.video_io",
    "probe_video": "vdm_jax.data.video_io",
    "write_mp4": "vdm_jax.data.video_io",
    "write_gif": "vdm_jax.data.video_io",
    "write_frame_grid": "vdm_jax.data.video_io",
    "frame_grid": "vdm_jax.data.video_io",
    "resize_center_crop": "vdm_jax.data.video_io",
    "to_uint8": "vdm_jax.data.video_io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vdm_jax.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
