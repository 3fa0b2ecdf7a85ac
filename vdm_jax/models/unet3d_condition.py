"""The ModelScope text-to-video UNet (Wang et al. 2023, "ModelScope Text-to-Video Technical
Report"), as diffusers' ``UNet3DConditionModel``.

Stable Diffusion's UNet made into a video model: 2D convs, resnets and spatial transformers act
on every frame; after every resnet a temporal conv layer (four ``3 x 1 x 1`` convs) and after
every spatial transformer a temporal transformer (attention over frames) mix the frames, and a
temporal transformer follows the input conv. Any number of frames works (no frame position
embedding). The temporal layers start as the identity, so at init every frame is processed
independently, as by the image UNet. See :mod:`vdm_jax.models.unet3d_condition_blocks`.

Input latents ``(b, t, h, w, in_channels)`` (any ``h``, ``w``: upsampling resizes to the skip
connection's size as diffusers does), times ``t (b,)`` in ``[0, 1]`` and text embeddings
``context (b, L, cross_attention_dim)``; output ``(b, t, h, w, out_channels)`` in float32.

Time: the sinusoidal embedding sees ``k = time_scale * t + time_shift``, which with the defaults
``(1000, -1)`` is the discrete DDPM step a diffusers checkpoint was trained with
(``t = (k + 1) / 1000``); ``time_scale=1, time_shift=0`` feeds diffusers timesteps unchanged.

diffusers calls the per-head width ``attention_head_dim`` in this model's config and uses it as
such in every block (``features // attention_head_dim`` heads); the temporal transformer after
``conv_in`` has 8 heads of ``attention_head_dim`` channels. diffusers accepts an
``attention_mask`` but no block uses it, so there is no context mask here.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdm_jax.models import counting
from vdm_jax.models.latte_blocks import Mlp
from vdm_jax.models.unet3d_condition_blocks import (
    DownBlock,
    MidBlock,
    TemporalTransformer,
    UpBlock,
    shard_video,
)
from vdm_jax.nn.conv import SpatialConv
from vdm_jax.nn.embeddings import timestep_embedding
from vdm_jax.nn.norms import GroupNorm

Dtype = jnp.dtype

DOWN_BLOCK_TYPES = {"CrossAttnDownBlock3D": True, "DownBlock3D": False}  # -> cross-attention
UP_BLOCK_TYPES = {"CrossAttnUpBlock3D": True, "UpBlock3D": False}
TRANSFORMER_IN_HEADS = 8  # fixed in diffusers


class UNet3DCondition(nn.Module):
    """diffusers ``UNet3DConditionModel`` on channels-last latents.

    Attributes (diffusers' config names and defaults, the ModelScope 1.7B model's):
      in_channels, out_channels: latent channels in and out.
      down_block_types, up_block_types: per level, ``"CrossAttnDownBlock3D"`` /
        ``"DownBlock3D"`` and ``"CrossAttnUpBlock3D"`` / ``"UpBlock3D"`` (up blocks are listed
        from the lowest resolution); cross-attention levels carry spatial and temporal
        transformers.
      block_out_channels: width of each level; all but the last halve ``h`` and ``w``.
      layers_per_block: resnets per down level (up levels have one more).
      mid_block_scale_factor: the mid block's resnets divide their output by it.
      norm_num_groups, norm_eps: GroupNorm of the resnets and the output norm.
      cross_attention_dim: size of the text embeddings.
      attention_head_dim: channels per attention head.
      time_scale, time_shift: the embedded time is ``time_scale * t + time_shift``.
      remat: rematerialisation policy of every resnet, temporal conv and transformer (a key of
        ``vdm_jax.nn.remat.REMAT_POLICIES``).
    """

    in_channels: int = 4
    out_channels: int = 4
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",)
    up_block_types: tuple[str, ...] = ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    mid_block_scale_factor: float = 1.0
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int = 1024
    attention_head_dim: int = 64
    time_scale: float = 1000.0
    time_shift: float = -1.0
    remat: str = "none"
    dtype: Dtype | None = None

    def __post_init__(self):
        # Configs read back from JSON hold lists; keep the attributes hashable and comparable.
        for field in ("down_block_types", "up_block_types", "block_out_channels"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        super().__post_init__()

    def check(self) -> None:
        """Raises a ValueError naming the first bad attribute."""
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(f"down_block_types {self.down_block_types} and up_block_types "
                             f"{self.up_block_types} need one entry per block_out_channels "
                             f"{self.block_out_channels}")
        for field, known in (("down_block_types", DOWN_BLOCK_TYPES),
                             ("up_block_types", UP_BLOCK_TYPES)):
            bad = [k for k in getattr(self, field) if k not in known]
            if bad:
                raise ValueError(f"{field}: {bad} not supported; known: {list(known)}")
        for ch in self.block_out_channels:
            if ch % self.norm_num_groups:
                raise ValueError(f"norm_num_groups={self.norm_num_groups} does not divide the "
                                 f"width {ch} of block_out_channels={self.block_out_channels}")
            if ch < self.attention_head_dim:
                raise ValueError(f"attention_head_dim={self.attention_head_dim} is wider than "
                                 f"the width {ch} of block_out_channels (no attention head)")

    def check_inputs(self, x: jax.Array, t: jax.Array, context: jax.Array) -> None:
        if x.ndim != 5 or x.shape[-1] != self.in_channels:
            raise ValueError(f"expected latents (b, t, h, w, {self.in_channels}), got shape "
                             f"{x.shape}")
        b = x.shape[0]
        if t.shape != (b,):
            raise ValueError(f"t must be (b,) = ({b},) or a scalar, got shape {t.shape}")
        if context is None or context.ndim != 3 or context.shape[0] != b or \
                context.shape[-1] != self.cross_attention_dim:
            got = None if context is None else context.shape
            raise ValueError(f"context must be ({b}, L, {self.cross_attention_dim}) text "
                             f"embeddings, got {got}")

    def time_embedding(self, t: jax.Array) -> jax.Array:
        """``t (b,)`` -> ``(b, 4 * block_out_channels[0])``: sinusoidal ``[cos, sin]`` features,
        then Linear -> SiLU -> Linear."""
        c0 = self.block_out_channels[0]
        freqs = timestep_embedding(t * self.time_scale + self.time_shift, c0, time_scale=1.0)
        return Mlp(4 * c0, "silu", self.dtype, name="time_embedding")(freqs)

    def level(self, cls, i: int, features: int, cross: bool, resample: bool, **kwargs):
        layers = self.layers_per_block + (cls is UpBlock)
        prefix = "down_blocks" if cls is DownBlock else "up_blocks"
        return cls(features, layers, cross, self.attention_head_dim, self.norm_num_groups,
                   self.norm_eps, resample, self.dtype, self.remat, name=f"{prefix}_{i}",
                   **kwargs)

    def down(self, x, temb, context):
        skips = [x]
        last = len(self.block_out_channels) - 1
        levels = zip(self.down_block_types, self.block_out_channels, strict=True)
        for i, (kind, ch) in enumerate(levels):
            block = self.level(DownBlock, i, ch, DOWN_BLOCK_TYPES[kind], i < last)
            x, new = block(x, temb, context)
            skips.extend(new)
        return x, skips

    def up(self, x, skips, temb, context):
        last = len(self.block_out_channels) - 1
        widths = self.block_out_channels[::-1]
        for i, (kind, ch) in enumerate(zip(self.up_block_types, widths, strict=True)):
            n = self.layers_per_block + 1
            skips, res = skips[:-n], skips[-n:]
            size = tuple(skips[-1].shape[2:4]) if i < last else None
            block = self.level(UpBlock, i, ch, UP_BLOCK_TYPES[kind], i < last)
            x = block(x, res, temb, context, size)
        return x

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, context: jax.Array) -> jax.Array:
        """Noise prediction for latents ``x (b, t, h, w, c)`` at times ``t (b,)`` in [0, 1],
        conditioned on text embeddings ``context (b, L, cross_attention_dim)``."""
        self.check()
        t = jnp.asarray(t, jnp.float32)
        t = jnp.broadcast_to(t, x.shape[:1]) if t.ndim == 0 else t
        self.check_inputs(x, t, context)
        dtype = self.dtype or jnp.float32
        temb = self.time_embedding(t)
        c0, top = self.block_out_channels[0], self.block_out_channels[-1]
        h = SpatialConv(c0, dtype=dtype, name="conv_in")(x.astype(dtype))
        h = TemporalTransformer(TRANSFORMER_IN_HEADS, self.attention_head_dim,
                                self.norm_num_groups, self.dtype,
                                name="temporal_transformer_in")(shard_video(h))
        context = context.astype(dtype)
        h, skips = self.down(h, temb, context)
        h = MidBlock(top, 1, True, self.attention_head_dim, self.norm_num_groups, self.norm_eps,
                     False, self.dtype, self.remat, self.mid_block_scale_factor,
                     name="mid_block")(h, temb, context)
        h = self.up(h, skips, temb, context)
        h = GroupNorm(self.norm_num_groups, self.norm_eps, per_frame=True, dtype=self.dtype,
                      name="conv_norm_out")(h)
        out = SpatialConv(self.out_channels, dtype=dtype, name="conv_out")(nn.silu(h))
        return out.astype(jnp.float32)


def example_inputs(model: UNet3DCondition, num_frames: int = 1,
                   latent_size: int = 1) -> tuple[jax.Array, ...]:
    """Smallest valid ``model.init`` inputs (parameter shapes depend on neither the frame count
    nor the size; pass them to trace a particular shape)."""
    return (jnp.zeros((1, num_frames, latent_size, latent_size, model.in_channels)),
            jnp.zeros((1,)), jnp.zeros((1, 1, model.cross_attention_dim)))


def count_params(model: UNet3DCondition) -> int:
    return counting.count_params(model, *example_inputs(model))


VARIANTS = {
    # damo-vilab/text-to-video-ms-1.7b's UNet (diffusers' defaults): 1.41B parameters.
    "modelscope": dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                       cross_attention_dim=1024, attention_head_dim=64),
    "tiny": dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
                 cross_attention_dim=32, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                 up_block_types=("UpBlock3D", "CrossAttnUpBlock3D")),
}
