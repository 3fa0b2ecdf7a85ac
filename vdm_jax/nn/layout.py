"""A conditional layout map: where content goes, per frame, given the caption and the time.

A convolutional denoiser fed pure noise has no direct path from the caption and the frame index
to absolute positions, so a caption word whose effect shows only in that interaction (the
direction of motion: averaged over frames, "moving left" and "moving right" clips look alike)
is never picked up. :class:`ConditionalLayout` is that path: an MLP whose random hidden layer
mixes frame, time and caption tokens from the start and whose zero-initialised output is a full
``(b, t, h, w, c)`` map; added to a UNet's prediction it learns the conditional mean that
dominates at high noise. Not part of VDM; the demo config uses it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdm_jax.nn.embeddings import timestep_embedding

Dtype = jnp.dtype

LAYOUT_TARGETS = ("none", "input", "output")


class ConditionalLayout(nn.Module):
    """A spatial map from the conditioning, shaped like a ``(b, t, h, w, c)`` activation.

    An MLP (randomly initialised hidden layer, zero-initialised output) of the concatenated
    (per-frame) time embedding, sin-cos features of the frame index and the caption's token
    embeddings laid side by side (not pooled). Its random hidden units mix frame and caption
    from the start, so it can learn maps that depend on their interaction, e.g. where an object
    is at each frame given the direction word, which has no effect averaged over frames. With
    ``vocab_size`` it reads the caption's token ids through its own word vectors instead of the
    text encoder's output, where a word the rest of the model does not use yet stays faint.
    """

    hidden: int = 256
    vocab_size: int = 0  # > 0: embed ``tokens`` itself (unit-scale word vectors)
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, emb: jax.Array, context: jax.Array | None,
                 context_mask: jax.Array | None, shape: tuple[int, ...],
                 tokens: jax.Array | None = None) -> jax.Array:
        b, t, hgt, wid, c = shape
        if self.vocab_size and tokens is not None:
            context_mask = tokens != 0
            context = nn.Embed(
                self.vocab_size, 64, name="token_embed",
                embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                            ("vocab", "embed")),
            )(tokens)
        if emb.ndim == 2:
            emb = jnp.broadcast_to(emb[:, None], (b, t, emb.shape[-1]))
        frames = timestep_embedding(jnp.arange(t, dtype=jnp.float32), 32, time_scale=1.0)
        parts = [nn.silu(emb), jnp.broadcast_to(frames[None], (b, t, 32)).astype(emb.dtype)]
        if context is not None:
            if context_mask is not None:
                context = context * context_mask[..., None].astype(context.dtype)
            flat = context.reshape(b, -1).astype(emb.dtype)
            parts.append(jnp.broadcast_to(flat[:, None], (b, t, flat.shape[-1])))
        y = nn.Dense(
            self.hidden, dtype=self.dtype, name="hidden",
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                     ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
        )(jnp.concatenate(parts, -1))
        y = nn.Dense(
            hgt * wid * c, dtype=self.dtype, name="out",
            kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp", None)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
        )(nn.silu(y))
        return y.reshape(b, t, hgt, wid, c)
