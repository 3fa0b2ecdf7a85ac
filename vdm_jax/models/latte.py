"""Latte (Ma et al. 2024, "Latte: Latent Diffusion Transformer for Video Generation").

A DiT over video latents: every frame is cut into ``p x p`` patches (or ``p_t x p x p`` tubelets)
and transformer blocks alternate between attention within a frame (*spatial* blocks, with
cross-attention to a caption when there is one) and attention across frames at one patch
position (*temporal* blocks). ``variant`` is the paper's block arrangement (§3.1):

- ``1``: spatial and temporal blocks interleaved (the paper's choice, and diffusers'
  ``LatteTransformer3DModel``, which this reproduces exactly);
- ``2``: late fusion, all spatial blocks then all temporal blocks.

Both keep parameters in one tree (``blocks/spatial``, ``blocks/temporal``, stacked on a leading
``layers`` axis by ``nn.scan``), so weights of one variant run as the other.

Conditioning (``adaln``): ``"block"`` is the paper's DiT adaLN-Zero, where each block maps
``SiLU(c)`` (``c`` = time + class embedding) to its own shift/scale/gate vectors; ``"single"`` is
PixArt-α's adaLN-single used by the text-to-video Latte (one shared linear layer, plus a learned
``(6, d)`` table per block).

Time: ``t (b,)`` in ``[0, 1]`` as everywhere in vdm_jax; the sinusoidal embedding sees
``k = time_scale * t + time_shift``, which with the defaults ``(1000, -1)`` is the discrete DDPM
step ``k`` a diffusers checkpoint was trained with (``t = (k + 1) / 1000``). ``time_scale=1,
time_shift=0`` feeds diffusers timesteps unchanged (the parity tests do).

Output ``(b, t, h, w, out_channels)``; with ``learn_sigma`` the first ``in_channels`` channels
are the noise prediction and the rest the variance interpolation values (diffusers'
``learned_range``): see :func:`split_learned_sigma`.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange

from vdm_jax.nn.attention import Attention
from vdm_jax.nn.dense import dense
from vdm_jax.nn.embeddings import sincos_1d, spatial_pos_embed, timestep_embedding
from vdm_jax.sharding import shard

Dtype = jnp.dtype

BLOCK_VARIANTS = (1, 2)  # the paper's model variants 1-4 (§3.1) implemented so far
ACTIVATIONS = ("geglu", "gelu", "gelu_tanh")
ADALN = ("block", "single")
TEMPORAL_POS = ("absolute", "none")
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
FREQUENCY_DIM = 256  # sinusoidal time features (DiT, PixArt)


def _init(names, init):
    return nn.with_logical_partitioning(init, names)


def _layer_norm(eps, affine, dtype, name):
    # Two-pass variance: the one-pass form loses digits when activations have a large mean.
    return nn.LayerNorm(
        epsilon=eps, use_scale=affine, use_bias=affine, use_fast_variance=False, dtype=dtype,
        scale_init=_init(("norm",), nn.initializers.ones),
        bias_init=_init(("norm",), nn.initializers.zeros), name=name,
    )


def split_learned_sigma(out: jax.Array, in_channels: int) -> tuple[jax.Array, jax.Array]:
    """``(b, t, h, w, 2c)`` -> (noise prediction, variance values), each ``(b, t, h, w, c)``."""
    if out.shape[-1] != 2 * in_channels:
        raise ValueError(f"expected 2 * {in_channels} output channels, got {out.shape[-1]}")
    return out[..., :in_channels], out[..., in_channels:]


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

    ``cond`` is ``(b, 6, d)`` (adaLN-single: the shared projection) or ``(b, d)`` (adaLN-Zero:
    ``c``). Returns ``(x, None)`` so it can be the body of ``nn.scan``.
    """

    spec: BlockSpec
    temporal: bool = False
    cross_attention: bool = False

    def modulation(self, cond, d, dtype):
        """The six ``(b, 1, 1, d)`` shift/scale/gate vectors (msa then mlp), in ``dtype`` (the
        activations', so a bfloat16 scan carry stays bfloat16)."""
        s = self.spec
        if s.adaln == "single":
            table = self.param("scale_shift_table", _init((None, "embed"),
                               nn.initializers.normal(d**-0.5)), (6, d), jnp.float32)
            mod = table[None] + cond
        else:
            mod = dense((6, d), ("embed", None, "mlp"), "adaln_modulation", s.dtype,
                         nn.initializers.zeros, (None, "mlp"))(nn.silu(cond))
        return [mod[:, i, None, None, :].astype(dtype) for i in range(6)]

    def shard(self, x):
        names = ("act_seq", "act_frames") if self.temporal else ("act_frames", "act_seq")
        return shard(x, "act_batch", *names, "act_embed")

    @nn.compact
    def __call__(self, x, cond, context=None, context_mask=None):
        s = self.spec
        b, g, n, d = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(
            cond, d, x.dtype)
        y = _layer_norm(s.norm_eps, s.norm_affine, s.dtype, "norm1")(x)
        y = rearrange(y * (1 + scale_msa) + shift_msa, "b g n d -> (b g) n d")
        y = Attention(s.num_heads, s.head_dim, qkv_bias=s.qkv_bias, dtype=s.dtype,
                      name="attn1")(y)
        x = x + gate_msa * rearrange(y, "(b g) n d -> b g n d", b=b)
        if self.cross_attention:  # no norm, no gate (PixArt); all frames' queries in one call
            y = Attention(s.num_heads, s.head_dim, qkv_bias=s.qkv_bias, dtype=s.dtype,
                          name="attn2")(rearrange(x, "b g n d -> b (g n) d"), context,
                                        context_mask=context_mask)
            x = x + rearrange(y, "b (g n) d -> b g n d", g=g)
        y = _layer_norm(s.norm_eps, s.norm_affine, s.dtype, "norm2")(x)
        y = FeedForward(s.activation, s.mlp_ratio, s.dtype, name="ff")(
            y * (1 + scale_mlp) + shift_mlp)
        return self.shard(x + gate_mlp * y), None


