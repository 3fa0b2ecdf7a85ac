"""Latte's joint image-video mode: image frames are independent images, video frames ignore them."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.models.latte import LatteTransformer

TINY = dict(hidden_size=16, num_layers=2, num_heads=2, sample_size=8, caption_channels=6)
# Example 0 has its images interleaved, example 1 appended (as the trainer does).
IMAGES = np.array([[False, True, False, False, True], [False, False, False, True, True]])
VIDEO_INDEX, IMAGE_INDEX = np.array([[0, 2, 3], [0, 1, 2]]), np.array([[1, 4], [3, 4]])

CASES = {
    "v1": dict(variant=1),
    "v2_rope": dict(variant=2, temporal_pos="rope", remat="full"),
    "v3_rope_tokens": dict(variant=3, temporal_pos="rope", conditioning="tokens"),
    "v4_single": dict(variant=4, adaln="single"),
    "v4_rope_tokens": dict(variant=4, temporal_pos="rope", conditioning="tokens"),
}


def _randomise(params, scale=0.3):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(tree, [scale * jax.random.normal(k, a.shape)
                                     for k, a in zip(keys, leaves, strict=True)])


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    model = LatteTransformer(**TINY, **CASES[request.param])
    x = jax.random.normal(jax.random.key(0), (2, 5, 4, 4, 4))
    t, ctx = jnp.array([0.2, 0.7]), jax.random.normal(jax.random.key(2), (2, 3, 6))
    params = _randomise(nn.meta.unbox(jax.jit(model.init)(jax.random.key(3), x, t, ctx)))
    apply = jax.jit(model.apply, static_argnames=("enable_temporal",))
    run = lambda video, images=None, **kw: apply(params, video, t, ctx,  # noqa: E731
                                                 image_frames=images, **kw)
    return model, params, x, run


def _close(got, want, tol):
    """Equal up to ``tol`` times the largest output (outputs of random weights reach ~10)."""
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * float(jnp.abs(want).max()))


def _take(a, index):
    return jnp.take_along_axis(a, index[:, :, None, None, None], axis=1)


def test_no_image_frames_equals_the_plain_call(case):
    _, _, x, run = case
    _close(run(x, np.zeros((2, 5), bool)), run(x), 1e-6)


def test_image_and_video_frames_do_not_see_each_other(case):
    _, _, x, run = case
    base = run(x, IMAGES)
    video, image = x.at[:, 0].add(1.0), x.at[0, 1].add(1.0).at[1, 3].add(1.0)
    moved = run(video, IMAGES) - base
    assert float(jnp.abs(moved[~IMAGES]).max()) > 1e-3  # video frames see each other
    np.testing.assert_allclose(moved[IMAGES], 0.0, atol=1e-6)
    moved = run(image, IMAGES) - base
    changed = np.zeros((2, 5), bool)
    changed[0, 1] = changed[1, 3] = True
    assert float(jnp.abs(moved[changed]).max()) > 1e-3
    np.testing.assert_allclose(moved[~changed], 0.0, atol=1e-6)


def test_frames_equal_the_model_on_the_video_and_on_each_image_alone(case):
    _, _, x, run = case
    out = run(x, IMAGES)
    _close(_take(out, VIDEO_INDEX), run(_take(x, VIDEO_INDEX)), 1e-6)
    images, want = _take(x, IMAGE_INDEX), _take(out, IMAGE_INDEX)
    for k in range(images.shape[1]):
        alone = run(images[:, k:k + 1], enable_temporal=False)
        _close(want[:, k:k + 1], alone, 1e-6)


def _temporal_grads(variant, blocks):
    """The gradients of the parameters only temporal attention uses."""
    if variant in (1, 2):
        return blocks["temporal"]
    if variant == 3:
        return blocks["attn_temporal"]
    return {k: blocks["attn1"][k]["kernel"][:, :, 1] for k in ("to_q", "to_k", "to_v")}


def test_only_video_frames_train_the_temporal_parameters(case):
    model, params, x, _ = case
    t, ctx = jnp.array([0.2, 0.7]), jnp.ones((2, 3, 6))

    @jax.jit
    def grads(where):
        def loss(p):
            out = model.apply(p, x, t, ctx, image_frames=IMAGES)
            return jnp.sum(jnp.where(where[:, :, None, None, None], out, 0.0) ** 2)

        return _temporal_grads(model.variant, jax.grad(loss)(params)["params"]["blocks"])

    from_images, from_video = grads(IMAGES), grads(~IMAGES)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(from_images))
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(from_video))
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(from_video)) > 1e-4


def test_bad_image_frames_raise_clear_errors():
    model = LatteTransformer(**TINY, patch_size_t=2)
    x, t, ctx = jnp.zeros((1, 4, 4, 4, 4)), jnp.zeros((1,)), jnp.zeros((1, 3, 6))
    with pytest.raises(ValueError, match="tubelet"):
        model.init(jax.random.key(0), x, t, ctx, image_frames=jnp.zeros((1, 4), bool))
    with pytest.raises(ValueError, match=r"image_frames must be \(b, t\)"):
        model.clone(patch_size_t=1).init(jax.random.key(0), x, t, ctx,
                                         image_frames=jnp.zeros((1, 3), bool))
