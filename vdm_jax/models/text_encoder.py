"""A small pre-LN transformer text encoder for caption conditioning.

Token id 0 is PAD (never a key in attention) and id 1 is BOS, always present at position 0, so
even an empty caption has one key. Layers are a ``nn.scan`` so compile time is flat in depth.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdm_jax.nn.attention import Attention
from vdm_jax.nn.norms import layer_norm
from vdm_jax.sharding import shard

Dtype = jnp.dtype
PAD_ID = 0
BOS_ID = 1


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + attn(LN(x))`` then ``x + MLP(LN(x))``; scanned over depth."""

    num_heads: int
    mlp_ratio: int = 4
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array):
        """``x (b, L, d)``, ``mask (b, 1, 1, L)`` bool -> ``(x, None)`` (scan carry)."""
        d = x.shape[-1]
        if d % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} does not divide width {d}")
        y = layer_norm("norm1", self.dtype)(x)
        x = x + Attention(self.num_heads, d // self.num_heads, dtype=self.dtype, name="attn")(
            y, mask=mask
        )
        y = layer_norm("norm2", self.dtype)(x)
        init = nn.initializers.lecun_normal()
        y = nn.Dense(
            self.mlp_ratio * d, dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(init, ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
            name="mlp_in",
        )(y)
        y = nn.Dense(
            d, dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(init, ("mlp", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="mlp_out",
        )(nn.gelu(y))
        x = shard(x + y, "act_batch", "act_seq", "act_embed")
        return x, None


class TextEncoder(nn.Module):
    """Token embedding + learned positions + ``depth`` pre-LN blocks + final LayerNorm.

    Attributes:
      vocab_size: number of token ids (0 = PAD, 1 = BOS).
      width: model width ``d``.
      depth: number of transformer blocks.
      num_heads: attention heads (must divide ``width``).
      max_len: longest token sequence (size of the position table).
    """

    vocab_size: int
    width: int
    depth: int
    num_heads: int
    max_len: int
    mlp_ratio: int = 4
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """``tokens (b, L) int32`` -> ``(b, L, width)``; PAD positions are never attended to."""
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be (b, L) int32, got shape {tokens.shape}")
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"{tokens.shape[1]} tokens exceed max_len={self.max_len}")
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
        # Unit-scale word vectors: with 0.02 (BERT's init) words the UNet does not use yet are
        # drowned by the blocks' outputs and never become distinguishable (seen with the
        # direction words of the shapes captions).
        x = nn.Embed(
            self.vocab_size, self.width,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(1.0), ("vocab", "embed")
            ),
            name="token_embed",
        )(tokens)
        pos = self.param(
            "pos_embed",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
            (self.max_len, self.width),
            jnp.float32,
        )
        x = (x + pos[None, : tokens.shape[1]]).astype(self.dtype or jnp.float32)
        mask = (tokens != PAD_ID)[:, None, None, :]
        blocks = nn.scan(
            TransformerBlock,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=nn.broadcast,
            length=self.depth,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        x, _ = blocks(self.num_heads, self.mlp_ratio, self.dtype, name="blocks")(x, mask)
        return layer_norm("norm_out", self.dtype)(x)
