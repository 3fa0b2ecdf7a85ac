"""Latte's transformer blocks: spatial/temporal blocks (variants 1, 2), the factorised block
(variant 3), split-head attention (variant 4), adaLN modulation and the scan over blocks.

Temporal parts take an optional ``image_frames (b, t)`` bool mask (joint image-video training):
their attention attends to video frames only and they leave image-frame tokens unchanged.

See :mod:`vdm_jax.models.latte` for the model and the variants' meaning.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange, repeat

from vdm_jax.nn.attention import STEP_TOKEN_AXES, Attention, dot_product_attention
from vdm_jax.nn.dense import DenseND, dense, logical_init
from vdm_jax.nn.embeddings import apply_rope
from vdm_jax.nn.remat import remat as remat_policy
from vdm_jax.sharding import shard

Dtype = jnp.dtype

BLOCK_VARIANTS = (1, 2, 3, 4)  # the paper's model variants (§3.1)
ACTIVATIONS = ("geglu", "gelu", "gelu_tanh")
ADALN = ("block", "single")
TEMPORAL_POS = ("absolute", "rope", "none")
CONDITIONING = ("adaln", "tokens")
FREQUENCY_DIM = 256  # sinusoidal time features (DiT, PixArt)


def _layer_norm(eps, affine, dtype, name):
    # Two-pass variance: the one-pass form loses digits when activations have a large mean.
    return nn.LayerNorm(
        epsilon=eps, use_scale=affine, use_bias=affine, use_fast_variance=False, dtype=dtype,
        scale_init=logical_init(("norm",), nn.initializers.ones),
        bias_init=logical_init(("norm",), nn.initializers.zeros), name=name,
    )


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """What every Latte block shares (see :class:`LatteTransformer` for the fields)."""

    num_heads: int
    head_dim: int
    mlp_ratio: float = 4.0
    activation: str = "gelu_tanh"
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    norm_affine: bool = False
    adaln: str = "block"
    dtype: Dtype | None = None
    conditioning: str = "adaln"
    rope: bool = False  # rotary frame positions in temporal attention


def _rotary(num_frames: int, positions=None):
    """q/k transform for temporal attention over ``num_frames`` frames (``(B, n, heads, e)``) at
    ``positions (B, n)`` (default: the frame index); tokens past the frames (the conditioning
    token) are left unrotated."""
    positions = np.arange(num_frames) if positions is None else positions
    return lambda a: jnp.concatenate(
        [apply_rope(a[:, :num_frames], positions), a[:, num_frames:]], axis=1)


def frame_ranks(image_frames: jax.Array) -> jax.Array:
    """``(b, t)`` bool -> ``(b, t)`` int32: each video frame's index among its clip's video
    frames (the position it would have without the image frames; unused on image frames)."""
    return jnp.maximum(jnp.cumsum(~image_frames, axis=1) - 1, 0).astype(jnp.int32)


def _temporal_setup(image_frames, groups: int, num_frames: int, rope: bool):
    """Key mask ``(b * groups, t)`` (True = video frame; None without image frames) and rotary
    transform (None without rope) of a temporal attention over ``(b groups)`` frame sequences."""
    if image_frames is None:
        return None, (_rotary(num_frames) if rope else None)
    per_group = lambda a: repeat(a, "b t -> (b g) t", g=groups)  # noqa: E731
    rotary = _rotary(num_frames, per_group(frame_ranks(image_frames))) if rope else None
    return per_group(~image_frames), rotary


def _modulation(module, spec, cond, d, dtype):
    """The six ``(b, 1, 1, d)`` shift/scale/gate vectors (msa then mlp) of a block, created in
    ``module``, in ``dtype`` (the activations', so a bfloat16 scan carry stays bfloat16); with
    token conditioning no modulation: zero shifts and scales, unit gates."""
    if spec.conditioning == "tokens":
        return [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    if spec.adaln == "single":
        table = module.param("scale_shift_table", logical_init((None, "embed"),
                             nn.initializers.normal(d**-0.5)), (6, d), jnp.float32)
        mod = table[None] + cond
    else:
        mod = dense((6, d), ("embed", None, "mlp"), "adaln_modulation", spec.dtype,
                    nn.initializers.zeros, (None, "mlp"))(nn.silu(cond))
    return [mod[:, i, None, None, :].astype(dtype) for i in range(6)]


def _group_attention(attention, y, token=None, rotary=None, keys=None, temporal=False):
    """``attention`` within each of the ``g`` groups of ``y (b, g, n, d)`` (frames, or patch
    positions when ``temporal``); ``token (b, d)`` (token conditioning) is appended to every
    group and its outputs dropped; ``keys (b g, n)`` bool masks keys (the token stays
    visible)."""
    b, g, n, d = y.shape
    if token is not None:
        tok = jnp.broadcast_to(token[:, None, None, :].astype(y.dtype), (b, g, 1, d))
        y = jnp.concatenate([y, tok], axis=2)
        keys = None if keys is None else jnp.pad(keys, ((0, 0), (0, 1)), constant_values=True)
    mask = None if keys is None else keys[:, None, None, :]
    out = attention(rearrange(y, "b g n d -> (b g) n d"), rotary=rotary, mask=mask,
                    axes=STEP_TOKEN_AXES["time" if temporal else "space"])
    return rearrange(out[:, :n], "(b g) n d -> b g n d", b=b)


def _cross_attention(spec, x, context, context_mask):
    """Cross-attention of every token of ``x (b, g, n, d)`` to the caption (no norm, no gate:
    PixArt); all groups' queries in one call."""
    g = x.shape[1]
    y = Attention(spec.num_heads, spec.head_dim, qkv_bias=spec.qkv_bias, dtype=spec.dtype,
                  name="attn2")(rearrange(x, "b g n d -> b (g n) d"), context,
                                context_mask=context_mask)
    return x + rearrange(y, "b (g n) d -> b g n d", g=g)


class FeedForward(nn.Module):
    """``proj_out(act(proj_in(x)))``; GEGLU's ``proj_in`` has a ``(2, inner)`` output: value,
    gate (so the gate half shards along ``mlp`` like the value half)."""

    activation: str
    mlp_ratio: float = 4.0
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        inner = int(d * self.mlp_ratio)
        if self.activation == "geglu":
            y = dense((2, inner), ("embed", None, "mlp"), "proj_in", self.dtype)(x)
            y = y[..., 0, :] * nn.gelu(y[..., 1, :], approximate=False)
        else:
            y = dense(inner, ("embed", "mlp"), "proj_in", self.dtype)(x)
            y = nn.gelu(y, approximate=self.activation == "gelu_tanh")
        return dense(d, ("mlp", "embed"), "proj_out", self.dtype)(y)


class LatteBlock(nn.Module):
    """Pre-norm block with adaLN modulation on tokens ``x (b, g, n, d)``: attention within each
    of the ``g`` groups of ``n`` tokens (a frame's patches, or a patch position's frames), then
    optional cross-attention to the caption, then the MLP.

    ``cond`` is ``(b, 6, d)`` (adaLN-single: the shared projection) or ``(b, d)`` (adaLN-Zero,
    or token conditioning: ``c``). A temporal block (``x (b, n, t, d)``) with ``image_frames
    (b, t)`` attends to video frames only and returns image frames' tokens unchanged. Returns
    ``(x, None)`` so it can be the body of ``nn.scan``.
    """

    spec: BlockSpec
    temporal: bool = False
    cross_attention: bool = False

    def shard(self, x):
        names = ("act_seq", "act_frames") if self.temporal else ("act_frames", "act_seq")
        return shard(x, "act_batch", *names, "act_embed")

    @nn.compact
    def __call__(self, x, cond, context=None, context_mask=None, image_frames=None):
        s, x_in = self.spec, x
        d = x.shape[-1]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = _modulation(
            self, s, cond, d, x.dtype)
        norm1 = _layer_norm(s.norm_eps, s.norm_affine, s.dtype, "norm1")
        token = norm1(cond) if s.conditioning == "tokens" else None
        keys, rotary = None, None
        if self.temporal:
            keys, rotary = _temporal_setup(image_frames, x.shape[1], x.shape[2], s.rope)
        y = _group_attention(Attention(s.num_heads, s.head_dim, qkv_bias=s.qkv_bias,
                                       dtype=s.dtype, name="attn1"),
                             norm1(x) * (1 + scale_msa) + shift_msa, token, rotary, keys,
                             self.temporal)
        x = x + gate_msa * y
        if self.cross_attention:
            x = _cross_attention(s, x, context, context_mask)
        y = _layer_norm(s.norm_eps, s.norm_affine, s.dtype, "norm2")(x)
        y = FeedForward(s.activation, s.mlp_ratio, s.dtype, name="ff")(
            y * (1 + scale_mlp) + shift_mlp)
        x = x + gate_mlp * y
        if self.temporal and image_frames is not None:
            x = jnp.where(image_frames[:, None, :, None], x_in, x)
        return self.shard(x), None


class LattePair(nn.Module):
    """A spatial block on ``(b, t, n, d)`` then a temporal block on ``(b, n, t, d)``; the unit
    ``nn.scan`` repeats in variant 1. ``first`` (1.0 in the first pair, else 0.0) gates the
    temporal position embedding ``(b or 1, t, d)``, which Latte adds once, before the first
    temporal block."""

    spec: BlockSpec
    cross_attention: bool
    enable_temporal: bool = True

    @nn.compact
    def __call__(self, x, cond, context, context_mask, temporal_pos, image_frames, first):
        x, _ = LatteBlock(self.spec, False, self.cross_attention, name="spatial")(
            x, cond, context, context_mask)
        if not self.enable_temporal:
            return x, None
        y = rearrange(x, "b t n d -> b n t d")
        if temporal_pos is not None:
            y = y + first.astype(y.dtype) * temporal_pos[:, None].astype(y.dtype)
        y, _ = LatteBlock(self.spec, True, name="temporal")(y, cond, None, None, image_frames)
        return rearrange(y, "b n t d -> b t n d"), None


def _scanned(cls, length: int, remat: str, in_axes: tuple):
    """``cls`` (rematerialised unless ``remat="none"``) repeated ``length`` times by
    ``nn.scan``, parameters stacked on a leading ``layers`` axis."""
    return nn.scan(
        remat_policy(cls, remat, scanned=True), variable_axes={"params": 0},
        split_rngs={"params": True}, in_axes=in_axes, length=length,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )


class LateFusion(nn.Module):
    """Variant 2: every spatial block, then the temporal position embedding, then every temporal
    block; the same parameter tree as the scanned :class:`LattePair` of variant 1."""

    spec: BlockSpec
    cross_attention: bool
    num_layers: int
    remat: str = "none"
    enable_temporal: bool = True

    @nn.compact
    def __call__(self, x, cond, context, context_mask, temporal_pos, image_frames=None):
        scan = lambda: _scanned(LatteBlock, self.num_layers, self.remat, (nn.broadcast,) * 4)  # noqa: E731
        x, _ = scan()(self.spec, False, self.cross_attention, name="spatial")(
            x, cond, context, context_mask, None)
        if not self.enable_temporal:
            return x
        y = rearrange(x, "b t n d -> b n t d")
        if temporal_pos is not None:
            y = y + temporal_pos[:, None].astype(y.dtype)
        y, _ = scan()(self.spec, True, name="temporal")(y, cond, None, None, image_frames)
        return rearrange(y, "b n t d -> b t n d")


class SplitHeadAttention(nn.Module):
    """Variant 4's attention on ``x (b, t, n, d)``: q/k/v/out projections like
    :class:`Attention` (same names and shapes); heads ``[0, num_heads // 2)`` attend within each
    frame, the rest within each patch position across frames (with ``rotary`` on their q and k).
    ``token (b, d)`` (token conditioning) is one extra key/value in every group. With
    ``temporal=False`` the temporal heads are skipped (their slots of ``to_out``'s input are
    zero), so frames are independent; with ``image_frames (b, t)`` the temporal heads attend to
    video frames only and are zero on image frames, as if skipped for them."""

    num_heads: int
    head_dim: int
    qkv_bias: bool = True
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x, token=None, rotary=None, temporal=True, image_frames=None):
        b, f, n, d = x.shape
        hs = self.num_heads // 2
        proj = {name: DenseND((self.num_heads, self.head_dim), ("embed", "heads", "kv"),
                              dtype=self.dtype, use_bias=self.qkv_bias, name=name)
                for name in ("to_q", "to_k", "to_v")}
        q, k, v = (proj[name](x) for name in ("to_q", "to_k", "to_v"))  # (b, f, n, h, e)
        tk, tv = (None, None) if token is None else (proj["to_k"](token), proj["to_v"](token))

        def attend(heads, pattern, groups, rot=None, keys=None, step="space"):
            qg, kg, vg = (rearrange(a[..., heads, :], pattern) for a in (q, k, v))
            if rot is not None:
                qg, kg = rot(qg), rot(kg)
            if token is not None:  # (b, h, e) -> one more key/value per group
                extra = lambda a: jnp.repeat(a[:, None, heads, :], groups, axis=0)  # noqa: E731
                kg = jnp.concatenate([kg, extra(tk).astype(kg.dtype)], axis=1)
                vg = jnp.concatenate([vg, extra(tv).astype(vg.dtype)], axis=1)
                keys = None if keys is None else jnp.pad(keys, ((0, 0), (0, 1)),
                                                         constant_values=True)
            mask = None if keys is None else keys[:, None, None, :]
            return dot_product_attention(qg, kg, vg, mask=mask, axes=STEP_TOKEN_AXES[step])

        ys = rearrange(attend(slice(0, hs), "b f n h e -> (b f) n h e", f),
                       "(b f) n h e -> b f n h e", b=b)
        if temporal:
            keys = None if image_frames is None else repeat(~image_frames, "b f -> (b n) f", n=n)
            yt = rearrange(attend(slice(hs, None), "b f n h e -> (b n) f h e", n, rotary, keys,
                                  "time"),
                           "(b n) f h e -> b f n h e", b=b)
            if image_frames is not None:
                yt = jnp.where(image_frames[:, :, None, None, None], 0.0, yt).astype(yt.dtype)
        else:
            yt = jnp.zeros(ys.shape[:3] + (self.num_heads - hs, self.head_dim), ys.dtype)
        y = jnp.concatenate([ys, yt], axis=3)
        return DenseND((d,), ("heads", "kv", "embed"), dtype=self.dtype, name="to_out")(y)


