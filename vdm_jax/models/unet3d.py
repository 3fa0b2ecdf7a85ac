"""The VDM 3D UNet (Ho et al. 2022, "Video Diffusion Models").

A 2D diffusion UNet made into a video model by (a) space-only convolutions (1x3x3, or (2+1)D
with ``conv="2plus1d"``), (b) at chosen resolutions a spatial self-attention block, an optional
cross-attention block to a text context and a temporal attention block with relative position
bias (divided space-time attention), and (c) an image-frame mask so independent images appended
as frames are excluded from temporal mixing (joint image-video training). Only space is down- or
up-sampled; the number of frames is kept at every level. Norms are per frame, so with
``attention="space"`` and spatial convs every frame is processed independently.

The attention (``attention``) and convolution (``conv``) are chosen by name from the variants of
:mod:`vdm_jax.nn.attention` and :mod:`vdm_jax.nn.conv`, for ablations; VDM is ``"divided"`` with
``"spatial"`` convs.
"""

import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdm_jax.models.sizes import nearest_valid
from vdm_jax.nn.attention import (
    ATTENTION_VARIANTS,
    CrossAttention,
    SpatialAttention,
    TemporalAttention,
    VideoSelfAttention,
)
from vdm_jax.nn.conv import (
    CONV_VARIANTS,
    SpatialConv,
    SpatialDownsample,
    SpatialUpsample,
    video_conv,
)
from vdm_jax.nn.embeddings import (
    FramePositionEmbedding,
    PixelPositionEmbedding,
    PooledContextEmbedding,
    TimestepEmbedding,
)
from vdm_jax.nn.layout import LAYOUT_TARGETS, ConditionalLayout
from vdm_jax.nn.norms import GroupNorm
from vdm_jax.nn.remat import remat
from vdm_jax.sharding import shard

Dtype = jnp.dtype


def shard_video(x: jax.Array) -> jax.Array:
    """Constrains a ``(b, t, h, w, c)`` activation to the video logical axes."""
    return shard(x, "act_batch", "act_frames", "act_height", "act_width", "act_embed")


