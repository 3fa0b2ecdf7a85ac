"""Blocks of the CogVideoX causal 3D VAE (diffusers ``AutoencoderKLCogVideoX``).

Every 3x3x3 conv is a :class:`~vdm_jax.nn.conv.CausalConv3d` (two copies of the first frame in
front, a cache of the last two input frames between chunks), and every block threads a cache
pytree shaped like its submodules: ``block(x, cache) -> (y, new_cache)``, ``cache=None`` for
the first chunk.

The reference runs a video in frame batches (8 frames, or 2 latents, plus the remainder in the
first), and its GroupNorm statistics cover one batch, not the clip. A one-pass call reproduces
that with ``segments``: the static batch lengths at the current time resolution, each
normalised on its own. The resampling layers keep the first frame apart when the frame count
is odd; frame batches after the first are kept even, so resampling per batch or over the whole
clip gives the same frames, and ``down_segments``/``up_segments`` track the batch lengths.

Parameter names follow diffusers' modules (``down_blocks_0/resnets_1/conv1``).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange, repeat

from vdm_jax.models.vae_blocks import downsample_conv
from vdm_jax.nn.conv import CausalConv3d, CausalVideoConv, SpatialConv
from vdm_jax.nn.norms import GroupNorm
from vdm_jax.sharding import shard

Dtype = jnp.dtype
Segments = tuple[int, ...] | None
SPATIAL_NORM_EPS = 1e-6  # diffusers fixes it in CogVideoXSpatialNorm3D and the encoder's norm_out


def shard_video(x: jax.Array) -> jax.Array:
    return shard(x, "act_batch", "act_frames", "act_height", "act_width", "act_embed")


def down_segments(segments: tuple[int, ...]) -> tuple[int, ...]:
    """Batch lengths after :func:`time_downsample` (``L -> ceil(L / 2)``)."""
    return tuple((n + 1) // 2 for n in segments)


def up_segments(segments: tuple[int, ...]) -> tuple[int, ...]:
    """Batch lengths after :func:`upsample_nearest` in time (1 -> 1, odd -> 2L-1, even -> 2L)."""
    return tuple(1 if n == 1 else 2 * n - n % 2 for n in segments)


def time_downsample(x: jax.Array) -> jax.Array:
    """Averages frame pairs; an odd count keeps frame 0 alone: ``t -> ceil(t / 2)``."""
    first, rest = (x[:, :1], x[:, 1:]) if x.shape[1] % 2 else (x[:, :0], x)
    pairs = rearrange(rest, "b (t two) h w c -> b t two h w c", two=2)
    return jnp.concatenate([first, pairs.mean(axis=2).astype(x.dtype)], axis=1)


def upsample_nearest(x: jax.Array, compress_time: bool) -> jax.Array:
    """2x nearest in space, and in time when ``compress_time`` (frame 0 stays single if ``t``
    is odd; a lone frame is an image and stays one)."""
    x = repeat(x, "b t h w c -> b t (h i) (w j) c", i=2, j=2)
    t = x.shape[1]
    if not compress_time or t == 1:
        return x
    first, rest = (x[:, :1], x[:, 1:]) if t % 2 else (x[:, :0], x)
    return jnp.concatenate([first, jnp.repeat(rest, 2, axis=1)], axis=1)


def latent_frames(zq: jax.Array, t: int) -> jax.Array:
    """Nearest resize of ``zq`` ``(b, tz, ...)`` to ``t`` frames, an integer multiple (the
    reference's rule: an odd ``t > 1`` maps frame 0 to frame 0 and resizes the rest alone)."""
    tz = zq.shape[1]
    if t > 1 and t % 2:
        index = np.concatenate([[0], 1 + np.arange(t - 1) // ((t - 1) // (tz - 1))])
    else:
        index = np.arange(t) // (t // tz)
    return zq[:, index]


def modulate_nearest(f: jax.Array, scale: jax.Array, shift: jax.Array) -> jax.Array:
    """``f * up(scale) + up(shift)`` for ``f`` ``(b, t, h, w, c)`` and ``scale``, ``shift``
    ``(b, t, hz, wz, c)``, ``up`` the nearest resize to ``(h, w)`` (integer multiples). Written
    as a broadcast over ``f``'s pixel blocks so the resized maps are never materialised."""
    b, t, h, w, c = f.shape
    hz, wz = scale.shape[2:4]
    blocks = f.reshape(b, t, hz, h // hz, wz, w // wz, c)
    scale, shift = (m[:, :, :, None, :, None, :].astype(f.dtype) for m in (scale, shift))
    return (blocks * scale + shift).reshape(f.shape)


def pointwise_conv(features: int, dtype: Dtype | None, name: str) -> CausalVideoConv:
    """1x1x1 conv (diffusers' kernel-1 ``CogVideoXCausalConv3d`` / ``CogVideoXSafeConv3d``)."""
    return CausalVideoConv(features, kernel_size=(1, 1, 1), dtype=dtype, name=name)


class SpatialNorm3D(nn.Module):
    """``GroupNorm(f) * conv_y(zq) + conv_b(zq)`` with ``zq`` the decoder's latent input resized
    to ``f`` (Zhu et al. 2022's spatially conditioned norm; ``CogVideoXSpatialNorm3D``).

    The 1x1x1 convs commute with nearest resizing, so they run on the small ``zq`` first.
    """

    features: int
    num_groups: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, f: jax.Array, zq: jax.Array, segments: Segments = None) -> jax.Array:
        scale = pointwise_conv(self.features, self.dtype, "conv_y")(zq)
        shift = pointwise_conv(self.features, self.dtype, "conv_b")(zq)
        norm = GroupNorm(self.num_groups, SPATIAL_NORM_EPS, dtype=self.dtype, name="norm_layer")
        f = norm(f, segments=segments)
        t = f.shape[1]
        return modulate_nearest(f, latent_frames(scale, t), latent_frames(shift, t))


class ResnetBlock3D(nn.Module):
    """norm -> SiLU -> causal conv -> norm -> SiLU -> causal conv, plus the input (1x1x1 conv if
    widths differ): ``CogVideoXResnetBlock3D`` without its unused time embedding and dropout.
    Norms are GroupNorm, or :class:`SpatialNorm3D` when a latent ``zq`` is given (decoder)."""

    features: int
    num_groups: int
    epsilon: float = 1e-6
    dtype: Dtype | None = None

    def norm(self, name: str, x: jax.Array, zq: jax.Array | None, segments: Segments):
        if zq is not None:
            return SpatialNorm3D(x.shape[-1], self.num_groups, self.dtype, name=name)(
                x, zq, segments)
        norm = GroupNorm(self.num_groups, self.epsilon, dtype=self.dtype, name=name)
        return norm(x, segments=segments)

    @nn.compact
    def __call__(self, x, cache=None, segments: Segments = None, zq=None):
        """``(b, t, h, w, c) -> ((b, t, h, w, features), cache)``."""
        cache = cache or {}
        y = nn.silu(self.norm("norm1", x, zq, segments))
        y, c1 = CausalConv3d(self.features, dtype=self.dtype, name="conv1")(y, cache.get("conv1"))
        y = nn.silu(self.norm("norm2", y, zq, segments))
        y, c2 = CausalConv3d(self.features, dtype=self.dtype, name="conv2")(y, cache.get("conv2"))
        if x.shape[-1] != self.features:
            x = pointwise_conv(self.features, self.dtype, "conv_shortcut")(x)
        return shard_video(x.astype(y.dtype) + y), {"conv1": c1, "conv2": c2}


class Downsample3D(nn.Module):
    """Optional :func:`time_downsample`, then a stride-2 3x3 conv per frame after zero-padding one
    row and column at the bottom/right (``CogVideoXDownsample3D``): ``h -> ceil(h / 2)``."""

    features: int
    compress_time: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.compress_time:
            x = time_downsample(x)
        return downsample_conv(self.features, self.dtype)(x)


class Upsample3D(nn.Module):
    """:func:`upsample_nearest`, then a 3x3 conv per frame (``CogVideoXUpsample3D``)."""

    features: int
    compress_time: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = upsample_nearest(x, self.compress_time)
        return SpatialConv(self.features, dtype=self.dtype, name="conv")(x)


class ResnetStack(nn.Module):
    """``num_layers`` resnets then an optional resampler: the encoder's down blocks
    (``resample="down"``), the decoder's up blocks (``"up"``, with ``zq``) and the mid blocks.

    Returns ``(y, cache, segments)`` with ``segments`` at the output's time resolution.
    """

    features: int
    num_layers: int
    num_groups: int
    epsilon: float = 1e-6
    resample: str | None = None
    compress_time: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x, cache=None, segments: Segments = None, zq=None):
        cache, new = cache or {}, {}
        for j in range(self.num_layers):
            name = f"resnets_{j}"
            x, new[name] = ResnetBlock3D(self.features, self.num_groups, self.epsilon,
                                         self.dtype, name=name)(x, cache.get(name), segments, zq)
        if self.resample == "down":
            x = Downsample3D(self.features, self.compress_time, self.dtype,
                             name="downsamplers_0")(x)
            segments = down_segments(segments) if segments and self.compress_time else segments
        elif self.resample == "up":
            x = Upsample3D(self.features, self.compress_time, self.dtype, name="upsamplers_0")(x)
            segments = up_segments(segments) if segments and self.compress_time else segments
        elif self.resample is not None:
            raise ValueError(f"resample must be 'down', 'up' or None, got {self.resample!r}")
        return x, new, segments
