"""The single-device attention kernel every attention layer ends in (and that the
context-parallel schemes of :mod:`vdm_jax.nn.attention_cp` run on each device's block)."""

import jax
import jax.numpy as jnp
from einops import rearrange

# Same large finite negative as jax.nn.dot_product_attention: no NaN on fully masked rows.
MASKED_LOGIT = -0.7 * float(jnp.finfo(jnp.float32).max)


def expand_to_4d(a):
    """A bias or mask of any rank <= 4 as ``(b or 1, heads or 1, n or 1, m or 1)``."""
    return None if a is None else a.reshape((1,) * (4 - a.ndim) + a.shape)


def _einsum_attention(q, k, v, bias, mask):
    """Heads-first einsum attention; faster than the generic path on CPU (measured ~2x fwd)."""
    q, k, v = (rearrange(a, "b n h d -> b h n d") for a in (q, k, v))
    logits = jnp.einsum("bhnd,bhmd->bhnm", q, k).astype(jnp.float32)
    logits = logits * (q.shape[-1] ** -0.5)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, MASKED_LOGIT)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return rearrange(jnp.einsum("bhnm,bhmd->bhnd", probs, v), "b h n d -> b n h d")


# Long sequences run in blocks of query rows whose float32 scores stay near SCORE_BLOCK_BYTES
# (MIN_BLOCK_ROWS rows at least), each under jax.checkpoint: a training step keeps no attention
# probabilities (each block's are recomputed in the backward pass, as torch's CPU attention
# keeps only softmax statistics), so memory no longer grows with the square of the sequence.
# Rows are independent, so the result is the same. Speed on CPU is about even: the ModelScope
# UNet's training step (1024-token attention) 4005 -> 3810 ms in bench/vs_diffusers.py, and
# smaller blocks (128 rows) or blocking Latte's 256-token attention made training slower.
SCORE_BLOCK_BYTES = 4 << 20
MIN_BLOCK_ROWS = 256


def _row_blocked_attention(q, k, v, bias, mask):
    """:func:`_einsum_attention` a block of query rows at a time (see ``SCORE_BLOCK_BYTES``)."""
    b, n, h, _ = q.shape
    rows = max(MIN_BLOCK_ROWS, SCORE_BLOCK_BYTES // (4 * b * h * k.shape[1]))
    if rows >= n:
        return _einsum_attention(q, k, v, bias, mask)

    def rows_of(a, block):  # a bias or mask broadcast over rows applies to every block
        return a if a is None or a.shape[2] == 1 else a[:, :, block]

    kernel = jax.checkpoint(_einsum_attention)
    blocks = [slice(start, start + rows) for start in range(0, n, rows)]
    return jnp.concatenate([kernel(q[:, r], k, v, rows_of(bias, r), rows_of(mask, r))
                            for r in blocks], axis=1)


def local_attention(q, k, v, bias=None, mask=None, implementation=None):
    """``softmax(q k^T / sqrt(d) + bias) v`` on one device; shapes as
    :func:`vdm_jax.nn.attention.dot_product_attention`, ``bias``/``mask`` already 4-D."""
    if implementation is None and jax.default_backend() == "cpu":
        implementation = "einsum"
    if implementation == "einsum":
        return _row_blocked_attention(q, k, v, bias, mask)
    if bias is not None:
        bias = bias.astype(q.dtype)
    return jax.nn.dot_product_attention(
        q, k, v, bias=bias, mask=mask, implementation=implementation
    )
