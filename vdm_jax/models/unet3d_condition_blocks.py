"""Blocks of the ModelScope text-to-video UNet (diffusers ``UNet3DConditionModel``).

A Stable Diffusion UNet inflated to video: every resnet is followed by a
:class:`TemporalConvLayer` (four ``3 x 1 x 1`` convs over time) and every spatial transformer
(self-attention within a frame, cross-attention to the text) by a :class:`TemporalTransformer`
(self-attention across the frames at one position). Spatial layers act on each frame alone;
temporal layers mix frames and start as the identity (zero last conv / output projection).

Every block takes ``(b, t, h, w, c)``. Parameter names follow diffusers' modules
(``down_blocks.0.resnets.1`` is ``down_blocks_0/resnets_1``) with the temporal ones prefixed
``temporal_`` (``temp_convs.0`` is ``temporal_convs_0``, ``transformer_in`` is
``temporal_transformer_in``), so :func:`vdm_jax.models.param_paths.is_temporal` finds them.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange

from vdm_jax.models.latte_blocks import FeedForward
from vdm_jax.nn.attention import STEP_TOKEN_AXES, Attention
from vdm_jax.nn.conv import SpatialConv, TemporalConv
from vdm_jax.nn.dense import dense, logical_init
from vdm_jax.nn.norms import GroupNorm
from vdm_jax.nn.remat import remat
from vdm_jax.sharding import shard

Dtype = jnp.dtype
TRANSFORMER_NORM_EPS = 1e-6  # GroupNorm in front of every (spatial or temporal) transformer
TEMPORAL_CONV_NORM_EPS = 1e-5  # torch's default, used by TemporalConvLayer
LAYER_NORM_EPS = 1e-5


def shard_video(x: jax.Array) -> jax.Array:
    return shard(x, "act_batch", "act_frames", "act_height", "act_width", "act_embed")


def layer_norm(name: str, dtype: Dtype | None) -> nn.LayerNorm:
    """LayerNorm (eps 1e-5, two-pass variance) whose scale and bias carry the name ``norm``."""
    return nn.LayerNorm(
        epsilon=LAYER_NORM_EPS, use_fast_variance=False, dtype=dtype, name=name,
        scale_init=logical_init(("norm",), nn.initializers.ones),
        bias_init=logical_init(("norm",), nn.initializers.zeros),
    )


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of ``n_out`` outputs of a nearest-neighbour resize from ``n_in``,
    computed as ``torch.nn.functional.interpolate(mode="nearest")`` does (float32 scale)."""
    if n_out in (n_in, 2 * n_in):
        return np.arange(n_out) * n_in // n_out
    scale = np.float32(n_in) / np.float32(n_out)
    index = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, n_in - 1)


