"""GroupNorm and video convolutions against straightforward references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.nn import (
    Conv3d,
    GroupNorm,
    PseudoConv3d,
    SpatialConv,
    SpatialDownsample,
    SpatialUpsample,
    TemporalConv,
)


def _rand(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


def _randomise(params, seed=1):
    """Replaces every parameter with random values so zero/identity inits hide nothing."""
    leaves, tree = jax.tree.flatten(nn.meta.unbox(params))
    rng = np.random.default_rng(seed)  # numpy: no per-shape compile
    new = [jnp.asarray(0.3 * rng.standard_normal(v.shape), jnp.float32) for v in leaves]
    return tree.unflatten(new)


def _groupnorm_reference(x, gamma, beta, groups, eps, per_frame):
    b, t, h, w, c = x.shape
    xn = np.asarray(x, np.float64).reshape(b, t, h, w, groups, c // groups)
    axes = (2, 3, 5) if per_frame else (1, 2, 3, 5)
    mean = xn.mean(axis=axes, keepdims=True)
    var = ((xn - mean) ** 2).mean(axis=axes, keepdims=True)
    y = ((xn - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return y * np.asarray(gamma) + np.asarray(beta)


@pytest.mark.parametrize("per_frame", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 8), (1, 1, 6, 2, 16)])
def test_groupnorm_matches_reference(shape, per_frame):
    x = _rand(shape) * 3 + 1.5  # non-zero mean exercises the one-pass variance
    norm = GroupNorm(4, per_frame=per_frame)
    params = _randomise(norm.init(jax.random.key(0), x))
    y = norm.apply(params, x)
    p = params["params"]
    ref = _groupnorm_reference(x, p["scale"], p["bias"], 4, 1e-5, per_frame)
    np.testing.assert_allclose(y, ref, atol=1e-5, rtol=1e-5)
    if not per_frame:
        flax_y = nn.GroupNorm(4, epsilon=1e-5).apply(params, x)
        np.testing.assert_allclose(y, flax_y, atol=1e-5, rtol=1e-5)


def test_groupnorm_fused_film_and_errors():
    x = _rand((2, 2, 3, 3, 8))
    norm = GroupNorm(2)
    params = norm.init(jax.random.key(0), x)
    scale, shift = _rand((2, 8), 1), _rand((2, 8), 2)
    y = norm.apply(params, x, (scale, shift))
    plain = norm.apply(params, x)
    np.testing.assert_allclose(
        y, plain * (1 + scale[:, None, None, None]) + shift[:, None, None, None], atol=1e-5
    )
    with pytest.raises(ValueError, match="do not divide"):
        GroupNorm(3).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"\(b, t, h, w, c\)"):
        norm.apply(params, x[0])


def test_groupnorm_segments_normalise_each_run_of_frames_alone():
    x = _rand((2, 6, 3, 4, 8)) * 2 + 1
    norm = GroupNorm(4)
    params = _randomise(norm.init(jax.random.key(0), x))
    got = norm.apply(params, x, segments=(1, 3, 2))
    parts = [norm.apply(params, x[:, a:b]) for a, b in [(0, 1), (1, 4), (4, 6)]]
    np.testing.assert_allclose(got, jnp.concatenate(parts, axis=1), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(norm.apply(params, x, segments=(6,)), norm.apply(params, x))
    with pytest.raises(ValueError, match="do not split 6 frames"):
        norm.apply(params, x, segments=(2, 3))


def _lax_conv3d(x, kernel, strides=(1, 1, 1)):
    pads = [((k - 1) // 2, k // 2) for k in kernel.shape[:3]]
    return jax.lax.conv_general_dilated(
        x, kernel, strides, pads, dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
    )


@pytest.mark.parametrize("shape", [(2, 3, 6, 5, 4), (1, 1, 4, 4, 2)])
def test_spatial_conv_equals_lax_1x3x3(shape):
    x = _rand(shape)
    conv = SpatialConv(6)
    p = _randomise(conv.init(jax.random.key(0), x))["params"]
    y = conv.apply({"params": p}, x)
    ref = _lax_conv3d(x, p["kernel"][None]) + p["bias"]
    np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kernel_size,strides,shape",
    [((3, 3, 3), (1, 1, 1), (2, 5, 6, 6, 3)), ((2, 1, 3), (1, 1, 1), (1, 4, 5, 3, 2)),
     ((3, 3, 3), (2, 2, 2), (1, 5, 6, 6, 3)), ((1, 3, 3), (1, 1, 1), (1, 1, 4, 4, 2)),
     ((3, 3, 3), (2, 1, 1), (1, 6, 4, 4, 12)), ((3, 1, 3), (1, 2, 2), (1, 5, 4, 4, 1))],
)
def test_conv3d_equals_lax_conv3d(kernel_size, strides, shape):
    x = _rand(shape)  # 12 -> 4 channels stacks the time taps on outputs, 1 -> 4 on inputs
    conv = Conv3d(4, kernel_size=kernel_size, strides=strides)
    p = _randomise(conv.init(jax.random.key(0), x))["params"]
    y = conv.apply({"params": p}, x)
    ref = _lax_conv3d(x, p["kernel"], strides) + p["bias"]
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)


def test_temporal_conv_equals_lax_kx1x1():
    x = _rand((2, 5, 3, 4, 3))
    conv = TemporalConv(4, kernel_size=3)
    p = _randomise(conv.init(jax.random.key(0), x))["params"]
    ref = _lax_conv3d(x, p["kernel"][:, None, None]) + p["bias"]
    np.testing.assert_allclose(conv.apply({"params": p}, x), ref, atol=1e-4, rtol=1e-4)


def test_pseudo_conv3d_is_2d_conv_at_init_and_mixes_time_after():
    x = _rand((2, 4, 5, 5, 3))
    conv = PseudoConv3d(6)
    params = nn.meta.unbox(conv.init(jax.random.key(0), x))
    sp = params["params"]["spatial"]
    per_frame = jnp.stack(
        [jax.lax.conv_general_dilated(x[:, i], sp["kernel"], (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
         for i in range(x.shape[1])], axis=1) + sp["bias"]
    np.testing.assert_allclose(conv.apply(params, x), per_frame, atol=1e-5)
    # After training the temporal taps, frame 0's output depends on frame 1.
    p2 = _randomise(params)
    x2 = x.at[:, 1].add(1.0)
    d = conv.apply(p2, x2) - conv.apply(p2, x)
    assert float(jnp.abs(d[:, 0]).max()) > 1e-3
    assert float(jnp.abs(d[:, 3]).max()) == 0.0  # kernel 3 reaches one frame each way


def test_down_and_upsample_shapes():
    x = _rand((2, 3, 8, 6, 4))
    down = SpatialDownsample(5)
    y = down.apply(down.init(jax.random.key(0), x), x)
    assert y.shape == (2, 3, 4, 3, 5)
    up = SpatialUpsample(7)
    z = up.apply(up.init(jax.random.key(0), y), y)
    assert z.shape == (2, 3, 8, 6, 7)


def test_params_carry_logical_names():
    x = _rand((1, 2, 4, 4, 2))
    boxed = Conv3d(3).init(jax.random.key(0), x)["params"]
    assert boxed["kernel"].names == (None, None, None, "conv_in", "conv_out")
    assert boxed["bias"].names == ("conv_out",)