class LattePair(nn.Module):
    """A spatial block on ``(b, t, n, d)`` then a temporal block on ``(b, n, t, d)``; the unit
    ``nn.scan`` repeats in variant 1. ``first`` (1.0 in the first pair, else 0.0) gates the
    temporal position embedding, which Latte adds once, before the first temporal block."""

    spec: BlockSpec
    cross_attention: bool
    enable_temporal: bool = True

    @nn.compact
    def __call__(self, x, cond, context, context_mask, temporal_pos, first):
        x, _ = LatteBlock(self.spec, False, self.cross_attention, name="spatial")(
            x, cond, context, context_mask)
        if not self.enable_temporal:
            return x, None
        y = rearrange(x, "b t n d -> b n t d")
        if temporal_pos is not None:
            y = y + first.astype(y.dtype) * temporal_pos.astype(y.dtype)
        y, _ = LatteBlock(self.spec, True, name="temporal")(y, cond)
        return rearrange(y, "b n t d -> b t n d"), None


def _scanned(cls, length: int, remat: str, in_axes: tuple):
    """``cls`` (rematerialised unless ``remat="none"``) repeated ``length`` times by
    ``nn.scan``, parameters stacked on a leading ``layers`` axis."""
    if remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; choose one of {list(REMAT_POLICIES)}")
    if remat != "none":
        cls = nn.remat(cls, policy=REMAT_POLICIES[remat], prevent_cse=False)
    return nn.scan(
        cls, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=in_axes,
        length=length, metadata_params={nn.PARTITION_NAME: "layers"},
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
    def __call__(self, x, cond, context, context_mask, temporal_pos):
        scan = lambda: _scanned(LatteBlock, self.num_layers, self.remat, (nn.broadcast,) * 3)  # noqa: E731
        x, _ = scan()(self.spec, False, self.cross_attention, name="spatial")(
            x, cond, context, context_mask)
        if not self.enable_temporal:
            return x
        y = rearrange(x, "b t n d -> b n t d")
        if temporal_pos is not None:
            y = y + temporal_pos.astype(y.dtype)
        y, _ = scan()(self.spec, True, name="temporal")(y, cond, None, None)
        return rearrange(y, "b n t d -> b t n d")


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


class LatteTransformer(nn.Module):
    """Latte on latent videos ``(b, t, h, w, in_channels)`` -> ``(b, t, h, w, out_channels)``.

    Attributes:
      in_channels: latent channels; ``learn_sigma`` doubles the output (noise, variance values).
      hidden_size, num_heads, mlp_ratio: transformer width, heads (must divide it), MLP width.
      num_layers: spatial/temporal block *pairs*; the paper's "depth" is ``2 * num_layers``.
      patch_size, patch_size_t: patch side, and frames per tubelet (1 = per-frame patches).
      variant: block arrangement, 1 (interleaved) or 2 (late fusion); see the module docstring.
      sample_size: latent side the spatial sin-cos table is laid out for (diffusers'
        ``sample_size``); other sizes are rescaled onto it as diffusers does.
      temporal_pos: ``"absolute"`` (sin-cos over frame tokens, added before the first temporal
        block) or ``"none"``.
      adaln: ``"block"`` (DiT adaLN-Zero, the paper) or ``"single"`` (PixArt-α adaLN-single).
      activation: MLP activation, ``"gelu_tanh"`` (DiT), ``"gelu"`` or ``"geglu"``.
      qkv_bias: biases on the q/k/v projections; norm_eps, norm_affine: the blocks' LayerNorms.
      caption_channels: size of the text embeddings; when set, a caption projection feeds
        cross-attention in every spatial block and ``context`` is required.
      num_classes: class-conditional when set; label ``num_classes`` is the null class (CFG).
      time_scale, time_shift: the embedded time is ``time_scale * t + time_shift``.
      remat: rematerialisation policy of the scanned blocks, a key of ``REMAT_POLICIES``.
    """

    in_channels: int = 4
    learn_sigma: bool = True
    hidden_size: int = 1152
    num_layers: int = 14
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 2
    patch_size_t: int = 1
    variant: int = 1
    sample_size: int = 32
    temporal_pos: str = "absolute"
    adaln: str = "block"
    activation: str = "gelu_tanh"
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    norm_affine: bool = False
    caption_channels: int | None = None
    num_classes: int | None = None
    time_scale: float = 1000.0
    time_shift: float = -1.0
    remat: str = "none"
    dtype: Dtype | None = None

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    def check(self) -> None:
        """Raises a ValueError naming the first bad attribute."""
        choices = {"variant": BLOCK_VARIANTS, "activation": ACTIVATIONS, "adaln": ADALN,
                   "temporal_pos": TEMPORAL_POS, "remat": tuple(REMAT_POLICIES)}
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field}={getattr(self, field)!r} is not one of {list(allowed)}"
                                 + (" (variants 3 and 4 are not implemented yet)"
                                    if field == "variant" else ""))
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} does not divide "
                             f"hidden_size={self.hidden_size}")

    def check_inputs(self, x, t, context, context_mask, class_labels) -> None:
        if x.ndim != 5 or x.shape[-1] != self.in_channels:
            raise ValueError(f"expected latents (b, t, h, w, {self.in_channels}), got {x.shape}")
        b, f, h, w, _ = x.shape
        p, pt = self.patch_size, self.patch_size_t
        if f % pt or h % p or w % p:
            raise ValueError(f"frames {f} must be a multiple of patch_size_t={pt} and height {h}, "
                             f"width {w} multiples of patch_size={p}")
        if t.shape != (b,):
            raise ValueError(f"t must be (b,) = ({b},) or a scalar, got {t.shape}")
        if (context is None) != (self.caption_channels is None):
            raise ValueError("context (b, L, caption_channels) is required exactly when "
                             f"caption_channels is set (it is {self.caption_channels})")
        if context is not None and (context.ndim != 3 or context.shape[0] != b
                                    or context.shape[-1] != self.caption_channels):
            raise ValueError(f"context must be ({b}, L, {self.caption_channels}), "
                             f"got {context.shape}")
        if context_mask is not None and (context is None or
                                         context_mask.shape != context.shape[:2]):
            raise ValueError(f"context_mask must be (b, L) like the context, got "
                             f"{context_mask.shape}")
        if (class_labels is None) != (self.num_classes is None) or (
                class_labels is not None and class_labels.shape != (b,)):
            raise ValueError(f"class_labels ({b},) are required exactly when num_classes is set "
                             f"(it is {self.num_classes})")

    def spec(self) -> BlockSpec:
        return BlockSpec(self.num_heads, self.hidden_size // self.num_heads, self.mlp_ratio,
                         self.activation, self.qkv_bias, self.norm_eps, self.norm_affine,
                         self.adaln, self.dtype)

    def embed_patches(self, x):
        """``(b, t, h, w, c) -> (b, t', h' * w', d)`` with the spatial sin-cos positions added.

        The kernel is ``(pt, p, p, c, d)``: a Conv3d kernel whose stride equals its size."""
        p, pt = self.patch_size, self.patch_size_t
        x = rearrange(x, "b (t pt) (h p) (w q) c -> b t h w pt p q c", pt=pt, p=p, q=p)
        xavier = nn.initializers.xavier_uniform(in_axis=(0, 1, 2, 3), out_axis=4)
        x = dense(self.hidden_size, (None, None, None, None, "embed"), "patch_embed",
                   self.dtype, xavier)(x)
        gh, gw = x.shape[2:4]
        base = self.sample_size // p
        pos = spatial_pos_embed(self.hidden_size, gh, gw, base, max(self.sample_size // 64, 1))
        x = rearrange(x, "b t h w d -> b t (h w) d") + jnp.asarray(pos, jnp.float32)
        return x.astype(self.dtype or jnp.float32)

    def conditioning(self, t, class_labels):
        """``c (b, d)`` = time (+ class) embedding, and the blocks' ``cond`` input."""
        freqs = timestep_embedding(t * self.time_scale + self.time_shift, FREQUENCY_DIM,
                                   time_scale=1.0)  # [cos, sin]
        c = Mlp(self.hidden_size, "silu", self.dtype, name="time_embed")(freqs)
        if self.num_classes is not None:
            c = c + nn.Embed(
                self.num_classes + 1, self.hidden_size, name="label_embed",
                embedding_init=_init(("vocab", "embed"), nn.initializers.normal(0.02)),
            )(class_labels)
        if self.adaln == "block":
            return c, c
        cond = dense((6, self.hidden_size), ("embed", None, "mlp"), "adaln_single", self.dtype,
                      nn.initializers.normal(0.02), (None, "mlp"))(nn.silu(c))
        return c, cond

    def blocks(self, x, cond, context, context_mask, enable_temporal):
        spec, cross = self.spec(), context is not None
        pos = None
        if self.temporal_pos == "absolute" and x.shape[1] > 1:
            pos = jnp.asarray(sincos_1d(self.hidden_size, np.arange(x.shape[1])), jnp.float32)
        if self.variant == 2:
            return LateFusion(spec, cross, self.num_layers, self.remat, enable_temporal,
                              name="blocks")(x, cond, context, context_mask, pos)
        in_axes = (nn.broadcast,) * 4 + (0,)
        pairs = _scanned(LattePair, self.num_layers, self.remat, in_axes)
        first = (jnp.arange(self.num_layers) == 0).astype(jnp.float32)
        x, _ = pairs(spec, cross, enable_temporal, name="blocks")(
            x, cond, context, context_mask, pos, first)
        return x

    def final_layer(self, x, c, height):
        """Modulated LayerNorm and the per-token linear back to ``(b, t, h, w, out)`` pixels."""
        d, p, pt = self.hidden_size, self.patch_size, self.patch_size_t
        if self.adaln == "single":  # diffusers: the time embedding itself, not SiLU of it
            table = self.param("scale_shift_table", _init((None, "embed"),
                               nn.initializers.normal(d**-0.5)), (2, d), jnp.float32)
            mod = table[None] + c[:, None]
        else:
            mod = dense((2, d), ("embed", None, "mlp"), "adaln_modulation", self.dtype,
                         nn.initializers.zeros, (None, "mlp"))(nn.silu(c))
        shift, scale = mod[:, 0, None, None], mod[:, 1, None, None]
        x = _layer_norm(1e-6, False, self.dtype, "norm_out")(x) * (1 + scale) + shift
        x = dense((pt, p, p, self.out_channels), ("embed", None, None, None, None), "proj_out",
                   self.dtype, nn.initializers.zeros)(x)
        return rearrange(x, "b t (h w) pt p q c -> b (t pt) (h p) (w q) c", h=height // p)

    @nn.compact
    def __call__(self, x, t, context=None, context_mask=None, class_labels=None, *,
                 enable_temporal: bool = True):
        """Noise prediction for latents ``x (b, t, h, w, c)`` at times ``t (b,)`` in [0, 1].

        ``context (b, L, caption_channels)`` text embeddings with ``context_mask (b, L)`` bool
        (True = real token); ``class_labels (b,)`` int; ``enable_temporal=False`` skips every
        temporal block (and the temporal positions): frames are then independent images.
        """
        self.check()
        t = jnp.asarray(t, jnp.float32)
        t = jnp.broadcast_to(t, x.shape[:1]) if t.ndim == 0 else t
        class_labels = None if class_labels is None else jnp.asarray(class_labels)
        context_mask = None if context_mask is None else jnp.asarray(context_mask, bool)
        self.check_inputs(x, t, context, context_mask, class_labels)
        tokens = self.embed_patches(x)
        c, cond = self.conditioning(t, class_labels)
        if context is not None:
            context = Mlp(self.hidden_size, "gelu_tanh", self.dtype,
                          name="caption_projection")(context)
        tokens = self.blocks(tokens, cond, context, context_mask, enable_temporal)
        out = self.final_layer(tokens, c, x.shape[2])
        return out.astype(jnp.float32)


def example_inputs(model: LatteTransformer, num_frames: int | None = None,
                   latent_size: int | None = None) -> tuple[tuple, dict]:
    """Smallest valid ``(args, kwargs)`` for ``model.init`` (parameter shapes do not depend on
    the frame count or size; pass them to trace a particular shape)."""
    f = num_frames or model.patch_size_t
    s = latent_size or model.patch_size
    args = (jnp.zeros((1, f, s, s, model.in_channels)), jnp.zeros((1,)))
    kwargs = {}
    if model.caption_channels is not None:
        kwargs["context"] = jnp.zeros((1, 1, model.caption_channels))
    if model.num_classes is not None:
        kwargs["class_labels"] = jnp.zeros((1,), jnp.int32)
    return args, kwargs


def count_params(model: LatteTransformer) -> int:
    """Parameter count from ``jax.eval_shape`` (no memory is allocated). The sin-cos position
    tables are fixed, not parameters (the paper's counts exclude them too)."""
    args, kwargs = example_inputs(model)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
    return int(sum(x.size for x in jax.tree.leaves(nn.meta.unbox(shapes["params"]))))


# The paper's sizes (Table 1; DiT's S/B/L/XL). Its "depth" counts spatial and temporal blocks,
# so num_layers (pairs) is half of it: XL has 28 blocks = 14 spatial + 14 temporal. With the
# defaults (adaLN-Zero, GELU-tanh MLP, q/k/v biases, 4 -> 8 learned-sigma channels, patch 2) and
# no class/caption embedding these reproduce the paper's counts: S 32.48M ... XL 673.68M.
VARIANTS = {
    "S/2": dict(hidden_size=384, num_layers=6, num_heads=6, patch_size=2),
    "B/2": dict(hidden_size=768, num_layers=6, num_heads=12, patch_size=2),
    "L/2": dict(hidden_size=1024, num_layers=12, num_heads=16, patch_size=2),
    "XL/2": dict(hidden_size=1152, num_layers=14, num_heads=16, patch_size=2),
}
