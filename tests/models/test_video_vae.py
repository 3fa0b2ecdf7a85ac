"""VideoVAE (sequential): (4k+1)-frame shapes, its frame-count error, starting from an image VAE
(spatial latents equal to the image encoder's per frame) and gradients reaching every part."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.models import autoencoder_kl, video_vae
from vdm_jax.models.param_paths import inflate_image_params
from vdm_jax.models.video_vae import VideoVAE
from vdm_jax.testing import fast_init, random_params


@pytest.fixture(scope="module")
def setup():
    model = VideoVAE(**video_vae.VARIANTS["tiny"])
    image_vae = autoencoder_kl.AutoencoderKL(**autoencoder_kl.VARIANTS["tiny"])
    image_params = random_params(image_vae, jnp.zeros((1, 2, 2, 3)))
    params = inflate_image_params(image_params, fast_init(model, *video_vae.example_inputs(model)))
    video = jax.random.uniform(jax.random.key(0), (2, 9, 8, 8, 3), minval=-1, maxval=1)
    return model, params, image_vae, image_params, video


def test_shapes_compress_4k_plus_1_frames(setup):
    model, params, _, _, video = setup
    recon, post = jax.jit(model.apply)(params, video)
    assert post.mean.shape == (2, 3, 4, 4, 8)
    assert recon.shape == video.shape
    image = jax.jit(model.apply)(params, video[:, :1])[1]
    assert image.mean.shape == (2, 1, 4, 4, 8)


def test_bad_frame_count_names_valid_counts(setup):
    model, params, _, _, video = setup
    with pytest.raises(ValueError, match="use 5 or 9"):
        model.apply(params, video[:, :7])


def test_spatial_encoder_starts_as_the_image_encoder(setup):
    model, params, image_vae, image_params, video = setup

    def spatial(module, x):
        return module.quant_conv(module.encoder(x))

    got = jax.jit(lambda p, x: model.apply(p, x, method=spatial))(params, video)
    want = jax.jit(lambda p, x: image_vae.apply(p, x, method="encode_video"))(image_params, video)
    np.testing.assert_allclose(got[..., :4], want.mean, atol=1e-5)


def test_inflation_rejects_a_mismatched_image_vae(setup):
    model, params, image_vae, _, _ = setup
    other = autoencoder_kl.AutoencoderKL(block_out_channels=(8, 32), layers_per_block=1,
                                         latent_channels=4, norm_num_groups=4)
    with pytest.raises(ValueError, match="the image model has"):
        inflate_image_params(random_params(other, jnp.zeros((1, 2, 2, 3))), params)


def test_every_parameter_gets_a_gradient(setup):
    """With all weights random (zero-initialised output projections would block the gradient of
    the layers before them at init)."""
    model, _, _, _, video = setup
    params = random_params(model, video[:1, :5], scale=0.1)

    def loss(p):
        recon, post = model.apply(p, video, jax.random.key(1))
        return jnp.mean(jnp.abs(recon - video)) + 1e-3 * jnp.mean(post.kl())

    grads = jax.jit(jax.grad(loss))(params)
    dead = [jax.tree_util.keystr(k) for k, g in jax.tree_util.tree_leaves_with_path(grads)
            if not np.any(np.asarray(g))]
    assert not dead
