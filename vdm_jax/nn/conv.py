"""Video convolutions on ``(b, t, h, w, c)`` built from 2D convolutions and matmuls.

XLA's native 3D convolution is several times slower on CPU than its 2D convolution, so every
layer here is written with 2D convs over merged ``(b t)`` axes and per-tap matmuls over time.
All are exact re-expressions of the corresponding ``lax.conv_general_dilated`` 3D convolution.
"""

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


def stack_time_taps(x: jax.Array, kt: int, stride: int = 1) -> jax.Array:
    """Zero-pads time ("same") and stacks the ``kt`` shifted views on channels.

    ``(b, t, h, w, c) -> (b, t_out, h, w, kt * c)`` with channel index ``tap * c + ci``, so a
    contraction with a ``(kt * c, co)`` matrix is the sum over temporal taps.
    """
    t = x.shape[1]
    xp = jnp.pad(x, ((0, 0), same_padding(kt), (0, 0), (0, 0), (0, 0)))
    t_out = (t - 1) // stride + 1
    taps = [xp[:, k : k + stride * (t_out - 1) + 1 : stride] for k in range(kt)]
    return jnp.concatenate(taps, axis=-1) if kt > 1 else taps[0]


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

    Computed as the sum over temporal taps of 2D convs: the ``kt`` time-shifted copies are
    stacked on channels and one 2D conv over merged ``(b t)`` contracts taps and channels at once.
    Kernel ``(kt, kh, kw, c_in, c_out)`` (the DHWIO layout of a 3D conv).
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
        w = rearrange(kernel, "k h w ci co -> h w (k ci) co")
        y = conv2d_frames(stack_time_taps(x, kt, self.strides[0]), w, self.strides[1:])
        return self.add_bias(y, bias)


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
