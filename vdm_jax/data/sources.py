"""Builds a video source and its tokenizer from the ``data`` section of a config."""

import ml_collections

from vdm_jax.data import shapes
from vdm_jax.data.tokenizer import WordTokenizer

SOURCES = ("shapes", "folder", "tfds", "latents")


def build_source(cfg: ml_collections.ConfigDict, *, split: str = "train"):
    """The random-access source named by ``cfg.source`` for ``split`` ("train" or "eval")."""
    if cfg.source == "shapes":
        # Held-out clips come from another seed of the same procedural distribution.
        seed = cfg.seed if split == "train" else cfg.seed + 1_000_003
        return shapes.ShapesSource(
            num_examples=cfg.num_examples,
            num_frames=cfg.num_frames,
            resolution=cfg.resolution,
            seed=seed,
            min_travel=cfg.min_travel,
        )
    if cfg.source == "folder":
        from vdm_jax.data.video_folder import VideoFolderSource

        return VideoFolderSource(
            cfg.path if split == "train" else (cfg.eval_path or cfg.path),
            num_frames=cfg.num_frames,
            resolution=cfg.resolution,
            frame_stride=cfg.frame_stride,
            default_caption=cfg.default_caption,
        )
    if cfg.source == "tfds":
        from vdm_jax.data.tfds_source import TfdsVideoSource

        return TfdsVideoSource(
            cfg.tfds_name,
            split=cfg.tfds_split if split == "train" else cfg.tfds_eval_split,
            data_dir=cfg.path,
            num_frames=cfg.num_frames,
            resolution=cfg.resolution,
            frame_stride=cfg.frame_stride,
            video_key=cfg.tfds_video_key,
            label_key=cfg.tfds_label_key or None,
            caption_key=cfg.tfds_caption_key or None,
            caption_template=cfg.caption_template,
        )
    if cfg.source == "latents":
        from vdm_jax.data.latents import LatentSource

        return LatentSource(cfg.path if split == "train" else (cfg.eval_path or cfg.path))
    raise ValueError(f"unknown data.source {cfg.source!r}; known sources: {', '.join(SOURCES)}")


def pixel_data_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The ``data`` config of the pixel videos behind ``cfg``: itself, or for a latent cache
    the data section it was encoded from (recorded in its ``meta.json``)."""
    if cfg.source != "latents":
        return cfg
    from vdm_jax.data.latents import read_meta

    return ml_collections.ConfigDict(read_meta(cfg.path)["data"])


def is_shapes_data(cfg: ml_collections.ConfigDict) -> bool:
    """The built-in shapes clips, in pixels or as latents: prompt agreement can score them."""
    return pixel_data_config(cfg).source == "shapes"


def build_tokenizer(cfg: ml_collections.ConfigDict, source) -> WordTokenizer:
    """The shapes grammar's fixed vocabulary, or one built from a real source's captions."""
    if is_shapes_data(cfg):
        return WordTokenizer(shapes.vocabulary(), max_len=cfg.max_text_len)
    return WordTokenizer.for_captions(source.captions(), max_len=cfg.max_text_len)
