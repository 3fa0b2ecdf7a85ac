"""Causal 3D conv (full pass, causality, chunked cache) and the video conv variant registry."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vdm_jax.nn.conv as conv_module
from vdm_jax.nn import (
    CONV_VARIANTS,
    CausalConv3d,
    Conv3d,
    PseudoConv3d,
    SpatialConv,
    TemporalConv,
    scan_chunks,
    video_conv,
)


def _rand(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


def _randomise(params, seed=1):
    """Random values for every parameter (bias included) so zero inits hide nothing."""
    leaves, tree = jax.tree.flatten(nn.meta.unbox(params))
    rng = np.random.default_rng(seed)
    return tree.unflatten(
        [jnp.asarray(0.3 * rng.standard_normal(v.shape), jnp.float32) for v in leaves]
    )


def _causal_init(x, features=4, **kw):
    conv = CausalConv3d(features, **kw)
    return conv, _randomise(conv.init(jax.random.key(0), x))


def _lax_causal_reference(x, kernel, bias, pad_mode, strides):
    """3D conv on the explicitly front-padded input: no time padding left, "same" in space."""
    kt, kh, kw = kernel.shape[:3]
    first = x[:, :1] if pad_mode == "replicate" else jnp.zeros_like(x[:, :1])
    xp = jnp.concatenate([jnp.repeat(first, kt - 1, axis=1), x], axis=1)
    pads = [(0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)]
    y = jax.lax.conv_general_dilated(
        xp, kernel, strides, pads, dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
    )
    return y + bias


@pytest.mark.parametrize(
    "pad_mode,ts,ss,t",
    [("zeros", 1, (1, 1), 5), ("replicate", 1, (1, 1), 5), ("replicate", 2, (1, 1), 5),
     ("zeros", 2, (2, 2), 6)],
)
@pytest.mark.parametrize("ci,co,group_bytes", [  # taps summed (in frame groups), on inputs, outputs
    (3, 4, 1 << 20), (3, 4, 2 * 6 * 6 * 3 * 4), (2, 8, 1 << 20), (8, 2, 1 << 20)])
def test_causal_conv3d_equals_lax_on_front_padded_input(pad_mode, ts, ss, t, ci, co, group_bytes,
                                                        monkeypatch):
    monkeypatch.setattr(conv_module, "FRAME_GROUP_BYTES", group_bytes)  # 2 x 6 x 6 x 3: 1 frame
    layouts = {3: "sum", 2: "stack_inputs", 8: "stack_outputs"}
    assert conv_module.tap_layout(3, ci, co) == layouts[ci]
    x = _rand((2, t, 6, 6, ci))
    conv, params = _causal_init(x, co, temporal_stride=ts, spatial_strides=ss, pad_mode=pad_mode)
    y, cache = conv.apply(params, x)
    p = params["params"]
    ref = _lax_causal_reference(x, p["kernel"], p["bias"], pad_mode, (ts, *ss))
    assert y.shape == ref.shape == (2, -(-t // ts), 6 // ss[0], 6 // ss[1], co)
    np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(cache, x[:, -2:])


@pytest.mark.parametrize("layout", conv_module.TAP_LAYOUTS)
@pytest.mark.parametrize("group_bytes", [None, 1])
def test_every_tap_layout_computes_the_same_conv(layout, group_bytes):
    x, kernel = _rand((2, 7, 5, 5, 3)), _rand((3, 3, 3, 3, 4), seed=1)
    ref = jax.lax.conv_general_dilated(x, kernel, (2, 1, 1), [(0, 0), (1, 1), (1, 1)],
                                       dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    y = conv_module.conv_over_time_taps(x, kernel, 2, layout=layout, group_bytes=group_bytes)
    np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="layout must be one of"):
        conv_module.conv_over_time_taps(x, kernel, layout="stacked")


def test_replicate_and_zero_padding_differ_only_at_the_start():
    x = _rand((2, 5, 6, 6, 3)) + 2.0  # far from zero so the two paddings differ
    conv_r, params = _causal_init(x, pad_mode="replicate")
    conv_z = CausalConv3d(4, pad_mode="zeros")
    yr, yz = conv_r.apply(params, x)[0], conv_z.apply(params, x)[0]
    assert float(jnp.abs(yr[:, :2] - yz[:, :2]).max()) > 1e-3
    np.testing.assert_array_equal(yr[:, 2:], yz[:, 2:])


@pytest.mark.parametrize("pad_mode", ["replicate", "zeros"])
def test_causal_conv3d_is_causal(pad_mode):
    x = _rand((2, 6, 6, 6, 3))
    conv, params = _causal_init(x, pad_mode=pad_mode)
    j = 3
    y = conv.apply(params, x)[0]
    y2 = conv.apply(params, x.at[:, j].add(1.0))[0]
    np.testing.assert_array_equal(y2[:, :j], y[:, :j])
    assert float(jnp.abs(y2[:, j] - y[:, j]).max()) > 1e-3
    assert float(jnp.abs(y2[:, j + 2] - y[:, j + 2]).max()) > 1e-3  # kt=3 reaches 2 back
    # A non-causal Conv3d with the same weights does look ahead: frame j-1 changes.
    z = Conv3d(4).apply(params, x)
    z2 = Conv3d(4).apply(params, x.at[:, j].add(1.0))
    assert float(jnp.abs(z2[:, j - 1] - z[:, j - 1]).max()) > 1e-3


def _loop_chunks(conv, params, x, chunk):
    ys, cache = [], None
    for i in range(0, x.shape[1], chunk):
        y, cache = conv.apply(params, x[:, i : i + chunk], cache)
        ys.append(y)
    return jnp.concatenate(ys, axis=1), cache


@pytest.mark.parametrize(
    "pad_mode,ts,chunk", [("replicate", 1, 3), ("zeros", 1, 2), ("replicate", 2, 4),
                          ("zeros", 2, 2)]
)
def test_chunked_equals_full_pass(pad_mode, ts, chunk):
    x = _rand((2, 8, 6, 6, 3)) + 1.0
    conv, params = _causal_init(x, temporal_stride=ts, pad_mode=pad_mode)
    if ts == 1:
        x = x[:, : 6 if chunk == 3 else 8]
    full, full_cache = conv.apply(params, x)
    looped, loop_cache = _loop_chunks(conv, params, x, chunk)
    scanned, scan_cache = scan_chunks(
        lambda xc, c: conv.apply(params, xc, c), x, chunk, temporal_stride=ts
    )
    assert looped.shape == scanned.shape == full.shape
    np.testing.assert_allclose(looped, full, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(scanned, full, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(loop_cache, full_cache)
    np.testing.assert_array_equal(scan_cache, full_cache)


def test_scan_chunks_continues_from_a_given_cache():
    x = _rand((1, 8, 6, 6, 3))
    conv, params = _causal_init(x, temporal_stride=2)
    fn = lambda xc, c: conv.apply(params, xc, c)  # noqa: E731
    head, cache = fn(x[:, :2], None)
    tail, _ = scan_chunks(fn, x[:, 2:], 2, temporal_stride=2, cache=cache)
    full = conv.apply(params, x)[0]
    np.testing.assert_allclose(jnp.concatenate([head, tail], 1), full, atol=1e-5, rtol=1e-5)


def test_bad_chunks_and_inputs_raise():
    x = _rand((1, 6, 4, 4, 2))
    conv, params = _causal_init(x, temporal_stride=2)
    fn = lambda xc, c: conv.apply(params, xc, c)  # noqa: E731
    with pytest.raises(ValueError, match="multiple of temporal_stride=2"):
        scan_chunks(fn, x, 3, temporal_stride=2)
    with pytest.raises(ValueError, match="must divide the 6 frames"):
        scan_chunks(fn, x, 4, temporal_stride=2)
    cache = conv.apply(params, x[:, :2])[1]
    with pytest.raises(ValueError, match="not a multiple of temporal_stride=2"):
        conv.apply(params, x[:, 2:5], cache)
    with pytest.raises(ValueError, match="cache must have shape"):
        conv.apply(params, x[:, 2:4], cache[:, :1])
    with pytest.raises(ValueError, match="unknown pad_mode"):
        CausalConv3d(4, pad_mode="reflect").apply(params, x)


def test_pseudo_conv3d_with_activation_is_act_between_spatial_and_temporal():
    x = _rand((2, 4, 6, 6, 3))
    conv = PseudoConv3d(4, activation=nn.silu)
    params = nn.meta.unbox(conv.init(jax.random.key(0), x))
    p = params["params"]
    spatial = SpatialConv(4).apply({"params": p["spatial"]}, x)
    # Identity temporal init: exactly silu(2D conv per frame).
    np.testing.assert_allclose(conv.apply(params, x), nn.silu(spatial), atol=1e-6)
    # Trained temporal taps: the activation sits between the two convs, not after both.
    p2 = _randomise(params)["params"]
    spatial2 = SpatialConv(4).apply({"params": p2["spatial"]}, x)
    ref = TemporalConv(4).apply({"params": p2["temporal"]}, nn.silu(spatial2))
    np.testing.assert_allclose(conv.apply({"params": p2}, x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", CONV_VARIANTS)
def test_video_conv_kinds_keep_video_shape(kind):
    x = _rand((2, 5, 6, 6, 3))
    conv = video_conv(kind, 4)
    y = conv.apply(conv.init(jax.random.key(0), x), x)
    assert isinstance(y, jax.Array)
    assert y.shape == (2, 5, 6, 6, 4)


def test_video_conv_causal_shares_conv3d_params_and_unknown_kind_raises():
    x = _rand((1, 5, 6, 6, 3))
    params = _randomise(video_conv("naive3d", 4).init(jax.random.key(0), x))
    y = video_conv("causal3d", 4).apply(params, x)
    ref = CausalConv3d(4).apply(params, x)[0]
    np.testing.assert_array_equal(y, ref)
    with pytest.raises(ValueError, match="2plus1d"):
        video_conv("conv4d", 4)
