"""Latte: the paper's parameter counts, shapes, variants, scan stacking, remat, bad inputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.models.latte import (
    VARIANTS,
    LatteTransformer,
    count_params,
    split_learned_sigma,
)
from vdm_jax.nn.embeddings import apply_rope

# Latte paper Table 1 (256x256 videos = 32x32x4 latents, patch 2, learned sigma), millions.
PAPER = {"S/2": 32.48, "XL/2": 673.68}
TINY = dict(hidden_size=16, num_layers=2, num_heads=2, sample_size=8)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_parameter_counts_reproduce_the_paper(name):
    assert round(count_params(LatteTransformer(**VARIANTS[name])) / 1e6, 2) == PAPER[name]


def test_class_and_caption_conditioning_add_exactly_their_embeddings():
    base = count_params(LatteTransformer(**VARIANTS["S/2"]))
    ucf = count_params(LatteTransformer(**VARIANTS["S/2"], num_classes=101))
    assert ucf - base == 102 * 384  # 101 classes + the null class


def _randomise(params, key=0, scale=0.3):
    """Random values everywhere (zero-initialised output layers would hide bugs)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(key), len(leaves))
    return jax.tree.unflatten(tree, [scale * jax.random.normal(k, x.shape)
                                     for k, x in zip(keys, leaves, strict=True)])


def _jit_apply(model):
    """Jitted apply (eager Linen calls are several times slower than compiling once here)."""
    return jax.jit(model.apply, static_argnames=("enable_temporal",))


def _setup(seed=0, frames=4, size=8, **overrides):
    model = LatteTransformer(**{**TINY, **overrides})
    x = jax.random.normal(jax.random.key(seed), (2, frames, size, size, 4))
    t = jnp.array([0.1, 0.9])
    kwargs = {}
    if model.caption_channels:
        kwargs["context"] = jax.random.normal(jax.random.key(seed + 1),
                                              (2, 3, model.caption_channels))
    if model.num_classes:
        kwargs["class_labels"] = jnp.array([1, model.num_classes])
    params = jax.jit(model.init)(jax.random.key(seed + 2), x, t, **kwargs)
    return model, _randomise(nn.meta.unbox(params)), (x, t), kwargs


@pytest.fixture(scope="module")
def v1():
    return _setup(caption_channels=6, adaln="single", activation="geglu")


def test_shapes_and_learned_sigma_split(v1):
    model, params, args, kwargs = v1
    out = _jit_apply(model)(params, *args, **kwargs)
    assert out.shape == (2, 4, 8, 8, 8) and out.dtype == jnp.float32
    eps, var = split_learned_sigma(out, 4)
    assert eps.shape == var.shape == (2, 4, 8, 8, 4)
    assert bool(jnp.isfinite(out).all())


def test_scan_stacks_layers_and_every_parameter_has_logical_names():
    model = LatteTransformer(**TINY, caption_channels=6)
    args = (jnp.zeros((1, 2, 8, 8, 4)), jnp.zeros((1,)))
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), *args,
                                              context=jnp.zeros((1, 3, 6))))["params"]
    kernel = boxed["blocks"]["spatial"]["attn2"]["to_q"]["kernel"]
    assert kernel.value.shape == (2, 16, 2, 8)
    assert kernel.names == ("layers", "embed", "heads", "kv")
    assert "attn2" not in boxed["blocks"]["temporal"]  # cross-attention only in spatial blocks
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(isinstance(x, nn.Partitioned) and len(x.names) == x.value.ndim for x in leaves)


def test_context_mask_hides_padding_tokens(v1):
    model, params, (x, t), kwargs = v1
    ctx, apply = kwargs["context"], _jit_apply(model)
    mask = jnp.array([[True, True, False], [True, False, False]])
    garbage = ctx.at[0, 2].set(9.0).at[1, 1:].set(-9.0)
    a, b = apply(params, x, t, ctx, mask), apply(params, x, t, garbage, mask)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert float(jnp.abs(a - apply(params, x, t, ctx, jnp.ones((2, 3), bool))).max()) > 1e-3


def test_variants_share_parameters_and_agree_where_they_must():
    model, params, args, _ = _setup(seed=3)
    late = model.clone(variant=2)
    tree = jax.eval_shape(lambda: late.init(jax.random.key(0), *args))
    assert jax.tree.structure(nn.meta.unbox(tree)) == jax.tree.structure(params)
    run1, run2 = _jit_apply(model), _jit_apply(late)
    assert float(jnp.abs(run1(params, *args) - run2(params, *args)).max()) > 1e-3
    # Without temporal blocks both are the same stack of spatial blocks.
    np.testing.assert_allclose(run1(params, *args, enable_temporal=False),
                               run2(params, *args, enable_temporal=False), atol=1e-5)


def test_without_temporal_blocks_frames_are_independent():
    model, params, (x, t), _ = _setup(seed=5)
    apply, perm = _jit_apply(model), jnp.array([2, 0, 3, 1])
    y = apply(params, x, t, enable_temporal=False)
    np.testing.assert_allclose(y[:, perm], apply(params, x[:, perm], t, enable_temporal=False),
                               atol=1e-5)
    # With them, frame order matters (temporal positions).
    assert float(jnp.abs(apply(params, x[:, perm], t) - apply(params, x, t)[:, perm]).max()) > 1e-3


