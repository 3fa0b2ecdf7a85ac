"""MagicVideo video decoder: the image decoder per frame at init, temporal layers that mix
frames once trained, parameter inflation and the trainable-parameter labels."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vdm_jax.models.autoencoder_kl import VARIANTS, AutoencoderKL
from vdm_jax.models.video_decoder import (
    inflate_image_params,
    temporal_param_labels,
    video_decoder_for,
)
from vdm_jax.testing import fast_init, random_params


@pytest.fixture(scope="module")
def setup():
    vae = AutoencoderKL(**VARIANTS["tiny"])
    vae_params = random_params(vae, jnp.zeros((1, 2, 2, 3)))
    decoder = video_decoder_for(vae, temporal_head_dim=8)
    z = jax.random.normal(jax.random.key(1), (2, 4, 4, 4, vae.latent_channels))
    params = inflate_image_params(vae_params, fast_init(decoder, jnp.zeros((1, 2, 2, 3))))
    return vae, vae_params, decoder, params, z


def _decode(model, params, z):
    return jax.jit(lambda p, z: model.apply(p, z, method="decode_video"))(params, z)


def _relative(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def test_equals_image_decoder_per_frame_at_init(setup):
    vae, vae_params, decoder, params, z = setup
    want = jax.jit(lambda p, z: vae.apply(p, z, method="decode_video"))(vae_params, z)
    got = _decode(decoder, params, z)
    assert got.shape == (2, 4, 8, 8, 3)
    assert _relative(got, want) <= 1e-6


def _perturb_temporal(params):
    labels = temporal_param_labels(params)
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(3)
    new = [p + 0.3 * rng.standard_normal(p.shape) if lab == "temporal" else p
           for p, lab in zip(leaves, jax.tree.leaves(labels), strict=True)]
    return jax.tree.unflatten(tree, new)


def test_trained_temporal_layers_mix_frames(setup):
    _, _, decoder, params, z = setup
    perturbed = _perturb_temporal(params)
    def apply(p, z):
        return _decode(decoder, p, z)

    base = apply(perturbed, z)
    assert _relative(base, apply(params, z)) > 1e-2
    # Changing frame 0 now changes the decoded frame 3.
    moved = apply(perturbed, z.at[:, 0].add(1.0))
    assert _relative(moved[:, 3], base[:, 3]) > 1e-4


def test_labels_select_only_temporal_layers(setup):
    _, vae_params, _, params, _ = setup
    labels = temporal_param_labels(params)
    flat = jax.tree_util.tree_flatten_with_path(labels)[0]
    temporal = {jax.tree_util.keystr(p) for p, lab in flat if lab == "temporal"}
    assert temporal and all("temporal_" in p for p in temporal)
    assert len(flat) - len(temporal) == len(jax.tree.leaves(vae_params))
    opt = optax.multi_transform({"temporal": optax.sgd(1.0), "frozen": optax.set_to_zero()},
                                temporal_param_labels)
    step = lambda p: opt.update(jax.tree.map(jnp.ones_like, p), opt.init(p), p)[0]  # noqa: E731
    updates = jax.jit(step)(params)
    moved = jax.tree.map(lambda u: bool(jnp.any(u != 0)), updates)
    assert jax.tree.leaves(moved) == [lab == "temporal" for lab in jax.tree.leaves(labels)]


def test_inflation_rejects_a_different_decoder(setup):
    _, vae_params, decoder, params, z = setup
    wider = decoder.clone(block_out_channels=(8, 32))
    with pytest.raises(ValueError, match="the image model has"):
        inflate_image_params(vae_params, jax.eval_shape(wider.init, jax.random.key(0),
                                                        jnp.zeros((1, 2, 2, 3))))
    with pytest.raises(ValueError, match=r"latents \(b, t, h, w, 4\)"):
        _decode(decoder, params, z[:, 0])
