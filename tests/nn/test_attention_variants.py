"""Video self-attention variants: each grouped step equals dense attention with its mask."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from einops import rearrange

from vdm_jax.nn.attention import (
    ATTENTION_VARIANTS,
    Attention,
    AttentionStep,
    VideoSelfAttention,
    group_tokens,
    step_attention,
    step_mask,
    ungroup_tokens,
    variant_steps,
)

SHAPE = (2, 4, 4, 6, 8)  # b, t, h, w, c: every split by 2 divides
STEPS = [AttentionStep(a) for a in ("space", "time", "joint", "width", "height", "local",
                                    "global")]
STEPS += [AttentionStep(a, causal=True) for a in ("time", "width", "height")]


def _video(seed=0, shape=SHAPE):
    return jax.random.normal(jax.random.key(seed), shape)


def _dense(attention, params, x, mask):
    """Attention over all t*h*w tokens of each clip with an explicit (N, N) mask."""
    b, t, h, w, c = x.shape
    tokens = rearrange(x, "b t h w c -> b (t h w) c")
    y = attention.apply(params, tokens, mask=mask)
    return rearrange(y, "b (t h w) c -> b t h w c", t=t, h=h)


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.axis + ("_causal" if s.causal else ""))
def test_step_equals_dense_attention_with_its_mask(step):
    x = _video()
    attention = Attention(num_heads=2, head_dim=4)
    params = attention.init(jax.random.key(1), x[:, 0].reshape(2, -1, 8))
    grouped = step_attention(x, step, attention.bind(params))
    mask = step_mask(step, *SHAPE[1:4])
    dense = _dense(attention, params, x, mask)
    np.testing.assert_allclose(grouped, dense, rtol=1e-5, atol=1e-5)
    # The mask is not trivial (except joint): dense attention without it differs.
    if step.axis != "joint":
        assert not np.allclose(grouped, _dense(attention, params, x, None), atol=1e-3)


def test_step_masks_have_the_documented_structure():
    t, h, w = SHAPE[1:4]
    n = t * h * w
    assert step_mask(AttentionStep("space"), t, h, w).sum() == n * h * w
    assert step_mask(AttentionStep("time"), t, h, w).sum() == n * t
    assert step_mask(AttentionStep("local"), t, h, w).sum() == n * t * (h // 2) * (w // 2)
    assert step_mask(AttentionStep("global"), t, h, w).sum() == n * (n // 8)
    causal = step_mask(AttentionStep("time", causal=True), t, h, w)
    assert causal.sum() == h * w * t * (t + 1) // 2
    # The raster index of (t=1, y=0, x=0) may attend frame 0 but not frame 2 at the same pixel.
    i = 1 * h * w
    assert causal[i, 0] and not causal[i, 2 * h * w]


@pytest.mark.parametrize("step", STEPS[:7], ids=lambda s: s.axis)
def test_group_then_ungroup_is_identity(step):
    x = _video(3)
    np.testing.assert_array_equal(ungroup_tokens(group_tokens(x, step), step, x.shape), x)


def _reference_block(module: VideoSelfAttention, params, x):
    """The variant's steps as dense masked attentions with the module's own weights."""
    p = params["params"]
    steps = variant_steps(module.variant, module.layer)
    for i, step in enumerate(steps):
        y = nn.LayerNorm().apply({"params": p[f"norm_{step.axis}"]}, x)
        attention = Attention(module.num_heads, module.head_dim)
        y = _dense(attention, {"params": p[f"attn_{step.axis}"]}, y,
                   step_mask(step, *x.shape[1:4]))
        if module.step_projection and i < len(steps) - 1:
            y = nn.Dense(x.shape[-1]).apply({"params": p[f"fc_{step.axis}"]}, y)
        x = x + y
    return x


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
@pytest.mark.parametrize("layer", [0, 1])
def test_video_self_attention_matches_dense_reference(variant, layer):
    x = _video(4)
    module = VideoSelfAttention(variant, num_heads=2, head_dim=4, layer=layer,
                                step_projection=True)
    params = nn.meta.unbox(module.init(jax.random.key(5), x))
    np.testing.assert_allclose(module.apply(params, x), _reference_block(module, params, x),
                               rtol=1e-5, atol=1e-5)


def test_variants_have_the_timesformer_number_of_attentions():
    counts = {v: len(variant_steps(v)) for v in ATTENTION_VARIANTS}
    assert counts == {"space": 1, "joint": 1, "divided": 2, "sparse_local_global": 2,
                      "axial": 3, "godiva": 1}
    assert [variant_steps("godiva", i)[0].axis for i in range(4)] == [
        "time", "width", "height", "time"]
    assert all(variant_steps("godiva", i)[0].causal for i in range(3))
    assert variant_steps("divided")[0].axis == "time"  # TimeSformer: temporal first


def test_zero_init_out_is_identity():
    x = _video(6)
    module = VideoSelfAttention("axial", num_heads=2, head_dim=4, zero_init_out=True)
    params = module.init(jax.random.key(0), x)
    np.testing.assert_array_equal(module.apply(params, x), x)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="unknown attention variant"):
        variant_steps("spacetime")
    with pytest.raises(ValueError, match="not even"):
        group_tokens(jnp.zeros((1, 3, 4, 4, 2)), AttentionStep("global"))
    with pytest.raises(ValueError, match="causal attention is defined"):
        step_mask(AttentionStep("space", causal=True), 2, 2, 2)


def test_extra_token_joins_every_group():
    x, cls = _video(7), jax.random.normal(jax.random.key(8), (2, 1, 8))
    attention = Attention(num_heads=2, head_dim=4)
    params = attention.init(jax.random.key(1), cls)
    # Joint: one group, so the token simply joins the clip's sequence.
    video, out_cls = step_attention(x, AttentionStep("joint"), attention.bind(params), cls)
    full = attention.apply(params, jnp.concatenate(
        [cls, rearrange(x, "b t h w c -> b (t h w) c")], axis=1))
    np.testing.assert_allclose(out_cls, full[:, :1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rearrange(video, "b t h w c -> b (t h w) c"), full[:, 1:],
                               rtol=1e-5, atol=1e-5)
    # Space: the token joins each frame; its output is the mean over frames.
    _, out_cls = step_attention(x, AttentionStep("space"), attention.bind(params), cls)
    per_frame = [attention.apply(params, jnp.concatenate(
        [cls, rearrange(x[:, i], "b h w c -> b (h w) c")], axis=1))[:, :1] for i in range(4)]
    np.testing.assert_allclose(out_cls, np.mean(per_frame, axis=0), rtol=1e-5, atol=1e-5)