def test_tubelets_and_class_conditioning():
    model, params, args, kwargs = _setup(seed=6, patch_size_t=2, num_classes=5, learn_sigma=False)
    assert params["params"]["patch_embed"]["kernel"].shape == (2, 2, 2, 4, 16)
    apply = _jit_apply(model)
    out = apply(params, *args, **kwargs)
    assert out.shape == (2, 4, 8, 8, 4)
    other = apply(params, *args, class_labels=jnp.array([2, 3]))
    assert float(jnp.abs(out - other).max()) > 1e-3


def test_time_convention_maps_unit_time_onto_diffusers_steps():
    model, params, (x, _), _ = _setup(seed=7)
    k = jnp.array([0.0, 999.0])
    raw = _jit_apply(model.clone(time_scale=1.0, time_shift=0.0))(params, x, k)
    np.testing.assert_allclose(_jit_apply(model)(params, x, (k + 1) / 1000), raw, atol=2e-3)


@pytest.mark.parametrize("policy,variant", [("full", 1), ("dots_saveable", 2)])
def test_remat_gives_the_same_outputs_and_gradients(policy, variant):
    model, params, args, kwargs = _setup(seed=8, caption_channels=6, variant=variant)

    def grads(m):
        loss = lambda p: jnp.mean(m.apply(p, *args, **kwargs) ** 2)  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    (v0, g0), (v1, g1) = grads(model), grads(model.clone(remat=policy))
    np.testing.assert_allclose(v0, v1, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bfloat16_runs():
    model, params, args, _ = _setup(seed=9, dtype=jnp.bfloat16)
    out = _jit_apply(model)(params, *args)
    assert out.dtype == jnp.float32 and bool(jnp.isfinite(out).all())


def test_bad_inputs_raise_clear_errors(v1):
    model, params, (x, t), kwargs = v1
    with pytest.raises(ValueError, match="multiples of patch_size=2"):
        model.apply(params, x[:, :, :7], t, **kwargs)
    with pytest.raises(ValueError, match="patch_size_t=2"):
        model.clone(patch_size_t=2).apply(params, x[:, :3], t, **kwargs)
    with pytest.raises(ValueError, match=r"\(b, t, h, w, 4\)"):
        model.apply(params, x[..., :3], t, **kwargs)
    with pytest.raises(ValueError, match="context"):
        model.apply(params, x, t)
    with pytest.raises(ValueError, match="context_mask"):
        model.apply(params, x, t, kwargs["context"], jnp.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"t must be \(b,\)"):
        model.apply(params, x, jnp.zeros((3,)), **kwargs)
    with pytest.raises(ValueError, match="variant=5"):
        model.clone(variant=5).apply(params, x, t, **kwargs)
    with pytest.raises(ValueError, match="num_heads=3 must be even"):
        LatteTransformer(hidden_size=12, num_heads=3, variant=4).init(jax.random.key(0), x, t)
    with pytest.raises(ValueError, match="even head size"):
        LatteTransformer(hidden_size=6, num_heads=2, temporal_pos="rope").init(
            jax.random.key(0), x, t)
    with pytest.raises(ValueError, match="no adaLN"):
        model.clone(conditioning="tokens").apply(params, x, t, **kwargs)
    with pytest.raises(ValueError, match="conditioning="):
        model.clone(conditioning="concat").apply(params, x, t, **kwargs)
    with pytest.raises(ValueError, match="remat"):
        model.clone(remat="sometimes").apply(params, x, t, **kwargs)
    with pytest.raises(ValueError, match="does not divide"):
        LatteTransformer(hidden_size=10, num_heads=3).init(jax.random.key(0), x, t)


RULES = [("act_batch", "data"), ("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"),
         ("vocab", "tensor")]


def test_sharded_forward_equals_unsharded():
    model, params, args, kwargs = _setup(seed=10, caption_channels=6)
    want = _jit_apply(model)(params, *args, **kwargs)
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 3)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
    specs = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, RULES)
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        got = _jit_apply(model)(jax.device_put(params, specs), *args, **kwargs)
    np.testing.assert_allclose(got, want, atol=1e-4)


# --- Variants 3 and 4, rotary temporal positions, timestep tokens ---------------------------