class FactorisedBlock(nn.Module):
    """Variants 3 and 4: one block on ``x (b, t, n, d)`` with both spatial and temporal
    attention, then cross-attention to the caption (if any), then one MLP; adaLN as in
    :class:`LatteBlock` (one set of six vectors; variant 3's two attentions share the msa
    shift/scale/gate). ``split_heads`` picks variant 4 (:class:`SplitHeadAttention`) over
    variant 3 (spatial ``attn1`` then temporal ``attn_temporal``, each pre-norm residual).
    ``enable_temporal=False`` skips the temporal attention (heads); ``image_frames (b, t)``
    skips it for those frames and hides them from the video frames' temporal attention."""

    spec: BlockSpec
    cross_attention: bool
    split_heads: bool
    enable_temporal: bool = True

    @nn.compact
    def __call__(self, x, cond, context=None, context_mask=None, image_frames=None):
        s = self.spec
        b, f, n, d = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = _modulation(
            self, s, cond, d, x.dtype)
        tokens = s.conditioning == "tokens"
        keys, rotary = _temporal_setup(image_frames, n, f, s.rope)
        norm1 = _layer_norm(s.norm_eps, s.norm_affine, s.dtype, "norm1")
        if self.split_heads:
            y = SplitHeadAttention(s.num_heads, s.head_dim, s.qkv_bias, s.dtype, name="attn1")(
                norm1(x) * (1 + scale_msa) + shift_msa, norm1(cond) if tokens else None,
                rotary, self.enable_temporal, image_frames)
            x = x + gate_msa * y
        else:
            attn = lambda name: Attention(s.num_heads, s.head_dim, qkv_bias=s.qkv_bias,  # noqa: E731
                                          dtype=s.dtype, name=name)
            y = _group_attention(attn("attn1"), norm1(x) * (1 + scale_msa) + shift_msa,
                                 norm1(cond) if tokens else None)
            x = x + gate_msa * y
            if self.enable_temporal:
                norm_t = _layer_norm(s.norm_eps, s.norm_affine, s.dtype, "norm_temporal")
                y = rearrange(norm_t(x) * (1 + scale_msa) + shift_msa, "b t n d -> b n t d")
                y = _group_attention(attn("attn_temporal"), y, norm_t(cond) if tokens else None,
                                     rotary, keys, temporal=True)
                y = x + gate_msa * rearrange(y, "b n t d -> b t n d")
                x = y if image_frames is None else jnp.where(
                    image_frames[:, :, None, None], x, y)
        x = shard(x, "act_batch", "act_frames", "act_seq", "act_embed")
        if self.cross_attention:
            x = _cross_attention(s, x, context, context_mask)
        y = _layer_norm(s.norm_eps, s.norm_affine, s.dtype, "norm2")(x)
        y = FeedForward(s.activation, s.mlp_ratio, s.dtype, name="ff")(
            y * (1 + scale_mlp) + shift_mlp)
        return shard(x + gate_mlp * y, "act_batch", "act_frames", "act_seq", "act_embed"), None


class Mlp(nn.Module):
    """``linear_2(act(linear_1(x)))``: the time embedding (SiLU, on 256 sinusoidal features) and
    the caption projection (GELU-tanh, PixArt-α)."""

    features: int
    activation: str
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x):
        x = dense(self.features, ("embed", "mlp"), "linear_1", self.dtype)(x)
        x = nn.silu(x) if self.activation == "silu" else nn.gelu(x, approximate=True)
        return dense(self.features, ("mlp", "embed"), "linear_2", self.dtype)(x)
