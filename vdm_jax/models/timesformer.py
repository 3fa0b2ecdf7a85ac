"""TimeSformer (Bertasius, Wang & Torresani 2021): a ViT video classifier whose blocks take any
self-attention variant of :mod:`vdm_jax.nn.attention` by name.

The paper's comparison (its Table 1, reproduced in the survey §1.2.2) holds the ViT-B/16
backbone fixed (12 blocks, width 768, 12 heads, 8 frames of 224x224) and swaps only the
attention: divided space-time adds one temporal attention per block (its own LayerNorm, q/k/v
and output projections, and a further linear layer, ``temporal_fc``), sparse local-global
likewise one more attention, axial two more. ``count_params`` counts with ``jax.eval_shape``,
so even the 157M-parameter model allocates nothing.

The class token goes through every attention step, prepended to each token group with its
outputs averaged over groups (how the paper's code treats it in per-frame attention; its code
skips it in the temporal step, which changes no parameter).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdm_jax.models import counting
from vdm_jax.nn.attention import ATTENTION_VARIANTS, VideoSelfAttention
from vdm_jax.nn.dense import logical_init
from vdm_jax.nn.norms import layer_norm

Dtype = jnp.dtype


def _init(names, zero=False):
    """LeCun normal (zeros for biases) carrying ``names``: flax's Dense/Conv defaults, boxed."""
    return logical_init(names, nn.initializers.zeros if zero else nn.initializers.lecun_normal())


class Mlp(nn.Module):
    """ViT feed-forward: Dense(ratio x width) -> GELU -> Dense(width)."""

    ratio: int = 4
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        y = nn.Dense(self.ratio * width, dtype=self.dtype, name="fc1",
                     kernel_init=_init(("embed", "mlp")), bias_init=_init(("mlp",), True))(x)
        fc2 = nn.Dense(width, dtype=self.dtype, name="fc2", kernel_init=_init(("mlp", "embed")),
                       bias_init=_init(("embed",), True))
        return fc2(nn.gelu(y, approximate=False))


class TimeSformerBlock(nn.Module):
    """Attention steps of the variant, then the MLP, each pre-norm residual."""

    attention: str
    num_heads: int
    layer: int
    mlp_ratio: int = 4
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x, cls):
        """``x (b, t, h, w, c)``, ``cls (b, 1, c)`` -> same."""
        width = x.shape[-1]
        x, cls = VideoSelfAttention(
            self.attention, self.num_heads, width // self.num_heads, layer=self.layer,
            step_projection=True, qkv_bias=True, dtype=self.dtype, name="attention",
        )(x, cls)
        norm = layer_norm("norm_mlp", self.dtype)
        mlp = Mlp(self.mlp_ratio, dtype=self.dtype, name="mlp")
        return x + mlp(norm(x)), cls + mlp(norm(cls))


class TimeSformer(nn.Module):
    """``(b, t, H, W, 3)`` clips -> ``(b, num_classes)`` logits.

    Attributes:
      attention: one of ``ATTENTION_VARIANTS``.
      num_frames: frames the temporal position table covers (fewer at call time is fine).
      image_size, patch_size: frame side and patch side in pixels.
      width, depth, num_heads, mlp_ratio: the ViT (defaults: ViT-B).
    """

    num_classes: int = 400
    attention: str = "divided"
    num_frames: int = 8
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: int = 4
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, video: jax.Array) -> jax.Array:
        if self.attention not in ATTENTION_VARIANTS:
            raise ValueError(f"unknown attention variant {self.attention!r}; choose one of "
                             f"{list(ATTENTION_VARIANTS)}")
        if video.ndim != 5 or video.shape[2:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"expected clips (b, t, {self.image_size}, {self.image_size}, 3), "
                             f"got {video.shape}")
        b, t = video.shape[:2]
        if t > self.num_frames:
            raise ValueError(f"{t} frames exceed num_frames={self.num_frames}")
        p = self.patch_size
        x = nn.Conv(self.width, (p, p), strides=(p, p), dtype=self.dtype,
                    kernel_init=_init((None, None, "conv_in", "embed")),
                    bias_init=_init(("embed",), True),
                    name="patch_embed")(video.reshape(b * t, *video.shape[2:]))
        x = x.reshape(b, t, *x.shape[1:])
        num_patches = x.shape[2] * x.shape[3]
        init = logical_init((None, "embed"), nn.initializers.normal(0.02))
        pos = self.param("pos_embed", init, (1 + num_patches, self.width))
        normal = nn.initializers.normal(0.02)
        cls = self.param("cls_token", logical_init((None, None, "embed"), normal),
                         (1, 1, self.width))
        x = x + pos[1:].reshape(x.shape[2:])
        cls = jnp.broadcast_to(cls + pos[0], (b, 1, self.width))
        if self.attention != "space":  # per-frame models have no notion of time
            x = x + self.param("time_embed", init, (self.num_frames, self.width))[
                :t, None, None, :]
        x, cls = x.astype(self.dtype or x.dtype), cls.astype(self.dtype or x.dtype)
        for layer in range(self.depth):
            x, cls = TimeSformerBlock(self.attention, self.num_heads, layer, self.mlp_ratio,
                                      dtype=self.dtype, name=f"block_{layer}")(x, cls)
        cls = layer_norm("norm", self.dtype)(cls[:, 0])
        head = nn.Dense(self.num_classes, dtype=self.dtype, name="head",
                        kernel_init=_init(("embed", "vocab")), bias_init=_init(("vocab",), True))
        return head(cls).astype(jnp.float32)


def count_params(model: nn.Module, num_frames: int | None = None) -> int:
    """Parameter count from ``jax.eval_shape`` (no memory allocated)."""
    frames = num_frames or getattr(model, "num_frames", 8)
    size = getattr(model, "image_size", 224)
    return counting.count_params(model, jax.ShapeDtypeStruct((1, frames, size, size, 3),
                                                             jnp.float32))


# Named sizes (ViT backbones of the TimeSformer paper; all 8 frames of 224x224 by default).
VARIANTS = {
    "B/16": dict(width=768, depth=12, num_heads=12, patch_size=16),
    "L/16": dict(width=1024, depth=24, num_heads=16, patch_size=16),
}