def resize_nearest(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """``(b, t, h, w, c) -> (b, t, *size, c)``; a 2x resize is a repeat."""
    h, w = x.shape[2:4]
    if size == (2 * h, 2 * w):
        return jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
    x = jnp.take(x, nearest_indices(h, size[0]), axis=2)
    return jnp.take(x, nearest_indices(w, size[1]), axis=3)


class ResnetBlock(nn.Module):
    """GN -> SiLU -> conv3x3 (+ projected time embedding) -> GN -> SiLU -> conv3x3, plus the
    input (1x1 conv if widths differ), divided by ``output_scale_factor`` (diffusers'
    ``ResnetBlock2D``, ``time_embedding_norm="default"``; dropout is not carried)."""

    features: int
    num_groups: int
    eps: float
    output_scale_factor: float = 1.0
    dtype: Dtype | None = None

    def norm(self, name: str) -> GroupNorm:
        return GroupNorm(self.num_groups, self.eps, per_frame=True, dtype=self.dtype, name=name)

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
        """``x (b, t, h, w, c)``, ``temb (b, d)`` -> ``(b, t, h, w, features)``."""
        y = SpatialConv(self.features, dtype=self.dtype, name="conv1")(
            nn.silu(self.norm("norm1")(x)))
        emb = dense(self.features, ("embed", "conv_out"), "time_emb_proj", self.dtype)(
            nn.silu(temb))
        y = y + emb[:, None, None, None, :].astype(y.dtype)
        y = SpatialConv(self.features, dtype=self.dtype, name="conv2")(
            nn.silu(self.norm("norm2")(y)))
        if x.shape[-1] != self.features:
            x = SpatialConv(self.features, kernel_size=(1, 1), dtype=self.dtype,
                            name="conv_shortcut")(x)
        y = x.astype(y.dtype) + y
        if self.output_scale_factor != 1.0:
            y = y / self.output_scale_factor
        return shard_video(y)


class TemporalConvLayer(nn.Module):
    """ModelScope's temporal conv: four ``GN -> SiLU -> conv (3, 1, 1)`` stages over time and a
    residual. GroupNorm statistics span all frames; the last conv is zero-initialised, so the
    layer is the identity at init."""

    num_groups: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(b, t, h, w, c) -> (b, t, h, w, c)``."""
        c, y = x.shape[-1], x
        for i in range(1, 5):
            y = GroupNorm(self.num_groups, TEMPORAL_CONV_NORM_EPS, dtype=self.dtype,
                          name=f"norm{i}")(y)
            init = nn.initializers.zeros if i == 4 else nn.initializers.lecun_normal()
            y = TemporalConv(c, kernel_size=3, dtype=self.dtype, kernel_init=init,
                             name=f"conv{i}")(nn.silu(y))
        return shard_video(x.astype(y.dtype) + y)


def _grouped_self_attention(attention: nn.Module, y: jax.Array, temporal: bool) -> jax.Array:
    """``attention`` within each of the ``g`` groups of ``y (b, g, n, d)`` (frames, or spatial
    positions when ``temporal``)."""
    b = y.shape[0]
    axes = STEP_TOKEN_AXES["time" if temporal else "space"]
    out = attention(rearrange(y, "b g n d -> (b g) n d"), axes=axes)
    return rearrange(out, "(b g) n d -> b g n d", b=b)


class TransformerBlock(nn.Module):
    """diffusers' ``BasicTransformerBlock`` on tokens ``x (b, g, n, d)``: pre-LayerNorm
    self-attention within each group, a second attention (cross-attention of all ``g * n``
    tokens to ``context`` when ``cross_attention``, else self-attention again within each
    group), and a GEGLU MLP of width ``4 d``. ``temporal``: the groups are spatial positions
    and the tokens frames."""

    num_heads: int
    head_dim: int
    cross_attention: bool
    dtype: Dtype | None = None
    temporal: bool = False

    def attention(self, name: str) -> Attention:
        return Attention(self.num_heads, self.head_dim, dtype=self.dtype, name=name)

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        g = x.shape[1]
        x = x + _grouped_self_attention(self.attention("attn1"),
                                        layer_norm("norm1", self.dtype)(x), self.temporal)
        y = layer_norm("norm2", self.dtype)(x)
        if self.cross_attention:
            y = self.attention("attn2")(rearrange(y, "b g n d -> b (g n) d"), context)
            x = x + rearrange(y, "b (g n) d -> b g n d", g=g)
        else:
            x = x + _grouped_self_attention(self.attention("attn2"), y, self.temporal)
        y = FeedForward("geglu", 4.0, self.dtype, name="ff")(layer_norm("norm3", self.dtype)(x))
        return x + y


class _Transformer(nn.Module):
    """GroupNorm -> linear ``proj_in`` -> one :class:`TransformerBlock` -> ``proj_out`` ->
    residual; the token grouping is the subclass's."""

    num_heads: int
    head_dim: int
    num_groups: int
    dtype: Dtype | None = None

    def project_in(self, x: jax.Array) -> jax.Array:
        inner = self.num_heads * self.head_dim
        return dense(inner, ("conv_in", "embed"), "proj_in", self.dtype)(x)

    def project_out(self, y: jax.Array, c: int, zero: bool) -> jax.Array:
        init = nn.initializers.zeros if zero else None
        return dense(c, ("embed", "conv_out"), "proj_out", self.dtype, init)(y)

    def block(self, y: jax.Array, cross: bool, context=None, temporal=False) -> jax.Array:
        return TransformerBlock(self.num_heads, self.head_dim, cross, self.dtype, temporal,
                                name="transformer_blocks_0")(y, context)


class SpatialTransformer(_Transformer):
    """diffusers' ``Transformer2DModel`` (linear projections) on every frame: self-attention over
    the ``h * w`` positions of a frame, cross-attention to ``context``. GroupNorm per frame."""

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        """``x (b, t, h, w, c)``, ``context (b, L, d)`` -> ``(b, t, h, w, c)``."""
        h = x.shape[2]
        y = GroupNorm(self.num_groups, TRANSFORMER_NORM_EPS, per_frame=True, dtype=self.dtype,
                      name="norm")(x)
        y = self.project_in(rearrange(y, "b t h w c -> b t (h w) c"))
        y = shard(y, "act_batch", "act_frames", "act_seq", "act_embed")
        y = self.block(y, True, context)
        y = self.project_out(y, x.shape[-1], zero=False)
        return shard_video(x + rearrange(y, "b t (h w) c -> b t h w c", h=h).astype(x.dtype))


class TemporalTransformer(_Transformer):
    """diffusers' ``TransformerTemporalModel``: attention over the ``t`` frames at each spatial
    position (both attentions of its block are self-attention; no position embedding).
    GroupNorm statistics span all frames. ``proj_out`` is zero-initialised, so the layer is the
    identity at init."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(b, t, h, w, c) -> (b, t, h, w, c)``."""
        h = x.shape[2]
        y = GroupNorm(self.num_groups, TRANSFORMER_NORM_EPS, dtype=self.dtype, name="norm")(x)
        y = self.project_in(rearrange(y, "b t h w c -> b (h w) t c"))
        y = shard(y, "act_batch", "act_seq", "act_frames", "act_embed")
        y = self.project_out(self.block(y, False, temporal=True), x.shape[-1], zero=True)
        return shard_video(x + rearrange(y, "b (h w) t c -> b t h w c", h=h).astype(x.dtype))


class _Level(nn.Module):
    """What the down, mid and up blocks share: resnet + temporal conv layers and spatial +
    temporal transformers, named ``resnets_j``, ``temporal_convs_j``, ``attentions_j``,
    ``temporal_attentions_j``. Attention has ``features // head_dim`` heads of ``head_dim``."""

    features: int
    num_layers: int
    cross_attention: bool
    head_dim: int
    num_groups: int
    eps: float
    resample: bool
    dtype: Dtype | None = None
    remat: str = "none"

    def resnet(self, x, temb, j: int, output_scale_factor: float = 1.0):
        x = remat(ResnetBlock, self.remat)(self.features, self.num_groups, self.eps,
                                           output_scale_factor, self.dtype,
                                           name=f"resnets_{j}")(x, temb)
        return remat(TemporalConvLayer, self.remat)(self.num_groups, self.dtype,
                                                     name=f"temporal_convs_{j}")(x)

    def attend(self, x, context, j: int):
        if not self.cross_attention:
            return x
        heads = self.features // self.head_dim
        x = remat(SpatialTransformer, self.remat)(heads, self.head_dim, self.num_groups,
                                                  self.dtype, name=f"attentions_{j}")(x, context)
        return remat(TemporalTransformer, self.remat)(heads, self.head_dim, self.num_groups,
                                                      self.dtype,
                                                      name=f"temporal_attentions_{j}")(x)


class DownBlock(_Level):
    """``CrossAttnDownBlock3D`` (``cross_attention``) or ``DownBlock3D``; ``resample``: a
    stride-2 3x3 conv at the end (``h -> ceil(h / 2)``). Returns ``(x, skips)``: the output of
    every layer, and of the downsampling."""

    @nn.compact
    def __call__(self, x, temb, context):
        skips = []
        for j in range(self.num_layers):
            x = self.attend(self.resnet(x, temb, j), context, j)
            skips.append(x)
        if self.resample:
            x = SpatialConv(self.features, strides=(2, 2), dtype=self.dtype, name="downsample")(x)
            skips.append(x)
        return x, skips


class MidBlock(_Level):
    """``UNetMidBlock3DCrossAttn``: resnet, temporal conv, spatial and temporal transformers,
    resnet, temporal conv (``num_layers=1``; resnets scaled by ``output_scale_factor``)."""

    output_scale_factor: float = 1.0

    @nn.compact
    def __call__(self, x, temb, context):
        x = self.resnet(x, temb, 0, self.output_scale_factor)
        x = self.attend(x, context, 0)
        return self.resnet(x, temb, 1, self.output_scale_factor)


class UpBlock(_Level):
    """``CrossAttnUpBlock3D`` or ``UpBlock3D``: each layer first concatenates the last of
    ``skips`` on channels; ``resample``: nearest resize to ``size`` (the next skip's ``(h, w)``)
    and a 3x3 conv at the end."""

    @nn.compact
    def __call__(self, x, skips, temb, context, size=None):
        skips = list(skips)
        for j in range(self.num_layers):
            x = jnp.concatenate([x, skips.pop().astype(x.dtype)], axis=-1)
            x = self.attend(self.resnet(x, temb, j), context, j)
        if self.resample:
            x = SpatialConv(self.features, dtype=self.dtype, name="upsample")(
                resize_nearest(x, size))
        return x
