"""The single-device attention kernel every attention layer ends in (and that the
context-parallel schemes of :mod:`vdm_jax.nn.attention_cp` run on each device's block)."""

import jax
import jax.numpy as jnp
from einops import rearrange
from jax.ad_checkpoint import checkpoint_name

# Names of what the backward pass reads besides q, k, v: the remat policies of
# :mod:`vdm_jax.nn.remat` keep them, or a rematerialised block would run the whole attention
# forward again only to rebuild them (and the backward pass then recomputes the scores anyway).
RESIDUAL_NAMES = ("attention_out", "attention_stats")

# Same large finite negative as jax.nn.dot_product_attention: no NaN on fully masked rows.
MASKED_LOGIT = -0.7 * float(jnp.finfo(jnp.float32).max)


def expand_to_4d(a):
    """A bias or mask of any rank <= 4 as ``(b or 1, heads or 1, n or 1, m or 1)``."""
    return None if a is None else a.reshape((1,) * (4 - a.ndim) + a.shape)


# Attention runs a block of query rows at a time, each block's float32 scores near
# SCORE_BLOCK_BYTES (MIN_BLOCK_ROWS rows at least), under a hand-written backward pass: the
# forward keeps only each row's softmax statistics (maximum and sum), and the backward
# recomputes a block's probabilities from them (as torch's CPU attention does). Autodiff of
# the softmax makes several more passes over the scores, which on CPU cost more than the
# attention's matmuls: the ModelScope UNet's training step 4057 -> 3071 ms, Latte's
# 6183 -> 5747 ms, in an A/B of jax alone on bench/vs_diffusers.py's models.
SCORE_BLOCK_BYTES = 4 << 20
MIN_BLOCK_ROWS = 256


def _row_blocks(b: int, h: int, n: int, m: int) -> list[slice]:
    rows = max(MIN_BLOCK_ROWS, SCORE_BLOCK_BYTES // (4 * b * h * m))
    return [slice(start, start + rows) for start in range(0, n, rows)]


def _rows_of(a, block: slice):
    """A bias or mask's rows of ``block`` (one broadcast row applies to every block)."""
    return a if a is None or a.shape[2] == 1 else a[:, :, block]


def _logits(q, k, bias, mask):
    """Scaled float32 scores ``(b, h, n, m)`` of heads-first ``q``, ``k``."""
    logits = jnp.einsum("bhnd,bhmd->bhnm", q, k).astype(jnp.float32) * (q.shape[-1] ** -0.5)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, MASKED_LOGIT)
    return logits


def _probabilities(logits, peak, total):
    return jnp.exp(logits - peak) / total


def _attention_fwd(q, k, v, bias, mask):
    """Heads-first attention and each row's softmax statistics, a block of rows at a time.
    (A log-sum-exp alone would lose the sum of a row whose keys are all masked.)"""
    outs, peaks, totals = [], [], []
    for rows in _row_blocks(q.shape[0], q.shape[1], q.shape[2], k.shape[2]):
        logits = _logits(q[:, :, rows], k, _rows_of(bias, rows), _rows_of(mask, rows))
        peaks.append(jnp.max(logits, axis=-1, keepdims=True))
        totals.append(jnp.sum(jnp.exp(logits - peaks[-1]), axis=-1, keepdims=True))
        probs = _probabilities(logits, peaks[-1], totals[-1])
        outs.append(jnp.einsum("bhnm,bhmd->bhnd", probs.astype(v.dtype), v))
    out = checkpoint_name(jnp.concatenate(outs, axis=2), RESIDUAL_NAMES[0])
    stats = tuple(checkpoint_name(jnp.concatenate(s, axis=2), RESIDUAL_NAMES[1])
                  for s in (peaks, totals))
    return out, (q, k, v, bias, mask, out, stats)


def _sum_to(a, shape):
    """``a`` summed over the axes where ``shape`` broadcasts (size 1)."""
    axes = tuple(i for i, (s, t) in enumerate(zip(shape, a.shape, strict=True)) if s == 1 < t)
    return jnp.sum(a, axis=axes, keepdims=True)


