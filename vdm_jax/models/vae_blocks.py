"""Encoder and decoder of the Stable Diffusion KL autoencoder (diffusers ``Encoder``/``Decoder``).

Every layer works on ``(b, t, h, w, c)`` and acts on each frame alone (2D convs over merged
``(b t)``, GroupNorm statistics per frame, attention within a frame), so a batch of images is the
``t = 1`` case and a video runs through the image autoencoder frame by frame without reshaping.
The decoder can insert a temporal attention layer after each of its resnet blocks (MagicVideo's
video decoder); those layers start as the identity, so the inflated decoder equals the image
decoder per frame until they are trained.

Parameter names follow diffusers' modules (``down_blocks_0/resnets_1/conv1``) so the converter's
rename table stays short.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from vdm_jax.nn.attention import Attention, TemporalAttention
from vdm_jax.nn.conv import CausalVideoConv, SpatialConv, SpatialUpsample, default_kernel_init
from vdm_jax.nn.dense import logical_init
from vdm_jax.nn.norms import GroupNorm
from vdm_jax.sharding import shard

Dtype = jnp.dtype
EPS = 1e-6  # diffusers' VAE uses 1e-6 in every GroupNorm


def shard_video(x: jax.Array) -> jax.Array:
    return shard(x, "act_batch", "act_frames", "act_height", "act_width", "act_embed")


def group_norm(num_groups: int, dtype: Dtype | None, name: str) -> GroupNorm:
    return GroupNorm(num_groups, EPS, per_frame=True, dtype=dtype, name=name)


class ResnetBlock(nn.Module):
    """GN -> SiLU -> conv3x3 -> GN -> SiLU -> conv3x3, plus the input (1x1 conv if widths
    differ). diffusers' ``ResnetBlock2D`` without time embedding; dropout is not carried.
    ``causal``: causal 3x3x3 convs instead (the temporal autoencoder of ``video_vae``)."""

    features: int
    num_groups: int
    dtype: Dtype | None = None
    causal: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(b, t, h, w, c) -> (b, t, h, w, features)``."""
        conv = CausalVideoConv if self.causal else SpatialConv
        y = nn.silu(group_norm(self.num_groups, self.dtype, "norm1")(x))
        y = conv(self.features, dtype=self.dtype, name="conv1")(y)
        y = nn.silu(group_norm(self.num_groups, self.dtype, "norm2")(y))
        y = conv(self.features, dtype=self.dtype, name="conv2")(y)
        if x.shape[-1] != self.features:
            x = SpatialConv(self.features, kernel_size=(1, 1), dtype=self.dtype,
                            name="conv_shortcut")(x)
        return shard_video(x.astype(y.dtype) + y)


def downsample_conv(features: int, dtype: Dtype | None, name: str = "conv") -> nn.Conv:
    """Valid stride-2 3x3 conv after zero-padding one row and column at the bottom/right:
    ``h -> ceil(h / 2)`` (diffusers' ``Downsample2D`` with ``padding=0``; ``SpatialConv`` would
    pad both sides)."""
    return nn.Conv(
        features, (3, 3), strides=(2, 2), padding=((0, 1), (0, 1)), dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=logical_init((None, None, "conv_in", "conv_out"), default_kernel_init),
        bias_init=logical_init(("conv_out",), nn.initializers.zeros), name=name,
    )


