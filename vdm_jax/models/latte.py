"""Latte (Ma et al. 2024, "Latte: Latent Diffusion Transformer for Video Generation").

A DiT over video latents: every frame is cut into ``p x p`` patches (or ``p_t x p x p`` tubelets)
and transformer blocks alternate between attention within a frame (*spatial* blocks, with
cross-attention to a caption when there is one) and attention across frames at one patch
position (*temporal* blocks). ``variant`` is the paper's block arrangement (§3.1):

- ``1``: spatial and temporal blocks interleaved (the paper's choice, and diffusers'
  ``LatteTransformer3DModel``, which this reproduces exactly);
- ``2``: late fusion, all spatial blocks then all temporal blocks.
- ``3``: factorised self-attention (ViViT's model 3): one block type whose attention is a
  spatial attention (``attn1``) then a temporal attention (``attn_temporal``), each with its own
  projections and residual, then cross-attention and *one* MLP. ``num_layers`` counts these
  blocks, so ``num_layers=L`` has ``L`` MLPs and ``2L`` self-attentions where variants 1/2 have
  ``2L`` blocks (``2L`` MLPs and ``2L`` self-attentions): with the same ``num_layers`` its
  parameters are variant 1's minus one MLP and one adaLN modulation per pair.
- ``4``: factorised heads (ViViT's model 4): one multi-head attention ``attn1`` whose first
  ``num_heads // 2`` heads attend over the patches of a frame and the others over the frames at
  a patch position; head outputs are concatenated and projected by one ``to_out``. Its block has
  exactly the parameters of variant 1's spatial block, so ``num_layers=L`` is ``L`` blocks.

Variants 1 and 2 keep parameters in one tree (``blocks/spatial``, ``blocks/temporal``, stacked
on a leading ``layers`` axis by ``nn.scan``), so weights of one variant run as the other;
variants 3 and 4 stack their single block type under ``blocks``. No variant builds a dense
space-time mask: each attention runs on the tokens regrouped per frame or per patch position.

Temporal positions (``temporal_pos``): ``"absolute"`` adds a sin-cos table over frames once (before
the first temporal block; in variants 3 and 4 before the first block); ``"rope"`` rotates q and k
of every temporal attention (the temporal heads in variant 4) by the frame index (no parameters,
relative offsets only); ``"none"``.

Joint image-video training (§3.3; the official code's ``use_image_num``): ``image_frames (b, t)``
marks frames that are independent images (stills appended to each clip). They skip every
temporal block or temporal attention/heads (their tokens pass through unchanged, exactly as
with ``enable_temporal=False``) and get no temporal position; video frames' temporal attention
does not see them, and video frames' positions (absolute or rope) are their index among the
clip's video frames. So image frames train the spatial blocks as images and video frames train
everything, with static shapes (a key mask and a select; frames are never moved). Tubelets
(``patch_size_t > 1``) cannot hold images, so they refuse ``image_frames``.

Conditioning (``conditioning``): ``"adaln"`` modulates every block (see ``adaln`` below);
``"tokens"`` (the paper's "timestep-class information as tokens", §3.2) instead appends the
embedding ``c`` (time + class), normalised like the tokens, as one extra token to every
attention sequence (each spatial group and each temporal group) of every block; its outputs are
discarded straight away, so it acts as an extra key/value each layer. Blocks then use plain
LayerNorms and ungated residuals, and the final layer is a plain LayerNorm and the linear
projection (no adaLN parameters anywhere).

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

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange

from vdm_jax.models import counting
from vdm_jax.models.latte_blocks import (
    ACTIVATIONS,
    ADALN,
    BLOCK_VARIANTS,
    CONDITIONING,
    FREQUENCY_DIM,
    TEMPORAL_POS,
    BlockSpec,
    FactorisedBlock,
    LateFusion,
    LattePair,
    Mlp,
    _layer_norm,
    _scanned,
    frame_ranks,
)
from vdm_jax.nn.dense import dense, logical_init
from vdm_jax.nn.embeddings import sincos_1d, spatial_pos_embed, timestep_embedding
from vdm_jax.nn.remat import REMAT_POLICIES

Dtype = jnp.dtype


def split_learned_sigma(out: jax.Array, in_channels: int) -> tuple[jax.Array, jax.Array]:
    """``(b, t, h, w, 2c)`` -> (noise prediction, variance values), each ``(b, t, h, w, c)``."""
    if out.shape[-1] != 2 * in_channels:
        raise ValueError(f"expected 2 * {in_channels} output channels, got {out.shape[-1]}")
    return out[..., :in_channels], out[..., in_channels:]


class LatteTransformer(nn.Module):
    """Latte on latent videos ``(b, t, h, w, in_channels)`` -> ``(b, t, h, w, out_channels)``.

    Attributes:
      in_channels: latent channels; ``learn_sigma`` doubles the output (noise, variance values).
      hidden_size, num_heads, mlp_ratio: transformer width, heads (must divide it), MLP width.
      num_layers: variants 1/2: spatial/temporal block *pairs* (the paper's "depth" is
        ``2 * num_layers``); variants 3/4: blocks, each with spatial and temporal attention and
        one MLP (see the module docstring for how their sizes compare).
      patch_size, patch_size_t: patch side, and frames per tubelet (1 = per-frame patches).
      variant: 1 (interleaved), 2 (late fusion), 3 (factorised self-attention in a block) or
        4 (spatial and temporal heads in one attention); see the module docstring.
      sample_size: latent side the spatial sin-cos table is laid out for (diffusers'
        ``sample_size``); other sizes are rescaled onto it as diffusers does.
      temporal_pos: ``"absolute"`` (sin-cos over frame tokens, added before the first temporal
        block), ``"rope"`` (rotary frame positions on q/k of temporal attention; even head
        size) or ``"none"``.
      conditioning: ``"adaln"`` (modulated blocks) or ``"tokens"`` (``c`` as an extra token in
        every attention group, plain LayerNorm blocks; ``adaln`` must stay ``"block"``).
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
    conditioning: str = "adaln"
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
                   "temporal_pos": TEMPORAL_POS, "conditioning": CONDITIONING,
                   "remat": tuple(REMAT_POLICIES)}
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field}={getattr(self, field)!r} is not one of {list(allowed)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} does not divide "
                             f"hidden_size={self.hidden_size}")
        if self.variant == 4 and self.num_heads % 2:
            raise ValueError(f"variant 4 splits the heads into spatial and temporal halves: "
                             f"num_heads={self.num_heads} must be even")
        if self.temporal_pos == "rope" and (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"temporal_pos='rope' needs an even head size, got "
                             f"{self.hidden_size // self.num_heads}")
        if self.conditioning == "tokens" and self.adaln != "block":
            raise ValueError(f"conditioning='tokens' has no adaLN: adaln={self.adaln!r} would be "
                             "ignored (leave it 'block')")

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
                         self.adaln, self.dtype, self.conditioning,
                         self.temporal_pos == "rope")

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

    def embed_conditioning(self, t, class_labels):
        """``c (b, d)`` = time (+ class) embedding, and the blocks' ``cond`` input."""
        freqs = timestep_embedding(t * self.time_scale + self.time_shift, FREQUENCY_DIM,
                                   time_scale=1.0)  # [cos, sin]
        c = Mlp(self.hidden_size, "silu", self.dtype, name="time_embed")(freqs)
        if self.num_classes is not None:
            c = c + nn.Embed(
                self.num_classes + 1, self.hidden_size, name="label_embed",
                embedding_init=logical_init(("vocab", "embed"), nn.initializers.normal(0.02)),
            )(class_labels)
        if self.adaln == "block" or self.conditioning == "tokens":
            return c, c
        cond = dense((6, self.hidden_size), ("embed", None, "mlp"), "adaln_single", self.dtype,
                      nn.initializers.normal(0.02), (None, "mlp"))(nn.silu(c))
        return c, cond

    def temporal_positions(self, frames: int, image_frames):
        """Absolute frame positions ``(b or 1, t, d)``: the sin-cos of each video frame's index
        among its clip's video frames, zero on image frames; None unless ``"absolute"``."""
        if self.temporal_pos != "absolute" or frames == 1:
            return None
        table = jnp.asarray(sincos_1d(self.hidden_size, np.arange(frames)), jnp.float32)
        if image_frames is None:
            return table[None]
        return jnp.where(image_frames[..., None], 0.0, table[frame_ranks(image_frames)])

    def blocks(self, x, cond, context, context_mask, enable_temporal, image_frames):
        spec, cross = self.spec(), context is not None
        pos = self.temporal_positions(x.shape[1], image_frames)
        if self.variant in (3, 4):
            if pos is not None and enable_temporal:
                x = x + pos[:, :, None].astype(x.dtype)
            stack = _scanned(FactorisedBlock, self.num_layers, self.remat, (nn.broadcast,) * 4)
            x, _ = stack(spec, cross, self.variant == 4, enable_temporal, name="blocks")(
                x, cond, context, context_mask, image_frames)
            return x
        if self.variant == 2:
            return LateFusion(spec, cross, self.num_layers, self.remat, enable_temporal,
                              name="blocks")(x, cond, context, context_mask, pos, image_frames)
        in_axes = (nn.broadcast,) * 5 + (0,)
        pairs = _scanned(LattePair, self.num_layers, self.remat, in_axes)
        first = (jnp.arange(self.num_layers) == 0).astype(jnp.float32)
        x, _ = pairs(spec, cross, enable_temporal, name="blocks")(
            x, cond, context, context_mask, pos, image_frames, first)
        return x

    def final_layer(self, x, c, height):
        """Modulated LayerNorm (plain with token conditioning) and the per-token linear back to
        ``(b, t, h, w, out)`` pixels."""
        d, p, pt = self.hidden_size, self.patch_size, self.patch_size_t
        if self.conditioning == "tokens":
            mod = jnp.zeros((1, 2, d), jnp.float32)
        elif self.adaln == "single":  # diffusers: the time embedding itself, not SiLU of it
            table = self.param("scale_shift_table", logical_init((None, "embed"),
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

    def check_image_frames(self, x, image_frames) -> None:
        if image_frames.shape != x.shape[:2]:
            raise ValueError(f"image_frames must be (b, t) = {x.shape[:2]}, "
                             f"got {image_frames.shape}")
        if self.patch_size_t != 1:
            raise ValueError(f"image_frames need per-frame patches: an image cannot share a "
                             f"tubelet (patch_size_t={self.patch_size_t}) with other frames")

    @nn.compact
    def __call__(self, x, t, context=None, context_mask=None, class_labels=None,
                 image_frames=None, *, enable_temporal: bool = True):
        """Noise prediction for latents ``x (b, t, h, w, c)`` at times ``t (b,)`` in [0, 1].

        ``context (b, L, caption_channels)`` text embeddings with ``context_mask (b, L)`` bool
        (True = real token); ``class_labels (b,)`` int; ``enable_temporal=False`` skips every
        temporal block (and the temporal positions): frames are then independent images.
        ``image_frames (b, t)`` bool marks frames that are independent images (joint
        image-video training): each is computed as with ``enable_temporal=False``, and the
        other (video) frames as if the image frames were not there.
        """
        self.check()
        t = jnp.asarray(t, jnp.float32)
        t = jnp.broadcast_to(t, x.shape[:1]) if t.ndim == 0 else t
        class_labels = None if class_labels is None else jnp.asarray(class_labels)
        context_mask = None if context_mask is None else jnp.asarray(context_mask, bool)
        self.check_inputs(x, t, context, context_mask, class_labels)
        if image_frames is not None:
            image_frames = jnp.asarray(image_frames, bool)
            self.check_image_frames(x, image_frames)
            image_frames = image_frames if enable_temporal else None
        tokens = self.embed_patches(x)
        c, cond = self.embed_conditioning(t, class_labels)
        if context is not None:
            context = Mlp(self.hidden_size, "gelu_tanh", self.dtype,
                          name="caption_projection")(context)
        tokens = self.blocks(tokens, cond, context, context_mask, enable_temporal, image_frames)
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
    return counting.count_params(model, *args, **kwargs)


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
