"""Context-parallel attention: one attention layer computed by the devices of the ``context``
mesh axis, so a long video's tokens never have to sit on one device.

Selected by config (``mesh.context_parallel``) and switched on with
:func:`vdm_jax.sharding.context_parallel` (or ``activate``) around tracing; every attention
layer of the library routes through :func:`vdm_jax.nn.attention.dot_product_attention`, which
calls :func:`attend` here, so models need no changes. Each call names the logical axes of its
merged batch and of its sequence (:class:`TokenAxes`); the active sharding rules say which of
them lies on ``context``:

- ``ulysses`` (DeepSpeed-Ulysses): when the sequence is on ``context``, an all-to-all turns
  sequence-sharded q/k/v into head-sharded ones, every device attends over the whole sequence
  for ``heads / context`` heads, and a second all-to-all shards the output by sequence again.
  Needs ``heads`` divisible by the context size.
- ``ring`` (Ring Attention): when the sequence is on ``context``, each device keeps its query
  block and passes key/value blocks around the ring with ``ppermute``, folding each into an
  online-softmax accumulator; no device ever holds more than two key/value blocks and
  gradients recompute each step's logits.
- ``divided``: for divided space-time attention, every attention runs with its *groups* (the
  merged batch: frames for a spatial step, patch positions for a temporal step) on
  ``context`` and its sequence whole, so each device attends locally; moving from a
  tokens-sharded layout to the frames-sharded one the spatial step needs is one all-to-all
  that the compiler inserts at the boundary, and neither attention gathers.

Sequences (and, for ``divided``, group counts) that do not divide the context size are padded;
padded keys are masked and padded rows dropped. Forward and gradients equal the single-device
kernel; a query row with no allowed key returns zeros under ``ring`` (the single-device kernel
averages all values there; no model here produces such rows).
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from vdm_jax.nn.attention_core import MASKED_LOGIT, local_attention
from vdm_jax.sharding.mesh import current_context_parallel

CONTEXT = "context"


@dataclasses.dataclass(frozen=True)
class TokenAxes:
    """Logical axis names an attention call's merged batch (groups) and sequence are made of,
    e.g. a spatial step of a video: ``batch=("act_batch", "act_frames"), seq=("act_seq",)``.
    Cross-attention to a caption has ``seq=()``: its keys are never on ``context``."""

    batch: tuple[str, ...] = ("act_batch",)
    seq: tuple[str, ...] = ("act_seq",)


def _context_size() -> int:
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or CONTEXT not in mesh.axis_names:
        return 1
    return mesh.shape[CONTEXT]


def _mesh_axes(names: tuple[str, ...], all_names: tuple[str, ...]) -> set[str]:
    """Mesh axes the logical ``names`` resolve to, resolving ``all_names`` jointly (flax's
    first-free-rule-wins order within one array)."""
    spec = nn.logical_to_mesh_axes(all_names)
    axes = set()
    for name, entry in zip(all_names, spec, strict=True):
        if name in names and entry is not None:
            axes.update((entry,) if isinstance(entry, str) else entry)
    return axes


def attend(q, k, v, bias=None, mask=None, implementation=None, axes: TokenAxes | None = None):
    """Attention under the active scheme; the single-device kernel when none applies.

    ``q (b, n, heads, d)``, ``k, v (b, m, heads, d)``; ``bias``/``mask`` 4-D, broadcastable to
    ``(b, heads, n, m)``.
    """
    mode, size = current_context_parallel(), _context_size()
    if mode == "none" or size == 1:
        return local_attention(q, k, v, bias, mask, implementation)
    axes = axes or TokenAxes()
    kernel = functools.partial(local_attention, implementation=implementation)
    if mode == "divided":
        if set(axes.batch) == {"act_batch"}:  # not a step of divided attention
            return kernel(q, k, v, bias, mask)
        return _group_parallel(kernel, size, q, k, v, bias, mask)
    if CONTEXT not in _mesh_axes(axes.seq, axes.batch + axes.seq):
        return kernel(q, k, v, bias, mask)
    if mode == "ulysses":
        return _ulysses(kernel, size, q, k, v, bias, mask)
    return _ring(size, q, k, v, bias, mask)


# ---- padding ------------------------------------------------------------------------------

def _pad(a, axis: int, multiple: int):
    """``a`` zero-padded at the end of ``axis`` to a multiple of ``multiple`` (None stays)."""
    if a is None or a.shape[axis] % multiple == 0:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, -a.shape[axis] % multiple)
    return jnp.pad(a, widths)


def _pad_extra(a, axis: int, length: int, multiple: int):
    """Pads ``a`` (a bias or mask) along ``axis`` when that axis has the full ``length``
    (not a broadcast 1)."""
    return a if a is None or a.shape[axis] != length else _pad(a, axis, multiple)


def _extra_spec(a, length: int, axis: int, entry):
    """PartitionSpec of a 4-D bias/mask: ``entry`` on ``axis`` where it has full ``length``."""
    if a is None:
        return None
    spec = [None] * 4
    if a.shape[axis] == length and length > 1:
        spec[axis] = entry
    return P(*spec)


def _key_validity(mask, m_valid: int, m_padded: int):
    """``mask`` and-ed with "key index < m_valid" when keys were padded."""
    if m_valid == m_padded:
        return mask
    valid = (jnp.arange(m_padded) < m_valid)[None, None, None, :]
    return valid if mask is None else jnp.logical_and(mask, valid)


def _shard_map(body, in_specs, out_specs):
    """``jax.shard_map`` over the current mesh, manual on ``context`` only (the other axes
    stay with the compiler)."""
    return jax.shard_map(body, in_specs=in_specs, out_specs=out_specs,
                         axis_names=frozenset({CONTEXT}))


# ---- divided: groups on context -----------------------------------------------------------

def _group_parallel(kernel, size, q, k, v, bias, mask):
    b = q.shape[0]
    q, k, v = (_pad(a, 0, size) for a in (q, k, v))
    bias, mask = (_pad_extra(a, 0, b, size) for a in (bias, mask))
    spec, padded = P(CONTEXT), q.shape[0]
    out = _shard_map(
        kernel, in_specs=(spec, spec, spec, _extra_spec(bias, padded, 0, CONTEXT),
                          _extra_spec(mask, padded, 0, CONTEXT)), out_specs=spec,
    )(q, k, v, bias, mask)
    return out[:b]


# ---- Ulysses: sequence <-> heads all-to-all -----------------------------------------------

def _ulysses(kernel, size, q, k, v, bias, mask):
    n, m, heads = q.shape[1], k.shape[1], q.shape[2]
    if heads % size:
        raise ValueError(f"ulysses context parallelism splits heads over the context axis: "
                         f"{heads} heads do not divide over {size} devices (use ring)")
    q = _pad(q, 1, size)
    k, v = _pad(k, 1, size), _pad(v, 1, size)
    bias, mask = _pad_extra(bias, 2, n, size), _pad_extra(mask, 2, n, size)
    bias, mask = _pad_extra(bias, 3, m, size), _pad_extra(mask, 3, m, size)

    def body(q, k, v, bias, mask):
        to_heads = functools.partial(lax.all_to_all, axis_name=CONTEXT, split_axis=2,
                                     concat_axis=1, tiled=True)
        q, k, v = to_heads(q), to_heads(k), to_heads(v)
        start = lax.axis_index(CONTEXT) * (heads // size)
        own = lambda a: a if a is None or a.shape[1] == 1 else lax.dynamic_slice_in_dim(  # noqa: E731
            a, start, heads // size, axis=1)
        y = kernel(q, k, v, own(bias), _key_validity(own(mask), m, k.shape[1]))
        return lax.all_to_all(y, CONTEXT, split_axis=1, concat_axis=2, tiled=True)

    seq = P(None, CONTEXT)
    out = _shard_map(body, in_specs=(seq, seq, seq, None if bias is None else P(),
                                     None if mask is None else P()), out_specs=seq,
                     )(q, k, v, bias, mask)
    return out[:, :n]


# ---- Ring: key/value blocks around the context axis ----------------------------------------

def _ring_step(carry, q, block, bias, mask, m_valid: int):
    """Folds the key/value ``block`` (global block index ``j``) into the online-softmax
    accumulator ``(out, row_sum, row_max)`` of the local queries (heads-first float32)."""
    out, row_sum, row_max = carry
    k, v, j = block
    width = k.shape[1]
    logits = jnp.einsum("bhnd,bmhd->bhnm", q, k.astype(jnp.float32))
    allowed = (j * width + jnp.arange(width) < m_valid)[None, None, None, :]
    if bias is not None:
        logits = logits + _key_block(bias, j, width).astype(jnp.float32)
    if mask is not None:
        allowed = jnp.logical_and(allowed, _key_block(mask, j, width))
    new_max = jnp.maximum(row_max, jnp.where(allowed, logits, MASKED_LOGIT).max(axis=-1))
    probs = jnp.where(allowed, jnp.exp(logits - new_max[..., None]), 0.0)
    rescale = jnp.exp(row_max - new_max)
    out = out * rescale[..., None] + jnp.einsum("bhnm,bmhd->bhnd", probs,
                                                v.astype(jnp.float32))
    return out, row_sum * rescale + probs.sum(axis=-1), new_max


def _key_block(a, j, width: int):
    """Columns ``[j * width, (j + 1) * width)`` of a bias/mask (broadcast columns stay)."""
    return a if a.shape[3] == 1 else lax.dynamic_slice_in_dim(a, j * width, width, axis=3)


def _ring(size, q, k, v, bias, mask):
    n, m = q.shape[1], k.shape[1]
    q, k, v = _pad(q, 1, size), _pad(k, 1, size), _pad(v, 1, size)
    bias, mask = _pad_extra(bias, 2, n, size), _pad_extra(mask, 2, n, size)
    bias, mask = _pad_extra(bias, 3, m, size), _pad_extra(mask, 3, m, size)
    perm = [(i, (i + 1) % size) for i in range(size)]

    def body(q, k, v, bias, mask):
        index = lax.axis_index(CONTEXT)
        qh = jnp.einsum("bnhd->bhnd", q.astype(jnp.float32)) * (q.shape[-1] ** -0.5)
        rows = qh.shape[:3]
        carry = (jnp.zeros(qh.shape, jnp.float32), jnp.zeros(rows, jnp.float32),
                 jnp.full(rows, MASKED_LOGIT, jnp.float32))
        step = jax.checkpoint(functools.partial(_ring_step, m_valid=m))
        for s in range(size):
            carry = step(carry, qh, (k, v, (index - s) % size), bias, mask)
            if s < size - 1:
                k, v = lax.ppermute((k, v), CONTEXT, perm)
        out, row_sum, _ = carry
        out = out / jnp.where(row_sum > 0, row_sum, 1.0)[..., None]
        return jnp.einsum("bhnd->bnhd", out).astype(q.dtype)

    seq = P(None, CONTEXT)
    out = _shard_map(body, in_specs=(seq, seq, seq, _extra_spec(bias, q.shape[1], 2, CONTEXT),
                                     _extra_spec(mask, q.shape[1], 2, CONTEXT)),
                     out_specs=seq)(q, k, v, bias, mask)
    return out[:, :n]

