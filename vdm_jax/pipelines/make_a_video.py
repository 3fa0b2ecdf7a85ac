"""Sampling one Make-A-Video stage: conditioning in, video out, one jit-compiled DDPM/DDIM loop.

:class:`StageSampler` wraps a trained :class:`~vdm_jax.models.make_a_video.MakeAVideoUNet`:

- ``generate``: keyframes from captions and an image embedding (the prior's, or any given one);
- ``interpolate``: keyframes ``(b, k, h, w, 3)`` -> ``(b, (k - 1) * skip + 1, h, w, 3)``;
- ``super_resolve``: a video ``(b, t, h, w, 3)`` -> ``(b, t, H, W, 3)``, the input noised to a
  fixed augmentation level first (the level the model is told).

Classifier-free guidance doubles the batch over the caption and image embedding (null caption,
zero embedding, as in training); the conditioning video and scalar are the same in both halves.
With ``share_frames`` (SR_h, a per-frame model) every frame starts from the same noise.
"""

from typing import Any

import jax
import jax.numpy as jnp

from vdm_jax.diffusion import Schedule, classifier_free, sample
from vdm_jax.diffusion.conditioning import (
    initial_noise,
    low_res_condition,
    masked_frames,
    spread_keyframes,
)
from vdm_jax.pipelines.text_to_video import SamplerSettings


class StageSampler:
    """Samples a stage; ``params`` are the model's (EMA) parameters (without ``"params"``)."""

    def __init__(self, model, params: Any, schedule: Schedule, parameterization: str,
                 null_tokens: jax.Array, settings: SamplerSettings | None = None,
                 share_frames: bool = False):
        self.model = model
        self.params = params
        self.schedule = schedule
        self.parameterization = parameterization
        self.null_tokens = jnp.asarray(null_tokens)
        self.settings = settings or SamplerSettings()
        self.share_frames = share_frames
        self._run = jax.jit(self._sample, static_argnums=(4,))

    def generate(self, tokens: jax.Array, shape: tuple[int, ...], key: jax.Array,
                 image_embed: jax.Array | None = None) -> jax.Array:
        """Videos ``shape = (b, t, h, w, 3)`` for ``tokens (b, L)``; a model with image-embedding
        conditioning uses ``image_embed (b, d)`` or else the prior's prediction."""
        cond = {}
        if self.model.image_embed_dim:
            if image_embed is None:
                image_embed = self.prior(tokens)
            cond["image_embed"] = image_embed
        return self._run(self.params, tokens, cond, key, tuple(shape))

    def prior(self, tokens: jax.Array) -> jax.Array:
        """The prior P's image embedding for ``tokens (b, L)``: ``(b, d)``."""
        return self.model.apply({"params": self.params}, tokens, method="predict_image_embed")

    def interpolate(self, tokens: jax.Array, keyframes: jax.Array, skip: int,
                    key: jax.Array) -> jax.Array:
        """``keyframes (b, k, h, w, 3)`` -> ``(b, (k - 1) * skip + 1, h, w, 3)``; the given
        keyframes are kept in place, the frames between them sampled."""
        video, mask = spread_keyframes(keyframes, skip)
        cond = {"video": masked_frames(video, mask),
                "scalar": jnp.full((video.shape[0],), skip, jnp.float32)}
        out = self._run(self.params, tokens, cond, key, video.shape)
        return jnp.where(mask[..., None, None, None], video, out)

    def super_resolve(self, tokens: jax.Array, low: jax.Array, size: tuple[int, int],
                      key: jax.Array, aug_level: float = 0.0) -> jax.Array:
        """``low (b, t, h, w, 3)`` -> ``(b, t, *size, 3)``, the input noised to ``aug_level``
        (a diffusion time in [0, 1])."""
        aug_key, key = jax.random.split(key)
        level = jnp.full((low.shape[0],), aug_level, jnp.float32)
        cond = {"video": low_res_condition(low, tuple(size), level, aug_key, self.schedule),
                "scalar": level}
        shape = (*low.shape[:2], *size, low.shape[-1])
        return self._run(self.params, tokens, cond, key, shape)

    def _sample(self, params, tokens, cond, key, shape):
        def model_fn(z, t, c):
            return self.model.apply({"params": params}, z, t, c["tokens"], cond=c["cond"])

        uncond = {"tokens": jnp.broadcast_to(self.null_tokens, tokens.shape), "cond": dict(cond)}
        if "image_embed" in cond:
            uncond["cond"]["image_embed"] = jnp.zeros_like(cond["image_embed"])
        s = self.settings
        guided = classifier_free(model_fn, {"tokens": tokens, "cond": cond}, uncond, s.guidance)
        noise_key, sample_key = jax.random.split(key)
        noise = initial_noise(noise_key, shape, self.share_frames)
        return sample(guided, noise, sample_key, schedule=self.schedule,
                      parameterization=self.parameterization, sampler=s.sampler,
                      num_steps=s.num_steps, eta=s.eta)


def stage_sampler(experiment, params: Any) -> StageSampler:
    """A :class:`StageSampler` for a run (an ``Experiment``: model, schedule, tokenizer, config);
    ``sample.share_noise`` picks shared initial noise across frames."""
    cfg = experiment.config
    s = cfg.sample
    settings = SamplerSettings(sampler=s.sampler, num_steps=s.num_steps, eta=s.eta,
                               guidance=s.guidance)
    return StageSampler(experiment.model, params, experiment.schedule,
                        cfg.diffusion.parameterization, experiment.tokenizer.null_tokens(),
                        settings, share_frames=s.get("share_noise", False))