class Downsample(nn.Module):
    """Halves h and w with :func:`downsample_conv`."""

    features: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(b, t, h, w, c) -> (b, t, h/2, w/2, features)`` for even ``h``, ``w``."""
        return downsample_conv(self.features, self.dtype)(x)


class AttnBlock(nn.Module):
    """Single-head self-attention over the ``h * w`` positions of a frame: ``x + attn(GN(x))``
    (diffusers' mid-block ``Attention`` with ``heads=1``, ``dim_head=c`` and q/k/v biases)."""

    num_groups: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        y = group_norm(self.num_groups, self.dtype, "norm")(x)
        y = shard(rearrange(y, "b t h w c -> (b t) (h w) c"), "act_batch", "act_seq", "act_embed")
        y = Attention(1, c, qkv_bias=True, dtype=self.dtype, name="attn")(y)
        return x + rearrange(y, "(b t) (h w) c -> b t h w c", b=b, h=h)


def temporal_attention(x: jax.Array, head_dim: int | None, dtype: Dtype | None,
                       name: str) -> jax.Array:
    """Identity-initialised attention over frames (``None``: no layer, the image decoder).

    ``max(c // head_dim, 1)`` heads of ``c // heads`` channels each.
    """
    if head_dim is None:
        return x
    heads = max(x.shape[-1] // head_dim, 1)
    return TemporalAttention(heads, x.shape[-1] // heads, dtype=dtype, name=name)(x)


class MidBlock(nn.Module):
    """resnet -> [attention] -> resnet at constant width (diffusers' ``UNetMidBlock2D``)."""

    num_groups: int
    add_attention: bool = True
    temporal_head_dim: int | None = None
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        x = ResnetBlock(c, self.num_groups, self.dtype, name="resnets_0")(x)
        x = temporal_attention(x, self.temporal_head_dim, self.dtype, "temporal_0")
        if self.add_attention:
            x = AttnBlock(self.num_groups, self.dtype, name="attention")(x)
        x = ResnetBlock(c, self.num_groups, self.dtype, name="resnets_1")(x)
        return temporal_attention(x, self.temporal_head_dim, self.dtype, "temporal_1")


class ResnetLevel(nn.Module):
    """``num_layers`` resnets (each optionally followed by temporal attention), then an optional
    resampling: ``"down"`` a :class:`Downsample` (``DownEncoderBlock2D``), ``"up"`` a nearest x2
    upsample and 3x3 conv (``UpDecoderBlock2D``)."""

    features: int
    num_layers: int
    num_groups: int
    resample: str | None = None
    temporal_head_dim: int | None = None
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for j in range(self.num_layers):
            x = ResnetBlock(self.features, self.num_groups, self.dtype, name=f"resnets_{j}")(x)
            x = temporal_attention(x, self.temporal_head_dim, self.dtype, f"temporal_{j}")
        if self.resample == "down":
            x = Downsample(self.features, self.dtype, name="downsample")(x)
        elif self.resample == "up":
            x = SpatialUpsample(self.features, self.dtype, name="upsample")(x)
        return x


class Encoder(nn.Module):
    """``(b, t, h, w, in) -> (b, t, h/f, w/f, 2 * latent_channels)`` moments (mean, logvar),
    ``f = 2 ** (len(block_out_channels) - 1)``.

    ``temporal_head_dim`` set: identity-initialised temporal attention after every resnet (the
    temporal-aware spatial encoder of VideoVAE), as in :class:`Decoder`.
    """

    latent_channels: int
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    num_groups: int
    mid_block_add_attention: bool = True
    temporal_head_dim: int | None = None
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        chans, dt, tmp = self.block_out_channels, self.dtype, self.temporal_head_dim
        x = SpatialConv(chans[0], dtype=dt, name="conv_in")(x)
        for i, ch in enumerate(chans):
            resample = "down" if i < len(chans) - 1 else None
            x = ResnetLevel(ch, self.layers_per_block, self.num_groups, resample, tmp, dt,
                            name=f"down_blocks_{i}")(x)
        x = MidBlock(self.num_groups, self.mid_block_add_attention, tmp, dt, name="mid_block")(x)
        x = nn.silu(group_norm(self.num_groups, dt, "conv_norm_out")(x))
        return SpatialConv(2 * self.latent_channels, dtype=dt, name="conv_out")(x)


class Decoder(nn.Module):
    """``(b, t, h, w, latent) -> (b, t, h*f, w*f, out_channels)``.

    ``temporal_head_dim`` set: a :class:`~vdm_jax.nn.attention.TemporalAttention` (zero output
    projection) after every resnet block of the mid and up blocks, named ``temporal_<j>`` beside
    the ``resnets_<j>`` it follows.
    """

    out_channels: int
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    num_groups: int
    mid_block_add_attention: bool = True
    temporal_head_dim: int | None = None
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        chans, dt, tmp = self.block_out_channels[::-1], self.dtype, self.temporal_head_dim
        x = SpatialConv(chans[0], dtype=dt, name="conv_in")(z)
        x = MidBlock(self.num_groups, self.mid_block_add_attention, tmp, dt, name="mid_block")(x)
        for i, ch in enumerate(chans):
            resample = "up" if i < len(chans) - 1 else None
            x = ResnetLevel(ch, self.layers_per_block + 1, self.num_groups, resample, tmp, dt,
                            name=f"up_blocks_{i}")(x)
        x = nn.silu(group_norm(self.num_groups, dt, "conv_norm_out")(x))
        return SpatialConv(self.out_channels, dtype=dt, name="conv_out")(x)
