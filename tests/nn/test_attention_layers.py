"""Attention core, divided space-time attention blocks and timestep embeddings."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.nn import (
    Attention,
    RelativePositionBias,
    SpatialAttention,
    TemporalAttention,
    TimestepEmbedding,
    attention_core,
    dot_product_attention,
    relative_position_buckets,
    timestep_embedding,
)


def _rand(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


def _randomise(params, seed=1):
    leaves, tree = jax.tree.flatten(nn.meta.unbox(params))
    rng = np.random.default_rng(seed)  # numpy: no per-shape compile
    new = [jnp.asarray(0.3 * rng.standard_normal(v.shape), jnp.float32) for v in leaves]
    return tree.unflatten(new)


@pytest.mark.parametrize("implementation", [None, "xla", "einsum"])
def test_dot_product_attention_matches_numpy(implementation):
    q, k, v = _rand((2, 3, 2, 4), 0), _rand((2, 5, 2, 4), 1), _rand((2, 5, 2, 4), 2)
    bias = _rand((2, 3, 5), 3)
    mask = jnp.array([[True, True, False, True, False]] * 2)[:, None, None, :]
    y = dot_product_attention(q, k, v, bias=bias, mask=mask, implementation=implementation)
    logits = np.einsum("bnhd,bmhd->bhnm", q, k) / 2.0 + np.asarray(bias)[None]
    logits = np.where(np.asarray(mask), logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(y, np.einsum("bhnm,bmhd->bnhd", probs, v), atol=1e-5)


@pytest.mark.parametrize("blocks", [1, 4])
@pytest.mark.parametrize("row_bias", [True, False])
def test_blocked_attention_matches_autodiff_in_value_and_gradient(monkeypatch, row_bias, blocks):
    """The hand-written backward pass against autodiff of jax.nn.dot_product_attention: one
    block, or blocks of 2 query rows (7 rows: a short last block); bias per row or broadcast
    (its gradient too); a mask with one query row whose keys are all masked."""
    q, k, v = _rand((2, 7, 2, 4), 0), _rand((2, 5, 2, 4), 1), _rand((2, 5, 2, 4), 2)
    bias = _rand((1, 2, 7 if row_bias else 1, 5), 3)
    mask = jnp.ones((2, 1, 7, 5), bool).at[:, :, :, 2].set(False).at[1, :, 3].set(False)

    def loss(implementation, q, k, v, bias):
        return jnp.sum(jnp.sin(attention_core.local_attention(q, k, v, bias, mask, implementation)))

    args = (q, k, v, bias)
    want = jax.value_and_grad(loss, argnums=(1, 2, 3, 4))("xla", *args)
    if blocks > 1:
        monkeypatch.setattr(attention_core, "MIN_BLOCK_ROWS", 2)
        monkeypatch.setattr(attention_core, "SCORE_BLOCK_BYTES", 1)
    assert len(attention_core._row_blocks(2, 2, 7, 5)) == blocks
    got = jax.value_and_grad(loss, argnums=(1, 2, 3, 4))("einsum", *args)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_cross_attention_ignores_masked_context():
    x, ctx = _rand((2, 3, 8)), _rand((2, 4, 6), 1)
    cmask = jnp.array([[True, True, False, False], [True, False, True, False]])
    attn = Attention(2, 4)
    p = attn.init(jax.random.key(0), x, ctx, context_mask=cmask)
    y = attn.apply(p, x, ctx, context_mask=cmask)
    ctx2 = jnp.where(cmask[..., None], ctx, 100.0)
    np.testing.assert_allclose(attn.apply(p, x, ctx2, context_mask=cmask), y, atol=1e-5)
    assert y.shape == (2, 3, 8)
    assert p["params"]["to_q"]["kernel"].names == ("embed", "heads", "kv")


@pytest.fixture(scope="module")
def temporal():
    """A TemporalAttention with randomised (non-zero output) params, built for t=4."""
    x = _rand((2, 4, 3, 2, 8))
    block = TemporalAttention(2, 4)
    params = block.init(jax.random.key(0), x)
    return block, params, _randomise(params)


@pytest.mark.parametrize("shape", [(2, 4, 3, 2, 8), (1, 7, 2, 2, 8), (3, 1, 1, 1, 8)])
def test_temporal_attention_identity_at_init_any_t(temporal, shape):
    block, params, _ = temporal
    x = _rand(shape, 5)
    np.testing.assert_allclose(block.apply(params, x), x, atol=1e-6)


def test_temporal_attention_mixes_video_frames_not_image_frames(temporal):
    block, _, params = temporal
    x = _rand((2, 4, 3, 2, 8), 3)
    image_frames = jnp.array([[False, False, True, False], [False, True, True, False]])
    y = block.apply(params, x, image_frames)
    # Perturb frame 3 (a video frame in both examples).
    d = block.apply(params, x.at[:, 3].add(_rand((2, 3, 2, 8), 7)), image_frames) - y
    diff = np.abs(np.asarray(d)).max(axis=(2, 3, 4))  # (b, t)
    assert diff[0, 0] > 1e-3 and diff[0, 1] > 1e-3  # video frames see frame 3
    assert diff[1, 0] > 1e-3
    assert diff[0, 2] == 0.0 and diff[1, 1] == 0.0 and diff[1, 2] == 0.0  # images do not
    # An image frame's output depends on nothing but itself.
    others = x.at[:, jnp.array([0, 1, 3])].set(_rand((2, 3, 3, 2, 8), 9))
    y_other = block.apply(params, others, image_frames)
    np.testing.assert_allclose(y_other[0, 2], y[0, 2], atol=1e-6)
    # Without the mask every frame mixes.
    d_all = block.apply(params, x.at[:, 3].add(_rand((2, 3, 2, 8), 7))) - block.apply(params, x)
    assert float(jnp.abs(d_all[0, 2]).max()) > 1e-3


def test_relative_position_bias_generalises_to_new_lengths(temporal):
    block, _, params = temporal
    buckets = relative_position_buckets(9, 9, 32, 64)
    np.testing.assert_array_equal(relative_position_buckets(4, 4, 32, 64), buckets[:4, :4])
    assert len(set(buckets[0])) == 9  # short distances get distinct buckets
    # The bias module built for 4 frames gives a Toeplitz bias for 9 frames from its table.
    rel = RelativePositionBias(2)
    rel_params = _randomise(rel.init(jax.random.key(0), 4))
    bias = rel.apply(rel_params, 9)
    table = rel_params["params"]["embedding"]
    np.testing.assert_allclose(bias, np.transpose(np.asarray(table)[buckets], (2, 0, 1)))
    np.testing.assert_allclose(bias[:, 1:, 1:], bias[:, :-1, :-1])
    assert float(jnp.abs(bias[:, 0, 1] - bias[:, 1, 0]).max()) > 1e-4  # direction matters
    # The temporal block (built for t=4) runs on 9 frames and mixes them.
    x = _rand((1, 9, 2, 2, 8), 4)
    y = block.apply(params, x)
    d = block.apply(params, x.at[:, 8].add(_rand((1, 2, 2, 8), 8))) - y
    assert y.shape == x.shape and float(jnp.abs(d[:, 0]).max()) > 1e-3


def test_spatial_attention_is_per_frame():
    x = _rand((2, 3, 4, 4, 8))
    block = SpatialAttention(2, 4, num_groups=2)
    p = _randomise(block.init(jax.random.key(0), x))
    d = block.apply(p, x.at[:, 1].add(1.0)) - block.apply(p, x)
    assert float(jnp.abs(d[:, 1]).max()) > 1e-3
    assert float(jnp.abs(d[:, 0]).max()) == 0.0 and float(jnp.abs(d[:, 2]).max()) == 0.0


def test_timestep_embedding_scales_by_1000():
    t = jnp.array([0.0, 0.25, 1.0])
    emb = timestep_embedding(t, 8)
    half = 4
    freqs = np.exp(-np.log(10_000.0) * np.arange(half) / half)
    args = np.asarray(t)[:, None] * 1000.0 * freqs
    np.testing.assert_allclose(emb, np.concatenate([np.cos(args), np.sin(args)], 1), atol=1e-4)
    assert timestep_embedding(t, 7).shape == (3, 7)
    mlp = TimestepEmbedding(16, frequency_dim=8)
    p = mlp.init(jax.random.key(0), t)
    out = mlp.apply(p, t)
    assert out.shape == (3, 16)
    assert float(jnp.abs(out[0] - out[1]).max()) > 1e-4