_F32_SUM = {"preferred_element_type": jnp.float32}  # dk, dv add up over blocks in float32


def _keys_first(scores):
    """``(b, h, n, m) -> (b, h, m, n)``, materialised. XLA's CPU runtime runs a batched matmul
    that contracts its left operand's rows (``p^T dO`` for dv, ``dS^T q`` for dk) one batch
    entry at a time, ~10x slower than the same product on row-major operands; the barrier
    keeps XLA from folding the transpose back into the matmul. UNet3D training step, fault-free
    memory, separate processes: 3.4-3.8 s -> 2.9-3.0 s."""
    return jax.lax.optimization_barrier(jnp.swapaxes(scores, -1, -2))


def _attention_bwd(residuals, d_out):
    q, k, v, bias, mask, out, (peak, total) = residuals
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), -1, keepdims=True)
    dq, d_bias, dk, dv = [], [], 0.0, 0.0
    for rows in _row_blocks(q.shape[0], q.shape[1], q.shape[2], k.shape[2]):
        row_mask, d_rows = _rows_of(mask, rows), d_out[:, :, rows]
        logits = _logits(q[:, :, rows], k, _rows_of(bias, rows), row_mask)
        probs = _probabilities(logits, peak[:, :, rows], total[:, :, rows])
        dv = dv + jnp.einsum("bhmn,bhnd->bhmd", _keys_first(probs.astype(v.dtype)), d_rows,
                             **_F32_SUM)
        d_probs = jnp.einsum("bhnd,bhmd->bhnm", d_rows, v).astype(jnp.float32)
        d_logits = probs * (d_probs - delta[:, :, rows])
        if row_mask is not None:
            d_logits = jnp.where(row_mask, d_logits, 0.0)
        if bias is not None:
            d_bias.append(_sum_to(d_logits, _rows_of(bias, rows).shape))
        d_logits = d_logits.astype(q.dtype)
        dq.append(jnp.einsum("bhnm,bhmd->bhnd", d_logits, k))
        dk = dk + jnp.einsum("bhmn,bhnd->bhmd", _keys_first(d_logits), q[:, :, rows],
                             **_F32_SUM)
    scale = q.shape[-1] ** -0.5
    dq = jnp.concatenate(dq, axis=2) * scale
    if bias is not None:
        d_bias = sum(d_bias) if bias.shape[2] == 1 else jnp.concatenate(d_bias, axis=2)
        d_bias = d_bias.astype(bias.dtype)
    return (dq.astype(q.dtype), (dk * scale).astype(k.dtype), dv.astype(v.dtype),
            d_bias if bias is not None else None, None)


@jax.custom_vjp
def _heads_first_attention(q, k, v, bias, mask):
    return _attention_fwd(q, k, v, bias, mask)[0]


_heads_first_attention.defvjp(_attention_fwd, _attention_bwd)


def _varying_axes(a) -> frozenset:
    """The manual mesh axes (inside ``shard_map``) over which ``a`` differs between devices."""
    manual = getattr(jax.typeof(a), "manual_axis_type", None)
    return manual.varying if manual is not None else frozenset()


def _vary_alike(*arrays):
    """``arrays`` (None passes) marked as varying over the union of their manual axes. Inside
    ``shard_map`` a custom VJP's gradients must vary as its inputs do; marking a replicated
    input here lets autodiff sum its gradient over the devices, outside the custom VJP."""
    axes = frozenset().union(*(_varying_axes(a) for a in arrays if a is not None))
    return tuple(a if a is None or _varying_axes(a) == axes
                 else jax.lax.pcast(a, tuple(sorted(axes - _varying_axes(a))), to="varying")
                 for a in arrays)


def _row_blocked_attention(q, k, v, bias, mask):
    """Heads-first einsum attention (faster than the generic path on CPU, measured ~2x
    forward) with the blocked forward and backward passes above."""
    q, k, v = (rearrange(a, "b n h d -> b h n d") for a in (q, k, v))
    q, k, v, bias = _vary_alike(q, k, v, bias)
    out = _heads_first_attention(q, k, v, bias, mask)
    return rearrange(out, "b h n d -> b n h d")


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
