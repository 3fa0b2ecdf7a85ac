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

import functools
import inspect
import time
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
    """Samples a stage; ``params`` are the model's (EMA) parameters (without ``"params"``).

    Each task with each set of input shapes is one program, traced, lowered and compiled once
    (ahead of time with :meth:`compile`, else at its first call) and run from then on.
    """

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
        self._programs = {}  # (task, static argument, settings, input shapes) -> program

    def generate(self, tokens: jax.Array, shape: tuple[int, ...], key: jax.Array,
                 image_embed: jax.Array | None = None) -> jax.Array:
        """Videos ``shape = (b, t, h, w, 3)`` for ``tokens (b, L)``; a model with image-embedding
        conditioning uses ``image_embed (b, d)`` or else the prior's prediction."""
        return self._call("generate", tokens, shape, key, image_embed)

    def prior(self, tokens: jax.Array) -> jax.Array:
        """The prior P's image embedding for ``tokens (b, L)``: ``(b, d)``."""
        return self._prior(self.params, tokens)

    def interpolate(self, tokens: jax.Array, keyframes: jax.Array, skip: int,
                    key: jax.Array) -> jax.Array:
        """``keyframes (b, k, h, w, 3)`` -> ``(b, (k - 1) * skip + 1, h, w, 3)``; the given
        keyframes are kept in place, the frames between them sampled."""
        return self._call("interpolate", tokens, keyframes, skip, key)

    def super_resolve(self, tokens: jax.Array, low: jax.Array, size: tuple[int, int],
                      key: jax.Array, aug_level: float = 0.0) -> jax.Array:
        """``low (b, t, h, w, 3)`` -> ``(b, t, *size, 3)``, the input noised to ``aug_level``
        (a diffusion time in [0, 1])."""
        return self._call("super_resolve", tokens, low, size, key, aug_level)

    def compile(self, task: str, *args, **kwargs) -> float:
        """Compiles ``task`` (``"generate"``, ``"interpolate"`` or ``"super_resolve"``) for
        these arguments (as that method takes them; arrays may be ``jax.ShapeDtypeStruct``)
        without running it, so that a call with inputs of the same shapes only runs. Returns
        the seconds spent tracing, lowering and compiling."""
        start = time.perf_counter()
        self._program(task, *args, **kwargs)
        return time.perf_counter() - start

    def _call(self, task: str, *args) -> jax.Array:
        program, inputs = self._program(task, *args)
        return program(self.params, **inputs)

    def _program(self, task: str, *args, **kwargs):
        """``task``'s compiled program for these arguments and its array inputs (by name)."""
        bound = inspect.signature(getattr(self, task)).bind(*args, **kwargs)
        bound.apply_defaults()
        inputs = dict(bound.arguments)
        name = _STATIC_ARGUMENT[task]
        static = {name: _hashable(inputs.pop(name))}
        signature = (task, tuple(static.items()), self.settings, self.share_frames,
                     _input_specs(inputs))
        if signature not in self._programs:
            run = jax.jit(functools.partial(getattr(self, f"_{task}"), **static))
            self._programs[signature] = run.lower(self.params, **inputs).compile()
        return self._programs[signature], inputs

    def _prior(self, params, tokens):
        return self.model.apply({"params": params}, tokens, method="predict_image_embed")

    def _generate(self, params, tokens, key, image_embed, *, shape):
        cond = {}
        if self.model.image_embed_dim:
            if image_embed is None:
                image_embed = self._prior(params, tokens)
            cond["image_embed"] = image_embed
        return self._sample(params, tokens, cond, key, shape)

    def _interpolate(self, params, tokens, keyframes, key, *, skip):
        video, mask = spread_keyframes(keyframes, skip)
        cond = {"video": masked_frames(video, mask),
                "scalar": jnp.full((video.shape[0],), skip, jnp.float32)}
        out = self._sample(params, tokens, cond, key, video.shape)
        return jnp.where(mask[..., None, None, None], video, out)

    def _super_resolve(self, params, tokens, low, key, aug_level, *, size):
        aug_key, key = jax.random.split(key)
        level = jnp.full((low.shape[0],), aug_level, jnp.float32)
        cond = {"video": low_res_condition(low, size, level, aug_key, self.schedule),
                "scalar": level}
        shape = (*low.shape[:2], *size, low.shape[-1])
        return self._sample(params, tokens, cond, key, shape)

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


# The argument of each task that fixes the program's shapes, so is compiled in, not passed.
_STATIC_ARGUMENT = {"generate": "shape", "interpolate": "skip", "super_resolve": "size"}


def _hashable(value):
    """A shape, size or skip as plain ints."""
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else int(value)


def _input_specs(inputs: dict) -> tuple:
    """A hashable key of the inputs' structure, shapes and dtypes (not their values)."""
    specs = jax.tree.map(
        lambda x: (tuple(x.shape), str(x.dtype)) if hasattr(x, "shape") else type(x).__name__,
        inputs)
    leaves, treedef = jax.tree.flatten(specs)
    return tuple(leaves), treedef


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
