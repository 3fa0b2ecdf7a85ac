"""Classifier-free guidance, conditioning dropout and VDM reconstruction guidance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax import diffusion as D


def rbg_key(seed):
    """Any key type works; "rbg" keys compile much faster than threefry on CPU."""
    return jax.random.key(seed, impl="rbg")


# ----------------------------------------------------------------------------- classifier-free


def _cond_model(calls):
    def model_fn_cond(z, t, cond):
        calls.append(z.shape[0])
        scale = D.expand_like(cond["scale"], z)
        return z * scale + D.expand_like(t, z) + cond["bias"][:, None, None]
    return model_fn_cond


@pytest.fixture(scope="module")
def cfg_inputs():
    z = jax.random.normal(jax.random.key(0), (3, 2, 4))
    t = jnp.array([0.1, 0.5, 0.9])
    cond = {"scale": jnp.array([2.0, -1.0, 0.5]), "bias": jnp.array([1.0, 2.0, 3.0])}
    uncond = {"scale": jnp.zeros((1,)), "bias": jnp.zeros((1,))}  # null, batch 1
    return z, t, cond, uncond


def test_cfg_scale_one_is_the_conditional_model(cfg_inputs):
    z, t, cond, uncond = cfg_inputs
    calls = []
    model = _cond_model(calls)
    out = D.classifier_free(model, cond, uncond, 1.0)(z, t)
    np.testing.assert_array_equal(out, model(z, t, cond))
    assert calls == [3, 3], "scale 1 must evaluate only the conditional branch"


def test_cfg_scale_zero_is_unconditional_and_one_batched_call(cfg_inputs):
    z, t, cond, uncond = cfg_inputs
    calls = []
    model = _cond_model(calls)
    null = jax.tree.map(lambda u, c: jnp.broadcast_to(u, c.shape), uncond, cond)
    out0 = D.classifier_free(model, cond, uncond, 0.0)(z, t)
    assert calls == [6], "cond and uncond must run as one doubled batch"
    np.testing.assert_allclose(out0, model(z, t, null), atol=1e-6)
    out3 = D.classifier_free(model, cond, uncond, 3.0)(z, t)
    c, u = model(z, t, cond), model(z, t, null)
    np.testing.assert_allclose(out3, u + 3.0 * (c - u), atol=1e-5)
    traced = jax.jit(lambda s: D.classifier_free(model, cond, uncond, s)(z, t))(3.0)
    np.testing.assert_allclose(traced, out3, atol=1e-5)


def test_drop_conditioning():
    b = 2000
    cond = {"emb": jnp.ones((b, 3, 2)), "mask": jnp.ones((b,), jnp.int32)}
    null = {"emb": jnp.zeros((1, 3, 2)), "mask": jnp.zeros((), jnp.int32)}
    key = jax.random.key(0)
    kept = D.drop_conditioning(key, cond, null, 0.0)
    assert jax.tree.all(jax.tree.map(lambda a, c: bool(jnp.all(a == c)), kept, cond))
    dropped = D.drop_conditioning(key, cond, null, 1.0)
    assert float(jnp.max(dropped["emb"])) == 0.0 and int(jnp.max(dropped["mask"])) == 0
    half = D.drop_conditioning(key, cond, null, 0.3)
    emb_dropped = np.asarray(jnp.all(half["emb"] == 0, axis=(1, 2)))
    assert np.all(np.asarray(jnp.all(half["emb"] == 1, axis=(1, 2))) | emb_dropped)
    np.testing.assert_array_equal(emb_dropped, np.asarray(half["mask"]) == 0)  # one draw/example
    assert abs(emb_dropped.mean() - 0.3) < 0.05
    assert half["mask"].dtype == jnp.int32
    with pytest.raises(ValueError, match=r"drop rate in \[0, 1\]"):
        D.drop_conditioning(key, cond, null, 1.5)


# ------------------------------------------------------------------------ reconstruction


SHAPE = (2, 4, 3, 3, 1)  # (b, t, h, w, c); frames 0-1 observed, 2-3 generated
FRAME_MASK = jnp.array([[1.0, 1.0, 0.0, 0.0]])  # (1, t)


def _perfect_video_model(x0, sch):
    def model_fn(z, t):
        alpha, sigma = sch.alpha_sigma(t)
        return D.eps_from_x0(x0, z, alpha, sigma)
    return model_fn


def _static_scene_model(std, sch):
    """Exact eps denoiser for videos whose frames are all one image c ~ N(0, std²)."""
    def model_fn(z, t):
        alpha, sigma = (D.expand_like(a, z) for a in sch.alpha_sigma(t))
        frames = z.shape[1]
        precision = 1.0 / std**2 + frames * alpha**2 / sigma**2
        c_hat = alpha / sigma**2 * jnp.sum(z, axis=1, keepdims=True) / precision
        x0_hat = jnp.broadcast_to(c_hat, z.shape)
        return (z - alpha * x0_hat) / sigma
    return model_fn


def test_guide_step_matches_eq7():
    """One guide() call with a frame-averaging denoiser, checked against eq. 7 by hand."""
    z = jax.random.normal(jax.random.key(1), SHAPE)
    observed = jax.random.normal(jax.random.key(2), SHAPE)
    alpha, sigma = jnp.full((2,), 0.6), jnp.full((2,), 0.8)
    k, w = 0.7, 3.0
    denoise = lambda zz: k * jnp.broadcast_to(zz.mean(1, keepdims=True), zz.shape)  # noqa: E731
    g = D.ReconstructionGuidance(observed, FRAME_MASK, w)
    key = rbg_key(3)
    z_new, x0_tilde = g.guide(denoise, z, alpha, sigma, key)
    n = jax.random.normal(key, SHAPE)
    want_z = z.at[:, :2].set(0.6 * observed[:, :2] + 0.8 * n[:, :2])
    np.testing.assert_allclose(z_new, want_z, atol=1e-6)
    x0_hat = denoise(want_z)
    # ∂/∂z_f of Σ_{a} ‖x_a − k·mean(z)‖² = −2·(k/T)·Σ_a (x_a − x̂0_a), the same for every f.
    grad = -2 * k / 4 * jnp.sum(observed[:, :2] - x0_hat[:, :2], axis=1, keepdims=True)
    want = x0_hat.at[:, 2:].add(-(w * 0.6 / 2) * grad)
    np.testing.assert_allclose(x0_tilde, want, atol=1e-5)
    _, x0_plain = D.ReconstructionGuidance(observed, FRAME_MASK, 0).guide(
        denoise, z, alpha, sigma, key)
    np.testing.assert_allclose(x0_plain, x0_hat, atol=1e-6)


def test_perfect_video_model_returns_the_video():
    sch = D.cosine()
    video = jax.random.uniform(jax.random.key(4), SHAPE, minval=-1, maxval=1)
    guidance = D.ReconstructionGuidance(video, FRAME_MASK, 4.0)
    out = jax.jit(lambda n, k, g: D.sample(_perfect_video_model(video, sch), n, k, schedule=sch,
                                           parameterization="eps", num_steps=6, guidance=g))(
        jax.random.normal(jax.random.key(5), SHAPE), rbg_key(6), guidance)
    np.testing.assert_allclose(out, video, atol=1e-5)


def test_guidance_beats_replacement_on_a_static_scene():
    """Frames share one image: the observed frames pin it down. Replacement alone leaves the
    generated frames (and the model's x0 for the observed ones) off; eq. 7 pulls them in."""
    sch, std = D.cosine(), 0.5
    scene = std * jax.random.normal(jax.random.key(7), (8, 1, 3, 3, 1))
    video = jnp.broadcast_to(scene, (8, 4, 3, 3, 1))
    noise = jax.random.normal(jax.random.key(8), video.shape)

    @jax.jit
    def run(weight):
        g = D.ReconstructionGuidance(video, FRAME_MASK, weight)
        return D.sample(_static_scene_model(std, sch), noise, rbg_key(9), schedule=sch,
                        parameterization="eps", num_steps=25, clip_x0=False, guidance=g)

    def errors(out):
        sq = (out - video) ** 2
        return float(jnp.mean(sq[:, :2])), float(jnp.mean(sq[:, 2:]))

    obs_plain, gen_plain = errors(run(0.0))
    obs_guided, gen_guided = errors(run(2.0))
    assert obs_guided < 0.25 * obs_plain
    assert gen_guided < 0.25 * gen_plain