def default_groups(channels: int, num_groups: int | None = None) -> int:
    """GroupNorm groups for ``channels``: ``num_groups`` if given, else ``min(32, channels // 4)``
    reduced to a divisor of ``channels``."""
    if num_groups is not None:
        if channels % num_groups:
            raise ValueError(f"num_groups={num_groups} does not divide {channels} channels")
        return num_groups
    return math.gcd(channels, max(1, min(32, channels // 4)))


def make_conv(kind: str, features: int, dtype, zero_init: bool = False, name: str | None = None):
    """A 3x3 video conv of variant ``kind`` (see ``CONV_VARIANTS``)."""
    init = nn.initializers.zeros if zero_init else nn.initializers.lecun_normal()
    return video_conv(kind, features, dtype=dtype, kernel_init=init, name=name)


class ResBlock(nn.Module):
    """GN -> SiLU -> conv -> GN with FiLM(emb) -> SiLU -> dropout -> conv (zero-init), + skip.

    The FiLM scale/shift from the time embedding is fused into the second GroupNorm's affine.
    """

    features: int
    num_groups: int | None = None
    conv: str = "spatial"
    dropout: float = 0.0
    deterministic: bool = True
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        """``x (b, t, h, w, c_in)``, ``emb (b, e)`` or per frame ``(b, t, e)`` ->
        ``(b, t, h, w, features)``."""
        groups_in = default_groups(x.shape[-1], self.num_groups)
        groups = default_groups(self.features, self.num_groups)
        h = GroupNorm(groups_in, per_frame=True, dtype=self.dtype, name="norm1")(x)
        h = make_conv(self.conv, self.features, self.dtype, name="conv1")(nn.silu(h))
        film = nn.Dense(
            2 * self.features, dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
            name="film",
        )(nn.silu(emb))
        scale, shift = jnp.split(film, 2, axis=-1)
        h = GroupNorm(groups, per_frame=True, dtype=self.dtype, name="norm2")(h, (scale, shift))
        h = nn.Dropout(self.dropout)(nn.silu(h), deterministic=self.deterministic)
        h = make_conv(self.conv, self.features, self.dtype, zero_init=True, name="conv2")(h)
        if x.shape[-1] != self.features:
            x = nn.Dense(
                self.features, dtype=self.dtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.lecun_normal(), ("conv_in", "conv_out")
                ),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                name="skip",
            )(x)
        return shard_video(x + h)


class AttentionBlock(nn.Module):
    """Self-attention of the chosen variant, then cross-attention to ``context`` (if given).

    ``"divided"`` is VDM's block: spatial attention, cross-attention, then temporal attention
    with a relative position bias (identity at init) that masks image frames. ``"space"`` drops
    the temporal part. Other variants use :class:`VideoSelfAttention` before the
    cross-attention.
    """

    head_dim: int
    num_groups: int | None = None
    attention: str = "divided"
    layer: int = 0  # block index, for variants that cycle over blocks (godiva)
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x, context=None, context_mask=None, image_frames=None):
        """``x (b, t, h, w, c)`` -> same shape."""
        c = x.shape[-1]
        if c % self.head_dim:
            raise ValueError(f"head_dim={self.head_dim} does not divide {c} channels")
        heads = c // self.head_dim
        vdm_block = self.attention in ("divided", "space")
        if image_frames is not None and not vdm_block:
            raise ValueError(f"image frames can be masked with attention 'divided' or 'space', "
                             f"not {self.attention!r}, whose steps mix frames and pixels at once")
        if vdm_block:
            groups = default_groups(c, self.num_groups)
            x = SpatialAttention(heads, self.head_dim, groups, dtype=self.dtype, name="spatial")(x)
        else:
            x = VideoSelfAttention(self.attention, heads, self.head_dim, layer=self.layer,
                                   dtype=self.dtype, name="self")(x)
        if context is not None:
            x = CrossAttention(heads, self.head_dim, dtype=self.dtype, name="cross")(
                x, context, context_mask
            )
        if self.attention == "divided":
            x = TemporalAttention(heads, self.head_dim, dtype=self.dtype, name="temporal")(
                x, image_frames
            )
        return shard_video(x)


def check_inputs(x, t, context, context_mask, image_frames, levels: int) -> None:
    """Raises ValueError naming the expected shape when UNet3D inputs are malformed."""
    if x.ndim != 5:
        raise ValueError(f"x must be a video (b, t, h, w, c), got shape {x.shape}")
    b, frames, height, width, _ = x.shape
    if frames < 1:
        raise ValueError(f"x needs at least 1 frame, got t={frames}")
    factor = 2 ** (levels - 1)
    for label, n in (("height", height), ("width", width)):
        if n % factor:
            raise ValueError(
                f"{label} {n} is not divisible by {factor}; {nearest_valid(n, factor)} "
                f"(the UNet downsamples space {levels - 1} times)"
            )
    if t.shape != (b,):
        raise ValueError(f"t must have shape (b,) = ({b},), got {t.shape}")
    if context is not None and (context.ndim != 3 or context.shape[0] != b):
        raise ValueError(f"context must be (b, L, d) with b={b}, got {context.shape}")
    if context_mask is not None:
        if context is None:
            raise ValueError("context_mask was given without context")
        if context_mask.shape != context.shape[:2]:
            raise ValueError(f"context_mask must be (b, L) = {context.shape[:2]}, "
                             f"got {context_mask.shape}")
    if image_frames is not None and image_frames.shape != (b, frames):
        raise ValueError(f"image_frames must be (b, t) = {(b, frames)}, got {image_frames.shape}")


class UNet3D(nn.Module):
    """VDM 3D UNet: ``(b, t, h, w, c) -> (b, t, h, w, out_channels)``.

    Attributes:
      out_channels: channels of the prediction.
      channels: base width; level ``i`` has ``channels * channel_mult[i]``.
      channel_mult: one entry per resolution (``len - 1`` spatial downsamplings).
      num_res_blocks: residual blocks per level on the way down (one more on the way up).
      attention_levels: indices into ``channel_mult`` that get attention blocks (the middle
        block always has one).
      head_dim: per-head size; heads = level channels // head_dim.
      conv: a ``CONV_VARIANTS`` name: ``"spatial"`` (1x3x3, VDM), ``"2plus1d"`` (3x3 spatial +
        identity-init temporal), ``"naive3d"`` (3x3x3) or ``"causal3d"``.
      attention: an ``ATTENTION_VARIANTS`` name for the attention blocks (VDM: ``"divided"``).
      dropout: dropout rate inside residual blocks (active when ``train=True``).
      num_groups: GroupNorm groups (default ``min(32, ch // 4)`` per width).
      remat: rematerialisation policy of every residual and attention block, a key of
        ``vdm_jax.nn.remat.REMAT_POLICIES`` (``none``, ``dots_saveable``, ``full``, ...).
      frame_positions: add an absolute frame-index embedding to the time embedding, so residual
        blocks are modulated per frame (not in VDM, which has only relative temporal positions).
      pooled_text: add the pooled text context to the time embedding (Imagen), so residual
        blocks see the caption too, not only the cross-attention layers.
      pixel_positions: add an absolute pixel-position embedding (fixed 2D sin-cos table, then a
        zero-initialised Dense) to the first conv's features, so the model can place content
        at absolute positions even from a pure-noise input (not in VDM).
      cond_layout: ``"none"``, or where to add a conditional spatial map
        (:class:`ConditionalLayout`) of the time embedding, the frame index and the caption
        tokens: ``"input"`` (to the first conv's features) or ``"output"`` (to the prediction,
        a learned conditional mean that dominates at high noise). A direct path from caption
        and frame to where content goes, which a conv UNet otherwise has to build from a
        pure-noise input (not in VDM).
      layout_vocab: vocabulary size for the conditional map's own word vectors of the caption
        tokens (passed as ``tokens``); 0 reads the text context instead.
      film_out: modulate the output GroupNorm by the (per-frame) time embedding, as in the
        residual blocks; without it that norm removes any per-frame offset the conditioning
        puts on the features just before the output conv (not in VDM).
      dtype: computation dtype (params stay float32; the output is float32).
    """

    out_channels: int = 3
    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1, 2)
    head_dim: int = 32
    conv: str = "spatial"
    attention: str = "divided"
    dropout: float = 0.0
    num_groups: int | None = None
    remat: str = "none"
    frame_positions: bool = False
    pooled_text: bool = False
    pixel_positions: bool = False
    cond_layout: str = "none"
    layout_vocab: int = 0
    film_out: bool = False
    dtype: Dtype = jnp.float32

    def _blocks(self, train: bool):
        res_cls = remat(ResBlock, self.remat)
        attn_cls = remat(AttentionBlock, self.remat)

        def res(features, name):
            return res_cls(features, self.num_groups, self.conv, self.dropout,
                           deterministic=not train, dtype=self.dtype, name=name)

        layers = itertools.count()

        def attn(name):
            return attn_cls(self.head_dim, self.num_groups, self.attention, next(layers),
                            dtype=self.dtype, name=name)

        return res, attn

    @nn.compact
    def __call__(self, x, t, context=None, context_mask=None, image_frames=None, *, train=False,
                 tokens=None):
        """Predicts for noisy videos ``x (b, t, h, w, c)`` at times ``t (b,)`` in [0, 1].

        ``context (b, L, d)`` / ``context_mask (b, L)`` condition via cross-attention;
        ``image_frames (b, t)`` bool marks frames that are independent images; ``tokens (b, L)``
        caption ids, read only by the conditional map when ``layout_vocab > 0``.
        """
        if self.conv not in CONV_VARIANTS:
            raise ValueError(f"conv must be one of {CONV_VARIANTS}, got {self.conv!r}")
        if self.attention not in ATTENTION_VARIANTS:
            raise ValueError(f"attention must be one of {ATTENTION_VARIANTS}, "
                             f"got {self.attention!r}")
        bad = [i for i in self.attention_levels if not 0 <= i < len(self.channel_mult)]
        if bad:
            raise ValueError(f"attention_levels {bad} out of range for {len(self.channel_mult)} "
                             f"levels (valid: 0..{len(self.channel_mult) - 1})")
        t = jnp.asarray(t)
        check_inputs(x, t, context, context_mask, image_frames, len(self.channel_mult))
        res, attn = self._blocks(train)
        if context is not None:
            context = context.astype(self.dtype)
        cond = (context, context_mask, image_frames)

        emb = TimestepEmbedding(4 * self.channels, self.channels, dtype=self.dtype,
                                name="time_embed")(t)
        if self.pooled_text and context is not None:
            emb = emb + PooledContextEmbedding(emb.shape[-1], dtype=self.dtype,
                                               name="pooled_text")(context, context_mask)
        if self.frame_positions:  # (b, e) -> (b, t, e): per-frame FiLM in every res block
            frames = FramePositionEmbedding(emb.shape[-1], dtype=self.dtype,
                                            name="frame_pos")(x.shape[1])
            emb = emb[:, None, :] + frames[None]
        h = SpatialConv(self.channels, dtype=self.dtype, name="conv_in")(x.astype(self.dtype))
        if self.pixel_positions:
            h = h + PixelPositionEmbedding(self.channels, dtype=self.dtype,
                                           name="pixel_pos")(x.shape[2], x.shape[3])
        if self.cond_layout not in LAYOUT_TARGETS:
            raise ValueError(f"cond_layout must be one of {LAYOUT_TARGETS}, "
                             f"got {self.cond_layout!r}")
        if self.cond_layout == "input":
            h = h + ConditionalLayout(vocab_size=self.layout_vocab, dtype=self.dtype,
                                      name="cond_layout")(
                emb, context, context_mask, h.shape, tokens)
        h = shard_video(h)
        skips = [h]
        for level, mult in enumerate(self.channel_mult):
            for i in range(self.num_res_blocks):
                h = res(mult * self.channels, f"down_{level}_res_{i}")(h, emb)
                if level in self.attention_levels:
                    h = attn(f"down_{level}_attn_{i}")(h, *cond)
                skips.append(h)
            if level != len(self.channel_mult) - 1:
                h = SpatialDownsample(h.shape[-1], dtype=self.dtype, name=f"down_{level}_pool")(h)
                skips.append(h)

        mid = self.channel_mult[-1] * self.channels
        h = res(mid, "mid_res_0")(h, emb)
        h = attn("mid_attn")(h, *cond)
        h = res(mid, "mid_res_1")(h, emb)

        for level in reversed(range(len(self.channel_mult))):
            for i in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = res(self.channel_mult[level] * self.channels, f"up_{level}_res_{i}")(h, emb)
                if level in self.attention_levels:
                    h = attn(f"up_{level}_attn_{i}")(h, *cond)
            if level != 0:
                h = SpatialUpsample(h.shape[-1], dtype=self.dtype, name=f"up_{level}_upsample")(h)

        film = None
        if self.film_out:
            film = jnp.split(nn.Dense(
                2 * h.shape[-1], dtype=self.dtype,
                kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "mlp")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
                name="film_out",
            )(nn.silu(emb)), 2, axis=-1)
        h = GroupNorm(default_groups(h.shape[-1], self.num_groups), per_frame=True,
                      dtype=self.dtype, name="norm_out")(h, film)
        out = SpatialConv(self.out_channels, dtype=self.dtype,
                          kernel_init=nn.initializers.zeros, name="conv_out")(nn.silu(h))
        if self.cond_layout == "output":
            out = out + ConditionalLayout(vocab_size=self.layout_vocab, dtype=self.dtype,
                                          name="cond_layout")(
                emb, context, context_mask, out.shape, tokens)
        return out.astype(jnp.float32)


