"""Attention core and the divided space-time attention blocks of a video UNet.

Video blocks take ``(b, t, h, w, c)`` and are pre-norm residual blocks ``x + attn(norm(x))``:

- :class:`SpatialAttention`: tokens are the ``h * w`` positions of one frame.
- :class:`CrossAttention`: every position of every frame attends to a text context.
- :class:`TemporalAttention`: tokens are the ``t`` frames at one spatial position, with a learned
  relative position bias over frame distance and an image-frame mask for joint image-video
  training. Its output projection is zero-initialised, so the block is the identity at init.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange, repeat

from vdm_jax.nn.attention_core import expand_to_4d
from vdm_jax.nn.attention_cp import TokenAxes, attend
from vdm_jax.nn.dense import DenseND
from vdm_jax.nn.norms import GroupNorm, layer_norm
from vdm_jax.sharding import shard

Dtype = jnp.dtype


def dot_product_attention(q, k, v, *, bias=None, mask=None, implementation=None,
                          axes: TokenAxes | None = None):
    """Multi-head attention ``softmax(q k^T / sqrt(d) + bias) v``.

    Args:
      q: ``(b, n, heads, d)``; k, v: ``(b, m, heads, d)``.
      bias: additive logits bias broadcastable to ``(b, heads, n, m)`` (any rank <= 4).
      mask: bool, True = may attend, broadcastable to ``(b, heads, n, m)``.
      implementation: ``"xla"``/``"cudnn"`` call ``jax.nn.dot_product_attention`` with it;
        ``"einsum"`` uses a heads-first einsum path. Default: ``jax.nn.dot_product_attention``
        (which picks a fused kernel on GPU), except on a CPU backend where ``"einsum"`` is faster.
      axes: logical names of the merged batch and the sequence (default ``act_batch`` /
        ``act_seq``), which decide the context-parallel scheme when one is active (see
        :mod:`vdm_jax.nn.attention_cp`).

    Returns:
      ``(b, n, heads, d)``.
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"q, k, v must be (b, n, heads, d); got {q.shape}, {k.shape}, {v.shape}")
    return attend(q, k, v, expand_to_4d(bias), expand_to_4d(mask), implementation, axes)


def _dense_init(names, zero=False):
    init = nn.initializers.zeros if zero else nn.initializers.lecun_normal()
    return nn.with_logical_partitioning(init, names)


class Attention(nn.Module):
    """Self- or cross-attention on token sequences with q/k/v/out projections.

    Attributes:
      num_heads, head_dim: ``heads`` and ``d`` of the projections.
      out_features: output size (default: the query's channels).
      zero_init_out: zero output projection (kernel and bias), so the layer outputs 0 at init.
      qkv_bias: biases on the q/k/v projections (ViT has them; diffusion UNets do not).
    """

    num_heads: int
    head_dim: int
    out_features: int | None = None
    zero_init_out: bool = False
    qkv_bias: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x, context=None, *, bias=None, mask=None, context_mask=None,
                 rotary=None, axes: TokenAxes | None = None):
        """Attends ``x (b, n, c)`` to ``context (b, m, d)`` (or to itself).

        ``context_mask (b, m)`` bool marks real keys; ``bias``/``mask`` as in
        :func:`dot_product_attention`; ``rotary``, a function of ``(b, n, heads, d)``, is
        applied to q and k after their projections (e.g. rotary position embeddings; no
        parameters); ``axes`` names the logical axes of the merged batch and of the sequence
        (for context parallelism; cross-attention's keys are never split). Returns
        ``(b, n, out_features or c)``.
        """
        kv_in = x if context is None else context
        shape = (self.num_heads, self.head_dim)
        proj = lambda name: DenseND(  # noqa: E731
            shape, ("embed", "heads", "kv"), dtype=self.dtype, use_bias=self.qkv_bias, name=name)
        q, k, v = proj("to_q")(x), proj("to_k")(kv_in), proj("to_v")(kv_in)
        if rotary is not None:
            q, k = rotary(q), rotary(k)
        if context_mask is not None:
            keys = context_mask[:, None, None, :]
            mask = keys if mask is None else jnp.logical_and(mask, keys)
        if context is not None:
            axes = TokenAxes(axes.batch if axes else ("act_batch",), seq=())
        y = dot_product_attention(q, k, v, bias=bias, mask=mask, axes=axes)
        return DenseND(
            (self.out_features or x.shape[-1],), ("heads", "kv", "embed"), dtype=self.dtype,
            init=nn.initializers.zeros if self.zero_init_out else None, name="to_out",
        )(y)


