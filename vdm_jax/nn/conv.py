"""Video convolutions on ``(b, t, h, w, c)`` built from 2D convolutions and matmuls.

XLA's native 3D convolution is several times slower on CPU than its 2D convolution, so every
layer here is written with 2D convs over merged ``(b t)`` axes and per-tap matmuls over time.
All are exact re-expressions of the corresponding ``lax.conv_general_dilated`` 3D convolution
(``CausalConv3d``: on the front-padded input). ``video_conv`` picks one by name for ablations.
"""

import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange, repeat

Dtype = jnp.dtype
default_kernel_init = nn.initializers.lecun_normal()


def same_padding(k: int) -> tuple[int, int]:
    """Zero padding ``(before, after)`` that keeps a length unchanged for a size-``k`` kernel."""
    return (k - 1) // 2, k // 2


def conv2d_frames(x: jax.Array, kernel: jax.Array, strides=(1, 1)) -> jax.Array:
    """Applies a 2D conv to every frame: ``(b, t, h, w, ci)`` x ``(kh, kw, ci, co)``.

    Zero padding is "same" per side (``(k-1)//2`` before, ``k//2`` after), so stride 2 with an
    odd kernel maps ``h -> ceil(h / 2)``.
    """
    b = x.shape[0]
    kh, kw = kernel.shape[:2]
    y = jax.lax.conv_general_dilated(
        rearrange(x, "b t h w c -> (b t) h w c"),
        kernel.astype(x.dtype),
        window_strides=tuple(strides),
        padding=(same_padding(kh), same_padding(kw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return rearrange(y, "(b t) h w c -> b t h w c", b=b)


def stack_time_taps(
    x: jax.Array, kt: int, stride: int = 1, padding: tuple[int, int] | None = None
) -> jax.Array:
    """Zero-pads time and stacks the ``kt`` shifted views on channels.

    ``(b, t, h, w, c) -> (b, t_out, h, w, kt * c)`` with channel index ``tap * c + ci``, so a
    contraction with a ``(kt * c, co)`` matrix is the sum over temporal taps. ``padding`` is
    ``(before, after)`` frames of zeros, "same" by default; ``(0, 0)`` is a valid conv over an
    input the caller has already padded. ``t_out = (t + before + after - kt) // stride + 1``.
    """
    before, after = same_padding(kt) if padding is None else padding
    t_out = (x.shape[1] + before + after - kt) // stride + 1
    if t_out < 1:
        raise ValueError(
            f"{x.shape[1]} frames padded by {(before, after)} are fewer than the {kt} taps"
        )
    xp = jnp.pad(x, ((0, 0), (before, after), (0, 0), (0, 0), (0, 0)))
    taps = [xp[:, k : k + stride * (t_out - 1) + 1 : stride] for k in range(kt)]
    return jnp.concatenate(taps, axis=-1) if kt > 1 else taps[0]


# Output frames per group of per-tap convs: enough frames that one tap's input fills about a
# core's L2 cache. On 128x128 frames XLA's CPU convs run ~1.2x faster a frame at a time than
# over an 8-frame chunk (bench/causal_conv_cpu.py).
FRAME_GROUP_BYTES = 1 << 20
TAP_LAYOUTS = ("auto", "sum", "stack_inputs", "stack_outputs")


def tap_layout(kt: int, ci: int, co: int) -> str:
    """How :func:`conv_over_time_taps` lays out ``kt`` time taps of a ``ci -> co`` conv: the
    narrow side of XLA's conv matmul takes them (narrow matmuls are the slow ones on CPU)."""
    if kt > 1 and kt * ci <= co:
        return "stack_inputs"
    if kt > 1 and kt * co <= ci:
        return "stack_outputs"
    return "sum"


def conv_over_time_taps(
    x: jax.Array, kernel: jax.Array, time_stride: int = 1, spatial_strides=(1, 1),
    layout: str = "auto", group_bytes: int | None = None,
) -> jax.Array:
    """Valid-in-time 3D conv of an already time-padded ``x`` ``(b, t, h, w, ci)`` with
    ``kernel`` ``(kt, kh, kw, ci, co)`` as 2D convs over frames, the taps laid out per
    ``layout`` (:func:`tap_layout` when ``"auto"``): ``"stack_inputs"`` is one conv over the
    shifted inputs stacked on ``kt * ci`` channels, ``"stack_outputs"`` one conv to ``kt * co``
    channels (the taps' kernels side by side) and a shifted sum, ``"sum"`` one conv per tap on
    a shifted view, summed, a group of output frames at a time (``group_bytes`` of input per
    tap, :data:`FRAME_GROUP_BYTES` by default). ``t_out = (t - kt) // time_stride + 1``.
    """
    kt, ci, co = kernel.shape[0], kernel.shape[3], kernel.shape[4]
    t_out = (x.shape[1] - kt) // time_stride + 1
    if t_out < 1:
        raise ValueError(f"{x.shape[1]} frames are fewer than the {kt} taps")
    if layout not in TAP_LAYOUTS:
        raise ValueError(f"layout must be one of {TAP_LAYOUTS}, got {layout!r}")
    layout = tap_layout(kt, ci, co) if layout == "auto" else layout
    span = time_stride * (t_out - 1) + 1
    if layout == "stack_inputs":
        stacked = stack_time_taps(x, kt, time_stride, padding=(0, 0))
        return conv2d_frames(stacked, rearrange(kernel, "k h w i o -> h w (k i) o"),
                             spatial_strides)
    if layout == "stack_outputs":
        y = conv2d_frames(x, rearrange(kernel, "k h w i o -> h w i (k o)"), spatial_strides)
        taps = [y[:, k : k + span : time_stride, ..., k * co : (k + 1) * co] for k in range(kt)]
        return functools.reduce(jnp.add, taps)
    frame_bytes = x.dtype.itemsize * math.prod(x.shape) // x.shape[1]
    group = max(1, (group_bytes or FRAME_GROUP_BYTES) // frame_bytes)
    if group < t_out:
        windows = [x[:, s * time_stride : (s + group - 1) * time_stride + kt]
                   for s in range(0, t_out, group)]
        return jnp.concatenate([conv_over_time_taps(w, kernel, time_stride, spatial_strides,
                                                    "sum", group_bytes) for w in windows], axis=1)
    taps = [conv2d_frames(x[:, k : k + span : time_stride], kernel[k], spatial_strides)
            for k in range(kt)]
    return functools.reduce(jnp.add, taps)


def identity_temporal_init(key, shape, dtype=jnp.float32):
    """Kernel ``(k, c, c)`` whose centre tap is the identity and other taps are zero."""
    del key
    k, ci, co = shape
    if ci != co:
        raise ValueError(f"identity temporal init needs equal in/out channels, got {ci}->{co}")
    kernel = np.zeros(shape, np.float32)
    kernel[(k - 1) // 2] = np.eye(ci)
    return jnp.asarray(kernel, dtype)


class _ConvParams(nn.Module):
    """Shared kernel/bias creation with logical axis names."""

    features: int
    use_bias: bool = True
    dtype: Dtype | None = None
    kernel_init: Callable = default_kernel_init

    def make(self, shape: tuple[int, ...], names: tuple[str | None, ...]):
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(self.kernel_init, names), shape, jnp.float32
        )
        bias = None
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                (self.features,),
                jnp.float32,
            )
        return kernel, bias

    def add_bias(self, y, bias):
        return y if bias is None else y + bias.astype(y.dtype)


class SpatialConv(_ConvParams):
    """1 x kh x kw convolution (space only) as a 2D conv over merged ``(b t)``.

    Kernel ``(kh, kw, c_in, c_out)`` is the layout of an image model's conv, so image weights
    load unchanged. ``strides`` are spatial; time is never strided.
    """

    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(b, t, h, w, c_in) -> (b, t, h', w', features)``."""
        kh, kw = self.kernel_size
        kernel, bias = self.make(
            (kh, kw, x.shape[-1], self.features), (None, None, "conv_in", "conv_out")
        )
        x = x.astype(self.dtype or x.dtype)
        return self.add_bias(conv2d_frames(x, kernel, self.strides), bias)


class TemporalConv(_ConvParams):
    """k x 1 x 1 convolution over time with "same" zero padding, as one matmul over stacked taps.

    Kernel ``(k, c_in, c_out)``.
    """

    kernel_size: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(b, t, h, w, c_in) -> (b, t, h, w, features)``."""
        k = self.kernel_size
        kernel, bias = self.make((k, x.shape[-1], self.features), (None, "conv_in", "conv_out"))
        x = x.astype(self.dtype or x.dtype)
        w = rearrange(kernel, "k ci co -> (k ci) co").astype(x.dtype)
        y = jnp.einsum("bthwi,io->bthwo", stack_time_taps(x, k), w)
        return self.add_bias(y, bias)


class Conv3d(_ConvParams):
    """Full kt x kh x kw convolution, "same" zero padding, exact vs ``lax`` 3D conv.

    Computed as the sum over temporal taps of 2D convs over merged ``(b t)``
    (:func:`conv_over_time_taps`). Kernel ``(kt, kh, kw, c_in, c_out)`` (the DHWIO layout of a
    3D conv).
    """

    kernel_size: tuple[int, int, int] = (3, 3, 3)
    strides: tuple[int, int, int] = (1, 1, 1)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(b, t, h, w, c_in) -> (b, t', h', w', features)``."""
        kt, kh, kw = self.kernel_size
        kernel, bias = self.make(
            (kt, kh, kw, x.shape[-1], self.features), (None, None, None, "conv_in", "conv_out")
        )
        x = x.astype(self.dtype or x.dtype)
        xp = jnp.pad(x, ((0, 0), same_padding(kt), (0, 0), (0, 0), (0, 0)))
        y = conv_over_time_taps(xp, kernel.astype(x.dtype), self.strides[0], self.strides[1:])
        return self.add_bias(y, bias)


PAD_MODES = ("replicate", "zeros")


def causal_front_padding(x: jax.Array, frames: int, pad_mode: str) -> jax.Array:
    """The ``frames`` frames a causal conv sees before ``x[:, 0]``: copies of it, or zeros."""
    if pad_mode == "replicate":
        return jnp.repeat(x[:, :1], frames, axis=1)
    if pad_mode == "zeros":
        return jnp.zeros((x.shape[0], frames, *x.shape[2:]), x.dtype)
    raise ValueError(f"unknown pad_mode {pad_mode!r}; expected one of {PAD_MODES}")


class CausalConv3d(_ConvParams):
    """Temporally causal kt x kh x kw convolution with an explicit cache for chunked video.

    Time gets ``kt - 1`` frames of front padding only, so output frame ``i`` sees input frames
    ``<= i``; space is "same" zero padded. ``pad_mode="replicate"`` repeats the first frame
    (the CogVideoX causal VAE), ``"zeros"`` pads with zeros. ``temporal_stride`` ``s`` is applied
    after the padding, giving ``(t + kt - 1 - kt) // s + 1 = ceil(t / s)`` output frames whose
    windows start at padded frames ``0, s, 2s, ...``. Computed like :class:`Conv3d`, with the
    same ``(kt, kh, kw, c_in, c_out)`` kernel, so weights are interchangeable.

    ``__call__(x, cache)`` returns ``(y, new_cache)``. ``cache`` is the last ``kt - 1`` input
    frames of the previous chunk ``(b, kt - 1, h, w, c_in)`` and replaces the front padding;
    ``None`` (first chunk) means pad per ``pad_mode``. ``new_cache`` is the last ``kt - 1``
    frames of ``[cache or padding, x]``. Chunks threaded this way match one pass over the whole
    video iff every chunk starts on a multiple of ``s`` frames: each chunk must hold a multiple
    of ``s`` frames (a chunk given a cache raises otherwise; keep the first chunk a multiple of
    ``s`` too, which the layer cannot check). See :func:`scan_chunks`.
    """

    kernel_size: tuple[int, int, int] = (3, 3, 3)
    temporal_stride: int = 1
    spatial_strides: tuple[int, int] = (1, 1)
    pad_mode: str = "replicate"

    @nn.compact
    def __call__(
        self, x: jax.Array, cache: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """``(b, t, h, w, c_in) -> ((b, ceil(t/s), h', w', features), (b, kt-1, h, w, c_in))``."""
        return self.causal_conv(x, cache)

    def causal_conv(self, x: jax.Array, cache: jax.Array | None):
        """The layer body, shared with :class:`CausalVideoConv` (same parameter tree)."""
        kt, kh, kw = self.kernel_size
        s = self.temporal_stride
        kernel, bias = self.make(
            (kt, kh, kw, x.shape[-1], self.features), (None, None, None, "conv_in", "conv_out")
        )
        x = x.astype(self.dtype or x.dtype)
        if cache is None:
            front = causal_front_padding(x, kt - 1, self.pad_mode)
        else:
            want = (x.shape[0], kt - 1, *x.shape[2:])
            if cache.shape != want:
                raise ValueError(f"cache must have shape {want} (b, kt-1, h, w, c_in), "
                                 f"got {cache.shape}")
            if x.shape[1] % s:
                raise ValueError(
                    f"a chunk of {x.shape[1]} frames is not a multiple of temporal_stride={s}: "
                    "the next chunk's windows would not line up with a full pass"
                )
            front = cache.astype(x.dtype)
        xp = jnp.concatenate([front, x], axis=1)
        y = conv_over_time_taps(xp, kernel.astype(x.dtype), s, self.spatial_strides)
        return self.add_bias(y, bias), xp[:, xp.shape[1] - (kt - 1) :]


class CausalVideoConv(CausalConv3d):
    """:class:`CausalConv3d` over a whole clip, ``__call__(x) -> y``; same parameters."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(b, t, h, w, c_in) -> (b, ceil(t/s), h', w', features)``."""
        return self.causal_conv(x, None)[0]


def scan_chunks(
    apply_fn: Callable,
    x: jax.Array,
    chunk_frames: int,
    *,
    temporal_stride: int = 1,
    cache=None,
):
    """Runs a cached causal ``apply_fn(x_chunk, cache) -> (y, cache)`` over time chunks.

    ``x`` ``(b, n * chunk_frames, ...)`` is cut into ``n`` chunks and ``jax.lax.scan`` carries
    the cache, so memory holds one chunk's activations at a time. ``cache=None`` runs the first
    chunk outside the scan with ``apply_fn(chunk, None)`` to obtain one (the layer's own padding);
    a cache may be any pytree. ``temporal_stride`` is ``apply_fn``'s total time stride: chunks
    must hold a multiple of it for the result to equal one pass. Returns ``(y, last_cache)``.
    """
    t = x.shape[1]
    if chunk_frames < 1 or t % chunk_frames or chunk_frames % temporal_stride:
        raise ValueError(
            f"chunk_frames={chunk_frames} must divide the {t} frames and be a multiple of "
            f"temporal_stride={temporal_stride}"
        )
    head = []
    if cache is None:
        y0, cache = apply_fn(x[:, :chunk_frames], None)
        head, x = [y0], x[:, chunk_frames:]

    def step(carry, chunk):
        y, carry = apply_fn(chunk, carry)
        return carry, y

    chunks = rearrange(x, "b (n c) ... -> n b c ...", c=chunk_frames)
    cache, ys = jax.lax.scan(step, cache, chunks)
    y = jnp.concatenate([*head, rearrange(ys, "n b c ... -> b (n c) ...")], axis=1)
    return y, cache


class PseudoConv3d(nn.Module):
    """(2+1)D convolution: spatial kh x kw conv, optional activation, temporal kt conv.

    The temporal conv is identity-initialised (centre tap = identity, other taps and bias zero),
    so without ``activation`` the layer equals its 2D conv per frame at init.
    """

    features: int
    kernel_size: tuple[int, int, int] = (3, 3, 3)
    activation: Callable | None = None
    dtype: Dtype | None = None
    kernel_init: Callable = default_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(b, t, h, w, c_in) -> (b, t, h, w, features)``."""
        kt, kh, kw = self.kernel_size
        x = SpatialConv(
            self.features, kernel_size=(kh, kw), dtype=self.dtype, kernel_init=self.kernel_init,
            name="spatial",
        )(x)
        if self.activation is not None:
            x = self.activation(x)
        return TemporalConv(
            self.features, kernel_size=kt, dtype=self.dtype,
            kernel_init=identity_temporal_init, name="temporal",
        )(x)


class SpatialDownsample(nn.Module):
    """Halves height and width with a stride-2 3x3 spatial conv; frames are kept."""

    features: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(b, t, h, w, c) -> (b, t, ceil(h/2), ceil(w/2), features)``."""
        return SpatialConv(self.features, strides=(2, 2), dtype=self.dtype, name="conv")(x)


class SpatialUpsample(nn.Module):
    """Doubles height and width: nearest-neighbour upsampling then a 3x3 spatial conv."""

    features: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(b, t, h, w, c) -> (b, t, 2h, 2w, features)``."""
        x = repeat(x, "b t h w c -> b t (h i) (w j) c", i=2, j=2)
        return SpatialConv(self.features, dtype=self.dtype, name="conv")(x)


CONV_VARIANTS = ("spatial", "naive3d", "2plus1d", "causal3d")


def video_conv(
    kind: str,
    features: int,
    *,
    kernel_size: tuple[int, int, int] = (3, 3, 3),
    dtype: Dtype | None = None,
    kernel_init: Callable = default_kernel_init,
    name: str | None = None,
) -> nn.Module:
    """A ``(b, t, h, w, c_in) -> (b, t, h, w, features)`` conv for the "2D conv to video" ablation.

    ``"spatial"``: 1 x kh x kw per frame (no temporal mixing); ``"naive3d"``: full
    :class:`Conv3d`; ``"2plus1d"``: :class:`PseudoConv3d` without activation; ``"causal3d"``:
    :class:`CausalVideoConv` (replicate padding, no cache). ``"naive3d"`` and ``"causal3d"``
    share one parameter layout.
    """
    common = dict(dtype=dtype, kernel_init=kernel_init, name=name)
    if kind == "spatial":
        return SpatialConv(features, kernel_size=tuple(kernel_size[1:]), **common)
    if kind == "naive3d":
        return Conv3d(features, kernel_size=tuple(kernel_size), **common)
    if kind == "2plus1d":
        return PseudoConv3d(features, kernel_size=tuple(kernel_size), **common)
    if kind == "causal3d":
        return CausalVideoConv(features, kernel_size=tuple(kernel_size), **common)
    raise ValueError(f"unknown conv variant {kind!r}; expected one of {CONV_VARIANTS}")
