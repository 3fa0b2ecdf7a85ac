"""What a stage of a cascade learns: the conditioning the train step builds from each real clip.

- ``generate``: text-to-video (or image); optionally conditioned on an image embedding of the
  clip's first frame (Make-A-Video's decoder D_t), here the frame average-pooled to a
  ``image_embed_grid x image_embed_grid`` grid.
- ``interpolate``: frame interpolation (Make-A-Video's F): every ``skip``-th frame is kept (skip
  drawn per example from ``skips``), the others zeroed; the masked clip and the mask channel
  condition the model, and so does the skip (a scalar).
- ``super_resolve``: the clip shrunk to ``low_resolution``, noised to a level drawn from
  U(0, ``aug_max``) (noise-conditioning augmentation) and resized back; the level is the scalar.

The config's ``task`` section holds these fields; without one a run is ``generate``.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from vdm_jax.data.video_io import normalize_resolution
from vdm_jax.diffusion import Schedule, drop_conditioning
from vdm_jax.diffusion.conditioning import (
    frame_mask,
    low_res_condition,
    masked_frames,
    pooled_frame_embedding,
    resize_video,
)

TASKS = ("generate", "interpolate", "super_resolve")


@dataclasses.dataclass(frozen=True)
class Task:
    """A stage's training task (see the module docstring)."""

    name: str = "generate"
    image_embed_grid: int = 0  # generate: 0 = no image-embedding conditioning
    skips: tuple[int, ...] = (4,)  # interpolate
    low_resolution: tuple[int, int] = (16, 16)  # super_resolve
    aug_max: float = 0.5  # super_resolve: augmentation levels are diffusion times in [0, aug_max]

    def __post_init__(self):
        if self.name not in TASKS:
            raise ValueError(f"unknown task {self.name!r}; known: {list(TASKS)}")
        if self.name == "interpolate" and (not self.skips or min(self.skips) < 1):
            raise ValueError(f"task.skips must be positive frame skips, got {self.skips}")
        if self.name == "super_resolve" and not 0.0 <= self.aug_max <= 1.0:
            raise ValueError(f"task.aug_max must be in [0, 1], got {self.aug_max}")

    @property
    def model_fields(self) -> dict:
        """The ``MakeAVideoUNet`` inputs this task feeds: conditioning-video channels, whether a
        scalar conditions it, the image-embedding size."""
        channels = {"generate": 0, "interpolate": 4, "super_resolve": 3}[self.name]
        embed = 3 * self.image_embed_grid**2 if self.name == "generate" else 0
        return dict(cond_channels=channels, scalar_cond=self.name != "generate",
                    image_embed_dim=embed)

    def conditioning(self, key: jax.Array, video: jax.Array, schedule: Schedule) -> dict:
        """The conditioning of a batch of real clips ``(b, t, h, w, 3)`` (see ``MakeAVideoUNet``):
        a dict with some of ``video``, ``scalar``, ``image_embed``; empty for plain generation."""
        if self.name == "interpolate":
            return self._interpolation(key, video)
        if self.name == "super_resolve":
            return self._super_resolution(key, video, schedule)
        if self.image_embed_grid:
            return {"image_embed": pooled_frame_embedding(video[:, 0], self.image_embed_grid)}
        return {}

    def _interpolation(self, key: jax.Array, video: jax.Array) -> dict:
        choice = jax.random.randint(key, (video.shape[0],), 0, len(self.skips))
        skip = jnp.asarray(self.skips, jnp.int32)[choice]
        mask = frame_mask(video.shape[1], skip)
        return {"video": masked_frames(video, mask), "scalar": skip.astype(jnp.float32)}

    def _super_resolution(self, key: jax.Array, video: jax.Array, schedule: Schedule) -> dict:
        level_key, noise_key = jax.random.split(key)
        level = jax.random.uniform(level_key, (video.shape[0],), maxval=self.aug_max)
        low = resize_video(video, self.low_resolution)
        cond = low_res_condition(low, video.shape[2:4], level, noise_key, schedule)
        return {"video": cond, "scalar": level}


def task_from_config(config: ml_collections.ConfigDict) -> Task:
    """The run's :class:`Task` from its ``task`` section (``generate`` when there is none)."""
    cfg = config.get("task")
    if cfg is None:
        return Task()
    return Task(name=cfg.name, image_embed_grid=cfg.get("image_embed_grid", 0),
                skips=tuple(cfg.get("skips", (4,))),
                low_resolution=normalize_resolution(cfg.get("low_resolution", 16)),
                aug_max=cfg.get("aug_max", 0.5))


def drop_text_conditioning(key: jax.Array, tokens: jax.Array, cond: dict,
                           null_tokens: jax.Array, rate: float) -> tuple[jax.Array, dict]:
    """Classifier-free dropout: each example's caption (and image embedding, with one draw) is
    replaced by the null caption (a zero embedding) with probability ``rate``; a conditioning
    video and scalar are kept."""
    keep, null = {"tokens": tokens}, {"tokens": null_tokens}
    if "image_embed" in cond:
        keep["image_embed"] = cond["image_embed"]
        null["image_embed"] = jnp.zeros_like(cond["image_embed"][:1])
    dropped = drop_conditioning(key, keep, null, rate)
    return dropped.pop("tokens"), {**cond, **dropped}