class SpatialAttention(nn.Module):
    """Per-frame self-attention block over ``h * w`` tokens: ``x + attn(GroupNorm(x))``.

    The norm is per frame, so frames never interact here.
    """

    num_heads: int
    head_dim: int
    num_groups: int = 32
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(b, t, h, w, c) -> (b, t, h, w, c)``."""
        b, t, h, w, c = x.shape
        y = GroupNorm(self.num_groups, per_frame=True, dtype=self.dtype, name="norm")(x)
        y = rearrange(y, "b t h w c -> (b t) (h w) c")
        y = shard(y, "act_batch", "act_seq", "act_embed")
        y = Attention(self.num_heads, self.head_dim, dtype=self.dtype, name="attn")(
            y, axes=STEP_TOKEN_AXES["space"])
        return x + rearrange(y, "(b t) (h w) c -> b t h w c", b=b, h=h)


class CrossAttention(nn.Module):
    """Cross-attention block from every video position to a context: ``x + attn(LN(x), ctx)``."""

    num_heads: int
    head_dim: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x, context, context_mask=None):
        """``x (b, t, h, w, c)``, ``context (b, L, d)``, ``context_mask (b, L)`` bool."""
        b, t, h, w, c = x.shape
        y = layer_norm("norm", self.dtype)(x)
        # Same context for all frames of an example: attend with t*h*w queries in one call.
        y = rearrange(y, "b t h w c -> b (t h w) c")
        y = Attention(self.num_heads, self.head_dim, dtype=self.dtype, name="attn")(
            y, context, context_mask=context_mask
        )
        return x + rearrange(y, "b (t h w) c -> b t h w c", t=t, h=h)


def relative_position_buckets(q_len: int, k_len: int, num_buckets: int, max_distance: int):
    """T5-style bidirectional log buckets of ``key_pos - query_pos``; ``(q_len, k_len)`` int32.

    Half the buckets per direction; small distances get exact buckets, larger ones share
    log-spaced buckets up to ``max_distance`` (clipped beyond), so any length maps into the
    table. Computed with numpy: lengths are static.
    """
    rel = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
    half = num_buckets // 2
    out = (rel > 0).astype(np.int32) * half
    n = np.abs(rel)
    max_exact = max(half // 2, 1)
    large = max_exact + (
        np.log(np.maximum(n, 1) / max_exact)
        / np.log(max(max_distance / max_exact, 1 + 1e-6))
        * (half - max_exact)
    ).astype(np.int32)
    large = np.minimum(large, half - 1)
    return (out + np.where(n < max_exact, n, large)).astype(np.int32)


class RelativePositionBias(nn.Module):
    """Learned per-head bias over bucketed frame distance; works for any number of frames."""

    num_heads: int
    num_buckets: int = 32
    max_distance: int = 64

    @nn.compact
    def __call__(self, t: int) -> jax.Array:
        """Returns the ``(heads, t, t)`` float32 bias for ``t`` frames."""
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "heads")),
            (self.num_buckets, self.num_heads),
            jnp.float32,
        )
        buckets = relative_position_buckets(t, t, self.num_buckets, self.max_distance)
        return rearrange(table[buckets], "i j h -> h i j")


def image_frame_mask(image_frames: jax.Array) -> jax.Array:
    """Temporal attention mask ``(b, t, t)``, True = query frame i may attend key frame j.

    ``image_frames (b, t)`` bool marks independent images appended as frames: an image frame
    attends only to itself and video frames attend only to video frames.
    """
    video = jnp.logical_not(image_frames)
    t = image_frames.shape[1]
    both_video = video[:, :, None] & video[:, None, :]
    return both_video | jnp.eye(t, dtype=bool)[None]


class TemporalAttention(nn.Module):
    """Attention over frames at each spatial position: ``x + attn(LN(x))``, identity at init.

    Attributes:
      num_heads, head_dim: attention shape.
      num_buckets, max_distance: relative position bias buckets (T5-style).
    """

    num_heads: int
    head_dim: int
    num_buckets: int = 32
    max_distance: int = 64
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, image_frames: jax.Array | None = None) -> jax.Array:
        """``x (b, t, h, w, c)``; ``image_frames (b, t)`` bool or None -> ``(b, t, h, w, c)``."""
        b, t, h, w, c = x.shape
        # LayerNorm is per token: no statistics cross frames, so image frames stay independent.
        y = layer_norm("norm", self.dtype)(x)
        y = rearrange(y, "b t h w c -> (b h w) t c")
        bias = RelativePositionBias(
            self.num_heads, self.num_buckets, self.max_distance, name="rel_pos"
        )(t)
        mask = None
        if image_frames is not None:
            if image_frames.shape != (b, t):
                raise ValueError(
                    f"image_frames must be (b, t) = {(b, t)}, got {image_frames.shape}"
                )
            mask = repeat(image_frame_mask(image_frames), "b i j -> (b n) 1 i j", n=h * w)
        y = Attention(
            self.num_heads, self.head_dim, zero_init_out=True, dtype=self.dtype, name="attn"
        )(y, bias=bias, mask=mask, axes=STEP_TOKEN_AXES["time"])
        return x + rearrange(y, "(b h w) t c -> b t h w c", b=b, h=h)


# ---------------------------------------------------------------------------------------------
# Self-attention variants over a whole clip (TimeSformer, Bertasius et al. 2021; GODIVA, Wu et
# al. 2021). A variant is a sequence of attention *steps*; each step splits the ``t * h * w``
# tokens into independent groups along some axes and attends within each group, so the dense
# ``(N, N)`` mask a step stands for is never built: the grouping (plus a causal mask inside a
# group) is what ``jax.nn.dot_product_attention`` sees.
# ---------------------------------------------------------------------------------------------

ATTENTION_VARIANTS = ("space", "joint", "divided", "sparse_local_global", "axial", "godiva")
STEP_AXES = ("space", "time", "joint", "width", "height", "local", "global")

# Token groupings per step axis, as einops patterns. ``local``: the clip split into 2x2 spatial
# windows of all frames (TimeSformer's F x H/2 x W/2 neighbourhoods); ``global``: tokens two
# apart in t, y and x (its stride-2 sparse pattern), i.e. those of the same (t, y, x) parity.
_GROUPINGS = {
    "space": "b t h w c -> (b t) (h w) c",
    "time": "b t h w c -> (b h w) t c",
    "joint": "b t h w c -> b (t h w) c",
    "width": "b t h w c -> (b t h) w c",
    "height": "b t h w c -> (b t w) h c",
    "local": "b t (nh h) (nw w) c -> (b nh nw) (t h w) c",
    "global": "b (t st) (h sh) (w sw) c -> (b st sh sw) (t h w) c",
}

# Logical names of each step's groups and sequence (for context parallelism): spatial tokens
# are ``act_seq`` as in the token layouts the models constrain, frames ``act_frames``.
STEP_TOKEN_AXES = {
    "space": TokenAxes(("act_batch", "act_frames"), ("act_seq",)),
    "time": TokenAxes(("act_batch", "act_seq"), ("act_frames",)),
    "joint": TokenAxes(("act_batch",), ("act_frames", "act_seq")),
    "width": TokenAxes(("act_batch", "act_frames", "act_height"), ("act_width",)),
    "height": TokenAxes(("act_batch", "act_frames", "act_width"), ("act_height",)),
    "local": TokenAxes(("act_batch", "act_height", "act_width"), ("act_frames", "act_seq")),
    "global": TokenAxes(("act_batch", "act_height", "act_width"), ("act_frames", "act_seq")),
}


@dataclasses.dataclass(frozen=True)
class AttentionStep:
    """One attention over token groups: ``axis`` in ``STEP_AXES``; ``causal`` masks later
    tokens of the group's own order (time, x or y)."""

    axis: str
    causal: bool = False


