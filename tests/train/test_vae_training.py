"""Autoencoder training end to end: metrics, held-out evaluation, the GAN start step, exact
resume, reloading, joint image batches and the config errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import causal_vae_shapes
from vdm_jax.testing import leaves_equal
from vdm_jax.train.checkpoint import Checkpointer
from vdm_jax.train.vae import build_vae_experiment, load_autoencoder, random_stills, train_vae


def _config(**loss):
    config = causal_vae_shapes.get_config("test")
    config.loss.update(loss)
    return config


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """4 steps of the causal VAE with the discriminator switched on at step 2."""
    workdir = tmp_path_factory.mktemp("vae")
    return workdir, jax.device_get(train_vae(_config(), workdir))


def test_writes_losses_and_held_out_metrics(straight_run):
    workdir, _ = straight_run
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    logged = set().union(*rows)
    assert {"loss", "l1", "kl", "image_loss", "disc_loss", "generator_adv"} <= logged
    scores = json.loads((workdir / "eval" / "4.json").read_text())
    assert set(scores) >= {"psnr", "ssim", "flicker"}
    assert np.isfinite(scores["psnr"]) and scores["flicker"] >= 0
    assert (workdir / "eval" / "4.png").stat().st_size > 0


def test_discriminator_trains_only_from_its_start_step(straight_run):
    """disc_start=2: steps 1 and 2 (state.step 0 and 1) leave it at init; steps 3-4 train it."""
    workdir, state = straight_run
    exp = build_vae_experiment(_config())
    initial = jax.device_get(exp.init_state())
    checkpointer = Checkpointer(workdir / "checkpoints")
    at_2, _ = checkpointer.restore(jax.eval_shape(exp.init_state), step=2)
    checkpointer.close()
    assert leaves_equal(jax.device_get(at_2.disc_params), initial.disc_params)
    assert not leaves_equal(at_2.params, initial.params)
    assert not leaves_equal(state.disc_params, initial.disc_params)


def test_resume_is_exact(straight_run, tmp_path):
    _, straight = straight_run
    train_vae(_config(), tmp_path, until_step=2)
    resumed = jax.device_get(train_vae(_config(), tmp_path))
    assert int(resumed.step) == 4
    assert leaves_equal(resumed.params, straight.params)
    assert leaves_equal(resumed.disc_params, straight.disc_params)


def test_load_autoencoder_reconstructs(straight_run):
    workdir, state = straight_run
    model, params, config = load_autoencoder(workdir)
    assert config.model.name == "causal_vae"
    assert leaves_equal(params, state.params)
    post = jax.jit(lambda p, v: model.apply({"params": p}, v, method="encode_video"))(
        params, jnp.zeros((1, 9, 16, 16, 3)))
    assert post.mean.shape == (1, 3, 4, 4, 4)


def test_random_stills_are_frames_of_their_clip():
    video = jnp.arange(2 * 5, dtype=jnp.float32).reshape(2, 5, 1, 1, 1) * jnp.ones((1, 1, 2, 2, 3))
    stills = random_stills(jax.random.key(0), video, 3)
    assert stills.shape == (6, 1, 2, 2, 3)
    values = np.asarray(stills[:, 0, 0, 0, 0]).reshape(2, 3)
    assert np.all(values[0] < 5) and np.all(values[1] >= 5)


def test_config_errors_are_clear():
    config = _config()
    config.data.num_frames = 5
    with pytest.raises(ValueError, match="round-trips 8k\\+1 frames; got 5: use 1 or 9"):
        build_vae_experiment(config)
    config = _config()
    config.model.name = "vqgan"
    with pytest.raises(ValueError, match="unknown autoencoder 'vqgan'"):
        build_vae_experiment(config)
    config = _config()
    config.model.causal_vae.block_count = 3
    with pytest.raises(ValueError, match="bad model.causal_vae fields"):
        build_vae_experiment(config)


def test_perceptual_hook_resolves_module_function():
    from vdm_jax.train.vae import load_perceptual

    assert load_perceptual("") is None
    assert load_perceptual("numpy:mean") is np.mean
    with pytest.raises(ValueError, match="module:function"):
        load_perceptual("numpy.mean")