def _loss_and_grads(model, params, args, kwargs):
    loss = lambda p: jnp.mean(model.apply(p, *args, **kwargs) ** 2)  # noqa: E731
    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("overrides", [
    dict(variant=3),
    dict(variant=4, adaln="single", temporal_pos="rope"),
    dict(variant=3, conditioning="tokens", temporal_pos="rope", num_classes=3),
    dict(variant=4, conditioning="tokens", remat="full"),
    dict(variant=1, conditioning="tokens", temporal_pos="rope"),
])
def test_new_variants_run_with_captions_and_have_finite_gradients(overrides):
    model, params, args, kwargs = _setup(seed=11, caption_channels=6, num_layers=1, **overrides)
    loss, grads = _loss_and_grads(model, params, args, kwargs)
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("variant", [3, 4])
def test_factorised_variants_mix_frames_only_through_temporal_attention(variant):
    model, params, (x, t), kwargs = _setup(seed=12, variant=variant, num_layers=1,
                                           caption_channels=6, temporal_pos="rope")
    apply, x2 = _jit_apply(model), x.at[:, 0].add(1.0)
    for temporal in (False, True):
        a = apply(params, x, t, **kwargs, enable_temporal=temporal)
        b = apply(params, x2, t, **kwargs, enable_temporal=temporal)
        assert float(jnp.abs(a[:, 0] - b[:, 0]).max()) > 1e-3
        other = float(jnp.abs(a[:, 1:] - b[:, 1:]).max())
        assert (other > 1e-3) if temporal else (other < 1e-5)


def test_rotary_logits_depend_only_on_the_frame_offset():
    q, k = jax.random.normal(jax.random.key(0), (2, 1, 6, 2, 8))
    pos = np.arange(6)

    def logits(shift):
        qr, kr = apply_rope(q, pos + shift), apply_rope(k, pos + shift)
        return jnp.einsum("bnhd,bmhd->bhnm", qr, kr)

    base = logits(0)
    np.testing.assert_allclose(logits(5), base, atol=1e-4)
    np.testing.assert_allclose(logits(-3.0), base, atol=1e-4)
    assert float(jnp.abs(base - jnp.einsum("bnhd,bmhd->bhnm", q, k)).max()) > 1e-2  # it rotates
    np.testing.assert_allclose(apply_rope(q, np.zeros(6)), q, atol=1e-6)  # position 0: identity


def test_rope_adds_no_parameters_and_changes_the_output():
    model, params, args, _ = _setup(seed=13, num_layers=1)
    rope = model.clone(temporal_pos="rope")
    tree = jax.eval_shape(lambda: rope.init(jax.random.key(0), *args))
    assert jax.tree.structure(nn.meta.unbox(tree)) == jax.tree.structure(params)
    y_abs = _jit_apply(model)(params, *args)
    y_rope = _jit_apply(rope)(params, *args)
    y_none = _jit_apply(model.clone(temporal_pos="none"))(params, *args)
    assert float(jnp.abs(y_rope - y_none).max()) > 1e-3
    assert float(jnp.abs(y_rope - y_abs).max()) > 1e-3


@pytest.mark.parametrize("variant", [1, 3, 4])
def test_token_conditioning_depends_on_time_and_has_no_adaln(variant):
    model, params, (x, t), _ = _setup(seed=14, variant=variant, num_layers=1,
                                      conditioning="tokens")
    names = {"/".join(str(getattr(k, "key", k)) for k in path)
             for path, _ in jax.tree_util.tree_leaves_with_path(params)}
    assert not any("adaln" in n or "scale_shift_table" in n for n in names)
    apply = _jit_apply(model)
    assert float(jnp.abs(apply(params, x, t) - apply(params, x, t[::-1])).max()) > 1e-3


def _size(tree):
    return sum(a.size for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("adaln", ["block", "single"])
def test_factorised_variants_parameter_structure(adaln):
    """Variant 3 (L blocks) = variant 1 (L pairs) minus one MLP and one adaLN modulation per
    pair (the temporal block's); variant 4 (L blocks) = exactly variant 1's spatial blocks."""
    kw = dict(**TINY, caption_channels=6, num_classes=3, adaln=adaln, activation="geglu")
    args = (jnp.zeros((1, 2, 8, 8, 4)), jnp.zeros((1,)))
    extra = dict(context=jnp.zeros((1, 3, 6)), class_labels=jnp.zeros((1,), jnp.int32))
    shapes = lambda **o: nn.meta.unbox(jax.eval_shape(  # noqa: E731
        lambda: LatteTransformer(**kw, **o).init(jax.random.key(0), *args, **extra))["params"])
    p1, p3, p4 = shapes(variant=1), shapes(variant=3), shapes(variant=4)
    temporal = p1["blocks"]["temporal"]
    adaln_params = temporal["adaln_modulation" if adaln == "block" else "scale_shift_table"]
    assert _size(p1) - _size(p3) == _size(temporal["ff"]) + _size(adaln_params)
    assert _size(temporal["ff"]) > 0 and jax.tree.leaves(temporal["ff"])[0].shape[0] == 2
    # The spatial and temporal attentions of variant 3 are variant 1's, block for block.
    same = lambda a, b: jax.tree.map(lambda u, v: u.shape == v.shape, a, b)  # noqa: E731
    assert all(jax.tree.leaves(same(p3["blocks"]["attn1"], p1["blocks"]["spatial"]["attn1"])))
    assert all(jax.tree.leaves(same(p3["blocks"]["attn_temporal"], temporal["attn1"])))
    # Variant 4: the block is variant 1's spatial block, shape for shape; the rest is shared.
    assert jax.tree.structure(p4["blocks"]) == jax.tree.structure(p1["blocks"]["spatial"])
    assert all(jax.tree.leaves(same(p4["blocks"], p1["blocks"]["spatial"])))
    assert _size(p1) - _size(p4) == _size(temporal)
