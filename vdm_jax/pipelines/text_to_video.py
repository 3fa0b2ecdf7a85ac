"""Text-to-video sampling: prompts -> videos with a jit-compiled DDPM/DDIM loop.

Also extends a given clip with VDM's reconstruction guidance (``extend=``).
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from vdm_jax.data.tokenizer import WordTokenizer
from vdm_jax.diffusion import ReconstructionGuidance, Schedule, classifier_free, sample


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    sampler: str = "ddim"
    num_steps: int = 50
    eta: float = 0.0
    guidance: float = 3.0
    reconstruction_weight: float = 4.0


class TextToVideo:
    """Samples videos for prompts from a text-conditioned video denoiser.

    ``model.apply({"params": params}, z, t, tokens)`` predicts eps, v or x0 (the
    ``parameterization``). One compiled sampler per (settings, shape) is cached.
    """

    def __init__(self, model: nn.Module, params: Any, tokenizer: WordTokenizer,
                 schedule: Schedule, parameterization: str, channels: int = 3):
        self.channels = channels  # of what the model denoises: 3 for pixels, c for latents
        self.model = model
        self.params = params
        self.tokenizer = tokenizer
        self.schedule = schedule
        self.parameterization = parameterization
        self._bar = None

    def __call__(self, prompts: list[str], *, num_frames: int, resolution: tuple[int, int],
                 settings: SamplerSettings = SamplerSettings(), seed: int = 0,
                 extend: np.ndarray | None = None, progress: bool = True) -> np.ndarray:
        """Returns float32 samples ``(n, t, h, w, channels)`` (videos in [-1, 1] for a pixel
        model, latents for a latent one), one per prompt.

        extend: optional clip ``(t0, h, w, 3)`` in [-1, 1] with t0 < num_frames; its frames
        become the first t0 frames of every sample, and the rest is sampled to continue it.
        """
        if num_frames < 1:
            raise ValueError(f"num_frames must be at least 1 frame, got {num_frames}")
        tokens = jnp.asarray(self.tokenizer.encode_batch(prompts))
        h, w = resolution
        shape = (len(prompts), num_frames, h, w, self.channels)
        observed, mask = _observed_frames(extend, shape)
        run = self._compiled(settings, extend is not None)
        self._bar = tqdm(total=settings.num_steps, desc="sample", unit="step", disable=not progress,
                         leave=False, dynamic_ncols=True)
        try:
            videos = run(self.params, tokens, jax.random.PRNGKey(seed), observed, mask, shape)
            videos = np.asarray(jax.device_get(videos))
        finally:
            self._bar.close()
            self._bar = None
        return videos

    def _tick(self, _step) -> None:
        if self._bar is not None:
            self._bar.update(1)

    @functools.cache  # noqa: B019 (one pipeline object per loaded model; bounded by settings)
    def _compiled(self, settings: SamplerSettings, extending: bool):
        null = jnp.asarray(self.tokenizer.null_tokens())

        def run(params, tokens, key, observed, mask, shape):
            def model_fn(z, t, cond):
                return self.model.apply({"params": params}, z, t, cond)

            uncond = jnp.broadcast_to(null, tokens.shape)
            guided = classifier_free(model_fn, tokens, uncond, settings.guidance)
            noise_key, sample_key = jax.random.split(key)
            noise = jax.random.normal(noise_key, shape)
            guidance = (ReconstructionGuidance(observed, mask, settings.reconstruction_weight)
                        if extending else None)
            return sample(
                guided, noise, sample_key, schedule=self.schedule,
                parameterization=self.parameterization, sampler=settings.sampler,
                num_steps=settings.num_steps, eta=settings.eta, guidance=guidance,
                progress=self._tick,
            )

        return jax.jit(run, static_argnums=(5,))


def _observed_frames(extend: np.ndarray | None, shape: tuple) -> tuple[jax.Array, jax.Array]:
    """The given clip placed at the start of a full-length video, and its frame mask."""
    n, t, h, w, c = shape
    if extend is None:
        return jnp.zeros(shape), jnp.zeros((1, t, 1, 1, 1))
    t0 = extend.shape[0]
    if extend.shape[1:] != (h, w, c):
        raise ValueError(f"clip to extend has frames {extend.shape[1:]}, expected {(h, w, c)}")
    if not 0 < t0 < t:
        raise ValueError(f"clip to extend has {t0} frames; it must be shorter than the "
                         f"{t} frames sampled (use --num_frames > {t0})")
    observed = np.zeros(shape, np.float32)
    observed[:, :t0] = extend
    mask = (np.arange(t) < t0).astype(np.float32).reshape(1, t, 1, 1, 1)
    return jnp.asarray(observed), jnp.asarray(mask)
