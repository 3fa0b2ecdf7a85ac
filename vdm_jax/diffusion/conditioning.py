"""Conditioning inputs of cascaded video models (Make-A-Video's interpolation and super-resolution
stages), as pure functions shared by training (built from real clips) and sampling (built from
the previous stage's output).

- Frame interpolation: the kept frames (every ``skip``-th) in place, zeros elsewhere, plus a
  binary mask channel: ``(b, t, h, w, c + 1)``, concatenated to the noisy video.
- Super-resolution: the low-resolution video, noised to an augmentation level ``s`` with the
  diffusion forward process (noise-conditioning augmentation, Ho et al. 2021 "Cascaded Diffusion
  Models") and resized to the target size: ``(b, t, H, W, c)``.
- Image embedding: a parameter-free stand-in for an image encoder (Make-A-Video's decoder takes
  a CLIP image embedding; any ``(b, d)`` embedding fits the same interface).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import reduce

from vdm_jax.diffusion.parameterization import expand_like
from vdm_jax.diffusion.schedules import Schedule, alpha_sigma_from_log_snr


def frame_mask(num_frames: int, skip: jax.Array) -> jax.Array:
    """``(b, num_frames)`` bool: frame ``i`` is kept when ``i % skip == 0`` (``skip (b,)`` int)."""
    skip = jnp.asarray(skip, jnp.int32)
    return jnp.arange(num_frames)[None, :] % skip[:, None] == 0


def masked_frames(video: jax.Array, mask: jax.Array) -> jax.Array:
    """``video (b, t, h, w, c)``, ``mask (b, t)`` -> ``(b, t, h, w, c + 1)``: the kept frames,
    zeros elsewhere, and the mask as a last channel."""
    m = jnp.broadcast_to(expand_like(mask, video), (*video.shape[:-1], 1)).astype(video.dtype)
    return jnp.concatenate([video * m, m], axis=-1)


def spread_keyframes(keyframes: jax.Array, skip: int) -> tuple[jax.Array, jax.Array]:
    """``keyframes (b, k, h, w, c)`` placed every ``skip`` frames of a ``(k - 1) * skip + 1``
    frame video (zeros between): ``(video, mask (b, T) bool)``."""
    if skip < 1:
        raise ValueError(f"skip must be at least 1, got {skip}")
    b, k = keyframes.shape[:2]
    frames = (k - 1) * skip + 1
    video = jnp.zeros((b, frames, *keyframes.shape[2:]), keyframes.dtype)
    video = video.at[:, ::skip].set(keyframes)
    return video, frame_mask(frames, jnp.full((b,), skip))


def resize_video(video: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Resizes every frame of ``(b, t, h, w, c)`` to ``size = (H, W)`` (bilinear; antialiased
    when shrinking)."""
    b, t, _, _, c = video.shape
    return jax.image.resize(video, (b, t, *size, c), method="linear", antialias=True)


def noise_augment(x: jax.Array, level: jax.Array, key: jax.Array,
                  schedule: Schedule) -> jax.Array:
    """``α_s x + σ_s ε`` at diffusion times ``level (b,)`` in [0, 1]; level 0 keeps ``x``
    exactly (the schedule's clipped log SNR would leave a trace of noise)."""
    level = jnp.asarray(level, jnp.float32)
    alpha, sigma = alpha_sigma_from_log_snr(schedule.log_snr(level))
    eps = jax.random.normal(key, x.shape, x.dtype)
    noised = expand_like(alpha, x) * x + expand_like(sigma, x) * eps
    return jnp.where(expand_like(level > 0, x), noised, x)


def low_res_condition(low: jax.Array, size: tuple[int, int], level: jax.Array, key: jax.Array,
                      schedule: Schedule) -> jax.Array:
    """The super-resolution conditioning: ``low (b, t, h, w, c)`` noised to ``level (b,)`` then
    resized to ``size`` -> ``(b, t, H, W, c)``."""
    return resize_video(noise_augment(low, level, key, schedule), size)


def pooled_frame_embedding(frame: jax.Array, grid: int) -> jax.Array:
    """A frame ``(b, h, w, c)`` average-pooled to ``grid x grid`` and flattened:
    ``(b, grid * grid * c)``; ``h`` and ``w`` must be multiples of ``grid``."""
    if frame.shape[1] % grid or frame.shape[2] % grid:
        raise ValueError(f"frame size {frame.shape[1:3]} is not a multiple of grid={grid}")
    return reduce(frame, "b (gh i) (gw j) c -> b (gh gw c)", "mean", gh=grid, gw=grid)


def initial_noise(key: jax.Array, shape: tuple[int, ...], share_frames: bool = False) -> jax.Array:
    """N(0, I) noise ``(b, t, h, w, c)``; with ``share_frames`` one draw per video repeated over
    its frames (per-frame models then start every frame from the same noise, less flicker)."""
    if not share_frames:
        return jax.random.normal(key, shape)
    b, t, *rest = shape
    return jnp.broadcast_to(jax.random.normal(key, (b, 1, *rest)), shape)