# Named sizes. Each entry mirrors the model config fields read by ``vdm.build_model``.
VARIANTS = {
    # CPU demo: 16@32x32, 32@16x16, 64@8x8 channels; attention (spatial, cross, temporal) at
    # 16x16 and 8x8 and in the middle. A train step on (8, 8, 32, 32, 3) + 8 tokens measured
    # ~0.7 s on 2 CPU cores (bench/layers_cpu.py); base width 32 measured ~1.4 s.
    "tiny": dict(
        channels=16, channel_mult=(1, 2, 4), num_res_blocks=1, attention_levels=(1, 2),
        head_dim=32, conv="spatial", attention="divided", dropout=0.0, out_channels=3,
        text=dict(vocab_size=1024, width=64, depth=2, num_heads=2, max_len=16),
    ),
    "small": dict(
        channels=64, channel_mult=(1, 2, 4), num_res_blocks=2, attention_levels=(1, 2),
        head_dim=32, conv="spatial", attention="divided", dropout=0.0, out_channels=3,
        text=dict(vocab_size=8192, width=256, depth=4, num_heads=4, max_len=32),
    ),
    # VDM 64x64 text-conditioned base model (paper appendix): base 256 channels, multipliers
    # (1, 2, 3, 4), 3 res blocks per level, attention at 32x32, 16x16 and 8x8, head dim 64.
    # Not given by the paper in this form: dropout (0.1 used here), GroupNorm groups (32 here).
    # The paper conditions on frozen BERT-large embeddings; the text entry here is a
    # BERT-large-sized encoder (vocab 30522, width 1024, 24 layers, 16 heads); max_len 64 is
    # our choice.
    "vdm_64": dict(
        channels=256, channel_mult=(1, 2, 3, 4), num_res_blocks=3, attention_levels=(1, 2, 3),
        head_dim=64, conv="spatial", attention="divided", dropout=0.1, out_channels=3,
        text=dict(vocab_size=30522, width=1024, depth=24, num_heads=16, max_len=64),
    ),
}