def variant_steps(variant: str, layer: int = 0) -> tuple[AttentionStep, ...]:
    """The attention steps of ``variant`` in block ``layer`` (TimeSformer order: time first).

    - ``space``: per-frame attention only; ``joint``: all tokens of the clip;
    - ``divided``: time, then space; ``axial``: time, width, height;
    - ``sparse_local_global``: local windows, then the stride-2 global pattern;
    - ``godiva``: one causal axis per block, cycling time, row (width), column (height).
    """
    s = AttentionStep
    steps = {
        "space": (s("space"),),
        "joint": (s("joint"),),
        "divided": (s("time"), s("space")),
        "sparse_local_global": (s("local"), s("global")),
        "axial": (s("time"), s("width"), s("height")),
        "godiva": ((s("time", True), s("width", True), s("height", True))[layer % 3],),
    }
    if variant not in steps:
        raise ValueError(f"unknown attention variant {variant!r}; choose one of "
                         f"{list(ATTENTION_VARIANTS)}")
    return steps[variant]


def _axis_sizes(axis: str, b: int, t: int, h: int, w: int) -> dict[str, int]:
    """Sizes of the names in ``_GROUPINGS[axis]``; raises if a split by 2 does not divide."""
    halved = {"local": {"height": h, "width": w},
              "global": {"frames": t, "height": h, "width": w}}.get(axis, {})
    odd = [f"{name} {n}" for name, n in halved.items() if n % 2]
    if odd:
        raise ValueError(f"{axis} attention splits by 2; {', '.join(odd)} not even")
    if axis == "local":
        return dict(b=b, t=t, nh=2, nw=2, h=h // 2, w=w // 2)
    if axis == "global":
        return dict(b=b, st=2, sh=2, sw=2, t=t // 2, h=h // 2, w=w // 2)
    return dict(b=b, t=t, h=h, w=w)


def group_tokens(x: jax.Array, step: AttentionStep) -> jax.Array:
    """``(b, t, h, w, c) -> (groups, n, c)``: the token sequences ``step`` attends within."""
    sizes = _axis_sizes(step.axis, *x.shape[:4])
    return rearrange(x, _GROUPINGS[step.axis], **sizes)


def ungroup_tokens(y: jax.Array, step: AttentionStep, shape: tuple[int, ...]) -> jax.Array:
    """Inverse of :func:`group_tokens` back to a video ``(b, t, h, w, c')`` (``shape[:4]``)."""
    video, grouped = _GROUPINGS[step.axis].split(" -> ")
    return rearrange(y, f"{grouped} -> {video}", **_axis_sizes(step.axis, *shape[:4]))


def _check_causal(step: AttentionStep) -> None:
    if step.causal and step.axis not in ("time", "width", "height"):
        raise ValueError(f"causal attention is defined along time, width or height, "
                         f"not {step.axis!r}")


def step_mask(step: AttentionStep, t: int, h: int, w: int) -> np.ndarray:
    """The dense ``(N, N)`` bool mask over the raster ``(t, h, w)`` token order that ``step``
    is equivalent to (True = may attend). For tests and documentation: layers never build it."""
    ti, yi, xi = (a.reshape(-1) for a in np.meshgrid(np.arange(t), np.arange(h), np.arange(w),
                                                        indexing="ij"))
    same = lambda *a: np.all([a_[:, None] == a_[None, :] for a_ in a], axis=0)  # noqa: E731
    _axis_sizes(step.axis, 1, t, h, w)
    _check_causal(step)
    masks = {
        "space": lambda: same(ti),
        "time": lambda: same(yi, xi),
        "joint": lambda: np.ones((ti.size, ti.size), bool),
        "width": lambda: same(ti, yi),
        "height": lambda: same(ti, xi),
        "local": lambda: same(yi // (h // 2), xi // (w // 2)),
        "global": lambda: same(ti % 2, yi % 2, xi % 2),
    }
    mask = masks[step.axis]()
    if step.causal:
        order = {"time": ti, "width": xi, "height": yi}[step.axis]
        mask &= order[None, :] <= order[:, None]
    return mask


def step_attention(x: jax.Array, step: AttentionStep, attention: nn.Module,
                   extra: jax.Array | None = None):
    """Applies ``attention`` (an :class:`Attention`) within the token groups of ``step``.

    ``extra (b, 1, c)``, e.g. a classification token, is prepended to every group of its clip
    and its outputs are averaged over the groups (TimeSformer's treatment of the class token in
    per-frame attention). Returns the video, or ``(video, extra)`` when ``extra`` is given.
    """
    b = x.shape[0]
    tokens = group_tokens(x, step)
    groups, n = tokens.shape[:2]
    if extra is not None:
        tokens = jnp.concatenate([jnp.repeat(extra, groups // b, axis=0), tokens], axis=1)
    tokens = shard(tokens, "act_batch", "act_seq", "act_embed")
    _check_causal(step)
    mask = np.tril(np.ones((tokens.shape[1],) * 2, bool)) if step.causal else None
    y = attention(tokens, mask=mask, axes=STEP_TOKEN_AXES[step.axis])
    video = ungroup_tokens(y[:, -n:], step, x.shape[:4] + (y.shape[-1],))
    if extra is None:
        return video
    return video, y[:, :1].reshape(b, groups // b, 1, -1).mean(axis=1)


class VideoSelfAttention(nn.Module):
    """Self-attention over a clip by variant name: for each step ``x + attn(LN(x))``.

    Attributes:
      variant: one of ``ATTENTION_VARIANTS``.
      num_heads, head_dim: attention shape (every step has its own projections).
      layer: block index (picks the axis of ``godiva``, which cycles over blocks).
      step_projection: TimeSformer's extra linear layer after every step but the last (its
        ``temporal_fc``), which its parameter counts include.
      zero_init_out: zero output projections, so the block is the identity at init (for
        inserting into a pretrained image model).
      qkv_bias: biases on the q/k/v projections.
    """

    variant: str
    num_heads: int
    head_dim: int
    layer: int = 0
    step_projection: bool = False
    zero_init_out: bool = False
    qkv_bias: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, extra: jax.Array | None = None):
        """``(b, t, h, w, c) -> (b, t, h, w, c)``; with ``extra (b, 1, c)`` (a class token, see
        :func:`step_attention`) returns ``(video, extra)``."""
        steps = variant_steps(self.variant, self.layer)
        for i, step in enumerate(steps):
            norm = layer_norm(f"norm_{step.axis}", self.dtype)
            attention = Attention(self.num_heads, self.head_dim, zero_init_out=self.zero_init_out,
                                  qkv_bias=self.qkv_bias, dtype=self.dtype,
                                  name=f"attn_{step.axis}")
            out = step_attention(norm(x), step, attention,
                                 None if extra is None else norm(extra))
            y, y_extra = (out, None) if extra is None else out
            if self.step_projection and i < len(steps) - 1:
                fc = nn.Dense(x.shape[-1], dtype=self.dtype, name=f"fc_{step.axis}",
                              kernel_init=_dense_init(("embed", "mlp")),
                              bias_init=_dense_init(("mlp",), True))
                y = fc(y)
                y_extra = None if extra is None else fc(y_extra)
            x = x + y
            if extra is not None:
                extra = extra + y_extra
        return x if extra is None else (x, extra)
