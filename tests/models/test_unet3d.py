"""VDM 3D UNet: shapes, input errors, frame independence and image-frame masking."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vdm_jax.models import VARIANTS, UNet3D, build_model, count_params, model_config
from vdm_jax.testing import assert_same_value_and_grads

SMALL = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,),
             head_dim=8, num_groups=2)


def _random_params(model, *args, seed=1, **kwargs):
    """Random values for every parameter (shapes from ``eval_shape``, so no init compile);
    random rather than the real init so zero-initialised outputs cannot hide frame mixing."""
    shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), *args,
                                                              **kwargs)))
    leaves, tree = jax.tree.flatten(shapes)
    rng = np.random.default_rng(seed)  # numpy: no per-shape compile
    new = [jnp.asarray(0.2 * rng.standard_normal(v.shape), jnp.float32) for v in leaves]
    return tree.unflatten(new)


def _video(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


@pytest.fixture(scope="module")
def temporal_unet():
    model = UNet3D(**SMALL)
    x, t = _video((2, 4, 8, 8, 3)), jnp.array([0.3, 0.7])
    ctx = _video((2, 3, 6), 2)
    params = _random_params(model, x, t, ctx)
    return model, params, jax.jit(model.apply), (x, t, ctx)


@pytest.mark.parametrize("shape", [(2, 4, 8, 8, 3), (2, 1, 4, 12, 3), (2, 6, 6, 2, 3)])
def test_output_shape_for_several_sizes(temporal_unet, shape):
    model, params, apply, (_, t, ctx) = temporal_unet
    y = apply(params, _video(shape), t, ctx)
    assert y.shape == shape and y.dtype == jnp.float32
    assert bool(jnp.isfinite(y).all())


def test_image_frames_do_not_mix(temporal_unet):
    _, params, apply, (x, t, ctx) = temporal_unet
    image_frames = jnp.array([[False, False, True, False]] * 2)
    y = apply(params, x, t, ctx, None, image_frames)
    dx = _video((2, 8, 8, 3), 5)
    d = np.abs(np.asarray(apply(params, x.at[:, 3].add(dx), t, ctx, None, image_frames) - y))
    per_frame = d.max(axis=(0, 2, 3, 4))
    assert per_frame[0] > 1e-4 and per_frame[1] > 1e-4  # video frames see frame 3
    assert per_frame[2] == 0.0  # the image frame does not
    # And the image frame's output does not depend on any other frame.
    d_img = apply(params, x.at[:, 2].add(dx), t, ctx, None, image_frames) - y
    assert float(jnp.abs(d_img[:, jnp.array([0, 1, 3])]).max()) == 0.0


def test_context_mask_and_time_matter(temporal_unet):
    _, params, apply, (x, t, ctx) = temporal_unet
    mask = jnp.array([[True, True, False], [True, False, False]])
    y = apply(params, x, t, ctx, mask)
    np.testing.assert_allclose(apply(params, x, t, ctx.at[:, 2].set(50.0), mask), y, atol=1e-5)
    assert float(jnp.abs(apply(params, x, t, ctx.at[:, 0].add(1.0), mask) - y).max()) > 1e-4
    assert float(jnp.abs(apply(params, x, t[::-1], ctx, mask) - y).max()) > 1e-4


@pytest.fixture(scope="module")
def spatial_unet():
    """Spatial convs, no temporal attention: a per-frame image UNet with text conditioning."""
    model = UNet3D(**SMALL, attention="space")
    x, t, ctx = _video((1, 3, 4, 4, 3)), jnp.array([0.5]), _video((1, 2, 6), 2)
    return model, _random_params(model, x, t, ctx), jax.jit(model.apply), (x, t, ctx)


def test_frames_independent_without_temporal_layers(spatial_unet):
    _, params, apply, (x, t, ctx) = spatial_unet
    d = apply(params, x.at[:, 1].add(_video((1, 4, 4, 3), 3)), t, ctx) - apply(params, x, t, ctx)
    d = np.abs(np.asarray(d)).max(axis=(0, 2, 3, 4))
    assert d[1] > 1e-4 and d[0] == 0.0 and d[2] == 0.0


def test_2plus1d_equals_spatial_unet_at_init(spatial_unet):
    _, p_spatial, spatial_apply, (x, t, ctx) = spatial_unet
    pseudo = UNet3D(**SMALL, attention="space", conv="2plus1d")
    p_pseudo = nn.meta.unbox(jax.eval_shape(lambda: pseudo.init(jax.random.key(0), x, t, ctx)))

    # Give the (2+1)D model the spatial model's weights; its temporal convs get the real
    # identity init (centre tap = identity, zero bias).
    def graft(dst, src):
        out = {}
        for k, v in dst.items():
            if isinstance(v, dict) and set(v) == {"spatial", "temporal"}:
                kt, c, _ = v["temporal"]["kernel"].shape
                ident = jnp.zeros((kt, c, c)).at[kt // 2].set(jnp.eye(c))
                out[k] = {"spatial": src[k], "temporal": {"kernel": ident, "bias": jnp.zeros(c)}}
            elif isinstance(v, dict):
                out[k] = graft(v, src[k])
            else:
                out[k] = src[k]
        return out

    grafted = graft(p_pseudo, p_spatial)
    np.testing.assert_allclose(
        jax.jit(pseudo.apply)(grafted, x, t, ctx), spatial_apply(p_spatial, x, t, ctx),
        atol=1e-4,
    )


def test_clear_errors():
    model = UNet3D(channels=8, channel_mult=(1, 2, 2), attention_levels=(), num_groups=2)
    t = jnp.zeros((1,))
    with pytest.raises(ValueError, match="height 30 is not divisible by 4; use 28 or 32"):
        model.init(jax.random.key(0), jnp.zeros((1, 2, 30, 32, 3)), t)
    with pytest.raises(ValueError, match="width 6 is not divisible by 4; use 4 or 8"):
        model.init(jax.random.key(0), jnp.zeros((1, 2, 8, 6, 3)), t)
    with pytest.raises(ValueError, match=r"\(b, t, h, w, c\)"):
        model.init(jax.random.key(0), jnp.zeros((2, 8, 8, 3)), t)
    with pytest.raises(ValueError, match="at least 1 frame"):
        model.init(jax.random.key(0), jnp.zeros((1, 0, 8, 8, 3)), t)
    with pytest.raises(ValueError, match=r"context must be \(b, L, d\)"):
        model.init(jax.random.key(0), jnp.zeros((1, 2, 8, 8, 3)), t, jnp.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="conv must be one of"):
        UNet3D(conv="3d").init(jax.random.key(0), jnp.zeros((1, 2, 8, 8, 3)), t)


def test_build_model_and_variants():
    cfg = model_config("tiny")
    cfg.channels, cfg.channel_mult, cfg.attention_levels = 8, (1, 2), (1,)
    cfg.head_dim, cfg.num_groups = 8, 2
    cfg.text.width, cfg.text.depth, cfg.text.max_len = 16, 1, 6
    model = build_model(cfg)
    x, t = _video((2, 2, 4, 4, 3)), jnp.array([0.1, 0.9])
    tokens = jnp.array([[1, 4, 5, 0], [1, 0, 0, 0]], jnp.int32)
    params = _random_params(model, x, t, tokens)
    assert jax.jit(model.apply)(params, x, t, tokens).shape == x.shape
    bad = ml_collections.ConfigDict(dict(cfg.to_dict(), name="dit"))
    with pytest.raises(ValueError, match=r"known: \['unet3d', 'latte', 'make_a_video'\]"):
        build_model(bad)
    # Every named size builds; parameter counts via eval_shape (no memory).
    counts = {}
    for name in VARIANTS:
        size = 64 if name == "vdm_64" else 32
        counts[name] = count_params(build_model(model_config(name)),
                                    jnp.zeros((1, 2, size, size, 3)), jnp.zeros((1,)),
                                    jnp.ones((1, 4), jnp.int32))
    assert counts["tiny"] < counts["small"] < counts["vdm_64"]
    assert 1e5 < counts["tiny"] < 5e6 and counts["vdm_64"] > 3e8


def test_frame_positions_and_pooled_text_start_as_no_ops_then_condition():
    x = jnp.broadcast_to(_video((1, 1, 8, 8, 3)), (1, 3, 8, 8, 3))  # three identical frames
    t, ctx = jnp.array([0.5]), _video((1, 3, 6), 2)
    plain = UNet3D(**SMALL, attention="space")
    extra = UNet3D(**SMALL, attention="space", frame_positions=True, pooled_text=True)
    p_plain = nn.meta.unbox(plain.init(jax.random.key(0), x, t, ctx))
    p_extra = nn.meta.unbox(extra.init(jax.random.key(0), x, t, ctx))
    # Zero-initialised projections: at init the extras change nothing.
    np.testing.assert_array_equal(extra.apply(p_extra, x, t, ctx), plain.apply(p_plain, x, t, ctx))
    # Trained (random) projections: identical frames now differ by index, and the pooled caption
    # reaches the residual blocks.
    p_rand = _random_params(extra, x, t, ctx)
    y = np.asarray(extra.apply(p_rand, x, t, ctx))
    assert np.abs(y[0, 0] - y[0, 2]).max() > 1e-3
    no_pool = jax.tree_util.tree_map_with_path(
        lambda path, v: jnp.zeros_like(v) if "pooled_text" in jax.tree_util.keystr(path) else v,
        p_rand,
    )
    assert np.abs(np.asarray(extra.apply(no_pool, x, t, ctx)) - y).max() > 1e-3


@pytest.mark.parametrize("attention", ["joint", "sparse_local_global", "axial", "godiva"])
def test_unet_takes_any_attention_variant(attention):
    model = UNet3D(**SMALL, attention=attention)
    x, t, ctx = _video((1, 2, 8, 8, 3)), jnp.array([0.5]), _video((1, 3, 6), 2)
    params = _random_params(model, x, t, ctx)
    y = model.apply(params, x, t, ctx)
    assert y.shape == x.shape and bool(jnp.isfinite(y).all())
    # Every variant but per-frame attention mixes frames (godiva's only forward in time).
    d = model.apply(params, x.at[:, 0].add(1.0), t, ctx) - y
    assert float(jnp.abs(d[:, 1]).max()) > 1e-4
    with pytest.raises(ValueError, match="image frames can be masked"):
        model.apply(params, x, t, ctx, None, jnp.zeros((1, 2), bool))


@pytest.mark.parametrize("conv", ["naive3d", "causal3d"])
def test_unet_takes_any_conv_variant(conv):
    model = UNet3D(**SMALL, attention="space", conv=conv)
    x, t = _video((1, 3, 4, 4, 3)), jnp.array([0.5])
    params = _random_params(model, x, t)
    y = model.apply(params, x, t)
    d = np.abs(np.asarray(model.apply(params, x.at[:, 1].add(1.0), t) - y)).max(axis=(0, 2, 3, 4))
    # 3D convs mix neighbouring frames; a causal one never looks forward.
    assert d[2] > 1e-4
    assert (d[0] == 0.0) == (conv == "causal3d")


@pytest.mark.parametrize("target", ["input", "output"])
def test_layout_extras_start_as_no_ops_then_follow_caption_and_frame(target):
    x = jnp.broadcast_to(_video((1, 1, 8, 8, 3)), (1, 3, 8, 8, 3))  # three identical frames
    t, ctx = jnp.array([0.9]), _video((1, 3, 6), 2)
    tokens = jnp.array([[1, 4, 5]], jnp.int32)
    plain = UNet3D(**SMALL, attention="space")
    extra = UNet3D(**SMALL, attention="space", pixel_positions=True, cond_layout=target,
                   layout_vocab=10, film_out=True)
    p_plain = nn.meta.unbox(plain.init(jax.random.key(0), x, t, ctx))
    p_extra = nn.meta.unbox(extra.init(jax.random.key(0), x, t, ctx, tokens=tokens))
    np.testing.assert_array_equal(extra.apply(p_extra, x, t, ctx, tokens=tokens),
                                  plain.apply(p_plain, x, t, ctx))
    # Trained (random) weights: the map separates identical frames by index and reads the
    # caption's token ids themselves (one word changed, same text context).
    p_rand = _random_params(extra, x, t, ctx, None, None, tokens=tokens)
    y = np.asarray(extra.apply(p_rand, x, t, ctx, tokens=tokens))
    assert np.abs(y[0, 0] - y[0, 2]).max() > 1e-3
    other = np.asarray(extra.apply(p_rand, x, t, ctx, tokens=tokens.at[0, 2].set(6)))
    assert np.abs(other - y).max() > 1e-3
    with pytest.raises(ValueError, match="cond_layout must be one of"):
        extra.clone(cond_layout="middle").init(jax.random.key(0), x, t, ctx, tokens=tokens)


def test_remat_policy_keeps_values_and_gradients(temporal_unet):
    model, params, _, (x, t, ctx) = temporal_unet
    assert_same_value_and_grads(model, model.clone(remat="dots_saveable"), params, x, t, ctx,
                                atol=1e-5)
    with pytest.raises(ValueError, match="unknown remat policy True"):
        model.clone(remat=True).init(jax.random.key(0), x, t, ctx)
