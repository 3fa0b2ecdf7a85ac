"""UNet3DCondition (ModelScope text-to-video UNet): shapes, bfloat16, frames processed
independently while the temporal layers are the identity (at init), input and config errors,
parameter count and temporal-parameter labels."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.models import param_paths
from vdm_jax.models.unet3d_condition import (
    VARIANTS,
    UNet3DCondition,
    count_params,
    example_inputs,
)
from vdm_jax.models.unet3d_condition_blocks import (
    TemporalConvLayer,
    TemporalTransformer,
    nearest_indices,
)
from vdm_jax.testing import assert_same_value_and_grads

SHAPE = (2, 3, 4, 4, 4)  # (b, t, h, w, c)
TINY = VARIANTS["tiny"]


def random_params(model, seed=1, scale=0.2):
    """Random values for every parameter (zero-initialised ones included); numpy, so no
    per-shape compile of jax's RNG."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs(model)))
    leaves, tree = jax.tree.flatten(nn.meta.unbox(shapes))
    rng = np.random.default_rng(seed)
    return tree.unflatten([jnp.asarray(scale * rng.standard_normal(v.shape), jnp.float32)
                           for v in leaves])


def zero_temporal(params):
    flat = param_paths.flatten(params["params"])
    flat = {k: jnp.zeros_like(v) if param_paths.is_temporal(k) else v for k, v in flat.items()}
    return {"params": param_paths.unflatten(flat)}


@pytest.fixture(scope="module")
def model():
    return UNet3DCondition(**TINY)


@pytest.fixture(scope="module")
def inputs():
    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k1, SHAPE)
    context = jax.random.normal(k2, (SHAPE[0], 5, TINY["cross_attention_dim"]))
    return x, jnp.array([0.1, 0.7]), context


@pytest.fixture(scope="module")
def apply(model):
    return jax.jit(model.apply)


def test_output_shapes(model):
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs(model)))
    for shape in [(2, 3, 8, 8, 4), (1, 1, 4, 4, 4), (1, 2, 6, 5, 4), (1, 4, 7, 3, 4)]:
        out = jax.eval_shape(model.apply, params, jnp.zeros(shape), jnp.zeros(()),
                             jnp.zeros((shape[0], 3, 32)))
        assert out.shape == shape and out.dtype == jnp.float32


def test_bfloat16_matches_float32(model, inputs, apply):
    params = random_params(model, scale=0.1)
    want = apply(params, *inputs)
    bf16 = model.clone(dtype=jnp.bfloat16)
    got = jax.jit(bf16.apply)(params, *inputs)
    assert got.dtype == jnp.float32 and bool(jnp.isfinite(got).all())
    err = float(jnp.abs(got - want).max() / jnp.abs(want).max())
    assert err < 5e-2, err


def _frames_independent(apply, params, inputs) -> bool:
    """Changing frame 0 leaves the other frames' outputs unchanged."""
    x, t, context = inputs
    out = apply(params, x, t, context)
    changed = apply(params, x.at[:, 0].add(1.0), t, context)
    assert not np.allclose(out[:, 0], changed[:, 0], atol=1e-3)
    return np.allclose(out[:, 1:], changed[:, 1:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", [TemporalConvLayer(num_groups=4),
                                   TemporalTransformer(num_heads=2, head_dim=4, num_groups=4)],
                         ids=["conv", "transformer"])
def test_temporal_layers_are_identity_at_init(layer):
    x = jax.random.normal(jax.random.key(0), (2, 3, 4, 4, 8))
    y, _ = layer.init_with_output(jax.random.key(1), x)
    np.testing.assert_array_equal(y, x)


def test_frames_are_independent_without_temporal_layers(model, inputs, apply):
    """Random weights mix frames; with the temporal layers zeroed (the identity, as at init)
    every frame is processed alone."""
    x, t, context = inputs
    random = random_params(model)
    assert not _frames_independent(apply, random, inputs)
    zeroed = zero_temporal(random)
    assert _frames_independent(apply, zeroed, inputs)
    # Without temporal mixing a permutation of the frames permutes the outputs.
    perm = np.array([2, 0, 1])
    np.testing.assert_allclose(apply(zeroed, x[:, perm], t, context),
                               apply(zeroed, x, t, context)[:, perm], rtol=1e-5, atol=1e-5)


def test_temporal_parameters_are_labelled(model):
    flat = param_paths.flatten(random_params(model)["params"])
    temporal = {k.split("/")[1] if "/" in k else k for k in flat if param_paths.is_temporal(k)}
    assert "temporal_transformer_in" in {k.split("/")[0] for k in flat}
    assert {"temporal_convs_0", "temporal_attentions_0"} <= temporal
    assert not any(param_paths.is_temporal(k) for k in flat if "/resnets_" in k
                   and "temporal" not in k)


def test_parameter_count():
    # diffusers' UNet3DConditionModel of the same config has 1,328,900 parameters.
    assert count_params(UNet3DCondition(**TINY)) == 1_328_900


@pytest.mark.parametrize("x_shape, t_shape, ctx_shape, match", [
    ((2, 4, 4, 4), (2,), (2, 5, 32), r"latents \(b, t, h, w, 4\)"),
    ((2, 3, 4, 4, 3), (2,), (2, 5, 32), r"latents \(b, t, h, w, 4\)"),
    ((2, 3, 4, 4, 4), (3,), (2, 5, 32), r"t must be \(b,\)"),
    ((2, 3, 4, 4, 4), (2,), (2, 5, 16), r"context must be \(2, L, 32\)"),
    ((2, 3, 4, 4, 4), (2,), (1, 5, 32), r"context must be \(2, L, 32\)"),
    ((2, 3, 4, 4, 4), (2,), None, r"context must be .* got None"),
])
def test_bad_inputs_are_errors(model, x_shape, t_shape, ctx_shape, match):
    ctx = None if ctx_shape is None else jnp.zeros(ctx_shape)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x_shape),
                                          jnp.zeros(t_shape), ctx))


@pytest.mark.parametrize("overrides, match", [
    (dict(up_block_types=("UpBlock3D",)), "one entry per block_out_channels"),
    (dict(down_block_types=("CrossAttnDownBlock2D", "DownBlock3D")), "not supported"),
    (dict(norm_num_groups=12), "norm_num_groups=12 does not divide"),
    (dict(attention_head_dim=48), "attention_head_dim=48 is wider"),
])
def test_bad_configs_are_errors(overrides, match):
    model = UNet3DCondition(**{**TINY, **overrides})
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs(model)))


def test_nearest_indices_match_torch_interpolate():
    # torch.nn.functional.interpolate(mode="nearest") source rows, for sizes it gives 3 -> 5,
    # 2 -> 4 and 4 -> 7.
    np.testing.assert_array_equal(nearest_indices(3, 5), [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(nearest_indices(2, 4), [0, 0, 1, 1])
    np.testing.assert_array_equal(nearest_indices(4, 7), [0, 0, 1, 1, 2, 2, 3])


def test_remat_policies_change_memory_not_results(model, inputs):
    params = random_params(model)
    assert_same_value_and_grads(model, model.clone(remat="full"), params, *inputs, atol=1e-5)
    with pytest.raises(ValueError, match="unknown remat policy 'some'"):
        model.clone(remat="some").init(jax.random.key(0), *example_inputs(model))
