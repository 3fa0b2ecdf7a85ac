"""AutoencoderKL: per-frame video helpers, the posterior, input errors, parameter counts and
logical names."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.models.autoencoder_kl import VARIANTS, AutoencoderKL, count_params
from vdm_jax.models.posterior import DiagonalGaussian


def abstract_params(model, *args):
    """Boxed parameter shapes from ``eval_shape`` (no init compile)."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), *args))


def random_params(model, *args, seed=1):
    """Random values for every parameter, GroupNorm affines included; numpy, so no per-shape
    compile of jax's RNG."""
    leaves, tree = jax.tree.flatten(nn.meta.unbox(abstract_params(model, *args)))
    rng = np.random.default_rng(seed)
    return tree.unflatten([jnp.asarray(0.2 * rng.standard_normal(v.shape), jnp.float32)
                           for v in leaves])


@pytest.fixture(scope="module")
def vae():
    model = AutoencoderKL(**VARIANTS["tiny"])
    return model, random_params(model, jnp.zeros((1, 2, 2, 3)))


@pytest.fixture(scope="module")
def video():
    return jax.random.normal(jax.random.key(1), (2, 3, 16, 8, 3))


def _apply(model, params, x, method):
    return jax.jit(lambda p, x: model.apply(p, x, method=method))(params, x)


def test_video_helpers_are_per_frame(vae, video):
    model, params = vae
    post = _apply(model, params, video, "encode_video")
    frames = [_apply(model, params, video[:, i], "encode") for i in range(video.shape[1])]
    assert post.mean.shape == (2, 3, 8, 4, 4)
    for name in ("mean", "logvar"):
        want = jnp.stack([getattr(f, name) for f in frames], axis=1)
        np.testing.assert_allclose(getattr(post, name), want, rtol=1e-5, atol=1e-6)
    decoded = _apply(model, params, post.mean, "decode_video")
    assert decoded.shape == video.shape
    np.testing.assert_allclose(decoded[:, 1], _apply(model, params, post.mean[:, 1], "decode"),
                               rtol=1e-5, atol=1e-6)


def test_call_returns_reconstruction_and_posterior(vae):
    model, params = vae
    x = jnp.zeros((2, 16, 16, 3))
    recon, post = jax.jit(model.apply)(params, x, jax.random.key(2))
    assert recon.shape == x.shape and post.mean.shape == (2, 8, 8, 4)
    assert post.kl().shape == (2,) and bool(jnp.isfinite(recon).all())
    z = jnp.linspace(-1, 1, 8)
    np.testing.assert_allclose(model.unscale_latents(model.scale_latents(z)), z, atol=1e-6)


@pytest.mark.parametrize("shape,method,match", [
    ((1, 15, 16, 3), "encode", r"\(b, h, w, 3\) with h and w multiples of 2"),
    ((1, 16, 16, 4), "encode", r"\(b, h, w, 3\)"),
    ((1, 2, 16, 16, 3), "encode", r"images \(b, h, w, 3\)"),
    ((1, 2, 16, 15, 3), "encode_video", r"videos \(b, t, h, w, 3\) with h and w multiples of 2"),
    ((1, 8, 8, 3), "decode", r"latents \(b, h, w, 4\)"),
    ((1, 8, 8, 4), "decode_video", r"latents \(b, t, h, w, 4\)"),
])
def test_bad_inputs_name_the_expected_shape(vae, shape, method, match):
    model, params = vae
    with pytest.raises(ValueError, match=match):
        model.apply(params, jnp.zeros(shape), method=method)


def test_posterior():
    mean = jnp.zeros((2, 3, 4, 4, 2))
    post = DiagonalGaussian.from_moments(jnp.concatenate([mean, jnp.full_like(mean, 50.0)], -1))
    assert float(post.logvar.max()) == 20.0  # clamped like diffusers
    std_normal = DiagonalGaussian(mean, jnp.zeros_like(mean))
    np.testing.assert_allclose(std_normal.kl(), 0.0)
    shifted = DiagonalGaussian(mean + 1.0, jnp.zeros_like(mean))
    np.testing.assert_allclose(shifted.kl(), 0.5 * 3 * 4 * 4 * 2)
    np.testing.assert_allclose(shifted.kl(std_normal), shifted.kl())
    draw = std_normal.sample(jax.random.key(0))
    assert draw.shape == mean.shape and float(jnp.std(draw)) > 0.5
    with pytest.raises(ValueError, match="even channel count"):
        DiagonalGaussian.from_moments(jnp.zeros((1, 4, 4, 3)))


def test_sd_variant_parameter_count():
    assert count_params(AutoencoderKL(**VARIANTS["sd"])) == 83_653_863  # SD 1.x/2.x VAE


def test_every_parameter_has_logical_names(vae):
    model, _ = vae
    boxed = abstract_params(model, jnp.zeros((1, 2, 2, 3)))
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)
    assert all(len(leaf.names) == leaf.value.ndim for leaf in leaves)


def test_group_count_must_divide_widths():
    with pytest.raises(ValueError, match="norm_num_groups=3"):
        abstract_params(AutoencoderKL(block_out_channels=(8, 16), norm_num_groups=3),
                        jnp.zeros((1, 2, 2, 3)))
