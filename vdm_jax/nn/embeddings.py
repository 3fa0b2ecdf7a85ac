"""Timestep embeddings: sinusoidal features of a continuous time and an MLP on top."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax.nn.norms import layer_norm

Dtype = jnp.dtype


def timestep_embedding(
    t: jax.Array, dim: int, *, max_period: float = 10_000.0, time_scale: float = 1000.0
) -> jax.Array:
    """Sinusoidal embedding ``[cos, sin]`` of continuous times.

    Args:
      t: ``(b,)`` times in ``[0, 1]``; multiplied by ``time_scale`` (1000) first so frequencies
        match models trained on 1000 discrete steps.
      dim: embedding size (odd sizes get a zero last column).

    Returns:
      ``(b, dim)`` float32.
    """
    t = jnp.asarray(t, jnp.float32)
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding expects t of shape (b,), got {t.shape}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (t * time_scale)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of ``t`` followed by Dense -> SiLU -> Dense.

    Attributes:
      features: output size (a UNet uses 4x its base channels).
      frequency_dim: size of the sinusoidal features (default ``features // 4``).
    """

    features: int
    frequency_dim: int | None = None
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        """``t (b,)`` in ``[0, 1]`` -> ``(b, features)``."""
        x = timestep_embedding(t, self.frequency_dim or max(self.features // 4, 2))
        init = nn.initializers.lecun_normal()
        x = nn.Dense(
            self.features, dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(init, ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
            name="linear_1",
        )(x)
        x = nn.silu(x)
        return nn.Dense(
            self.features, dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(init, ("mlp", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="linear_2",
        )(x)


def zero_projection(features: int, dtype: Dtype | None) -> nn.Dense:
    """A zero-initialised Dense named ``proj``: an added conditioning path starts as a no-op."""
    return nn.Dense(
        features, dtype=dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "mlp")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
        name="proj",
    )


class FramePositionEmbedding(nn.Module):
    """Absolute frame-index embedding ``(t, features)``: sinusoidal features of the index, then a
    zero-initialised Dense, so adding it leaves a model unchanged at init.

    A UNet adds it to the time embedding, which makes every residual block's FiLM depend on the
    frame index jointly with the time and the pooled caption.
    """

    features: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, num_frames: int) -> jax.Array:
        """-> ``(num_frames, features)``."""
        index = jnp.arange(num_frames, dtype=jnp.float32)
        # time_scale=1: integer frame indices, not [0, 1] diffusion times.
        feats = timestep_embedding(index, self.features, time_scale=1.0)
        return zero_projection(self.features, self.dtype)(feats)


class PixelPositionEmbedding(nn.Module):
    """Absolute pixel-position embedding ``(h, w, features)``: the fixed 2D sin-cos table of
    :func:`spatial_pos_embed` over coordinates scaled to ``[0, base_size)`` (so any grid spans
    the same range), then a zero-initialised Dense, so adding it leaves a model unchanged at
    init. Gives a convolutional model the absolute position it needs to place content from a
    pure-noise input.
    """

    features: int
    table_dim: int = 32
    base_size: int = 16
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, height: int, width: int) -> jax.Array:
        """-> ``(height, width, features)``."""
        table = spatial_pos_embed(self.table_dim, height, width, self.base_size, 1.0)
        feats = jnp.asarray(table.reshape(height, width, self.table_dim), jnp.float32)
        return zero_projection(self.features, self.dtype)(feats)


class PooledContextEmbedding(nn.Module):
    """Masked mean of text token embeddings, projected to the time-embedding size (Imagen's
    pooled text conditioning): lets every residual block, temporal convs included, see the
    caption. Zero-initialised output.
    """

    features: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, context: jax.Array, context_mask: jax.Array | None) -> jax.Array:
        """``context (b, L, d)``, ``context_mask (b, L)`` -> ``(b, features)``."""
        if context_mask is None:
            context_mask = jnp.ones(context.shape[:2], bool)
        weights = context_mask.astype(jnp.float32)[..., None]
        pooled = (context * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
        pooled = layer_norm("norm", self.dtype)(pooled)
        return zero_projection(self.features, self.dtype)(pooled)


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """``[sin(pos w), cos(pos w)]`` with ``w_i = 10000^(-2i/dim)``: ``(len(pos), dim)`` float64."""
    if dim % 2:
        raise ValueError(f"sin-cos position embedding needs an even size, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2))
    out = np.outer(np.asarray(pos, np.float64).reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def spatial_pos_embed(dim: int, gh: int, gw: int, base_size: int, scale: float) -> np.ndarray:
    """Fixed 2D sin-cos table ``(gh * gw, dim)``, row-major over ``(h, w)`` patches.

    As diffusers' ``get_2d_sincos_pos_embed``: positions are rescaled so a grid of any size spans
    the ``base_size`` grid trained on; the first half of the channels encodes the column (x), the
    second half the row (y).
    """
    ys = np.arange(gh, dtype=np.float32) / np.float32(gh / base_size) / np.float32(scale)
    xs = np.arange(gw, dtype=np.float32) / np.float32(gw / base_size) / np.float32(scale)
    x, y = np.meshgrid(xs, ys)  # (gh, gw) each
    return np.concatenate([sincos_1d(dim // 2, x), sincos_1d(dim // 2, y)], axis=1)


def apply_rope(x: jax.Array, positions, base: float = 10000.0) -> jax.Array:
    """Rotary position embedding (Su et al. 2021) of ``x (..., n, heads, d)`` at integer or
    real ``positions (n,)`` (or ``(..., n)``, one row per leading index of ``x``): channel pairs
    ``(i, i + d/2)`` are rotated by ``position * base**(-2i/d)``, so
    ``rope(q, m) . rope(k, n)`` depends on ``m - n`` only."""
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"rotary embeddings need an even head size, got {d}")
    inv = base ** (-np.arange(d // 2, dtype=np.float32) * 2.0 / d)
    angle = jnp.asarray(positions, jnp.float32)[..., None] * inv  # (..., n, d/2)
    cos, sin = jnp.cos(angle)[..., None, :], jnp.sin(angle)[..., None, :]  # (..., n, 1, d/2)
    x1, x2 = x[..., : d // 2].astype(jnp.float32), x[..., d // 2:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).astype(x.dtype)
