"""Autoencoder runs started from a trained image autoencoder (``train.init_from``): MagicVideo's
decoder and VideoVAE take the image run's weights, temporal layers keep their init,
``freeze_spatial`` trains only those, a resume ignores ``init_from``, mismatches are clear."""

import re
import shutil
import types

import jax
import pytest

from configs import causal_vae_shapes
from vdm_jax.models.param_paths import flatten, is_temporal
from vdm_jax.testing import leaves_equal
from vdm_jax.train.checkpoint import IncompatibleCheckpointError
from vdm_jax.train.vae import build_vae_experiment, check_same_start, setup, train_vae


def _config(name: str, steps: int = 2, **train):
    """The test config without the GAN or image batches (fewer programs to compile)."""
    config = causal_vae_shapes.get_config("test")
    config.model.name = name
    config.loss.disc_weight = 0.0
    config.train.update(steps=steps, num_images=0, checkpoint_every=steps, **train)
    config.eval.num_samples = 2
    return config


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """2 steps of the per-frame image VAE (the second has a non-zero learning rate)."""
    workdir = tmp_path_factory.mktemp("image_vae")
    return workdir, flatten(jax.device_get(train_vae(_config("image_vae"), workdir).params))


def _params_at_setup(config, workdir):
    """Parameters of a run after ``setup`` (0 steps), and of a fresh init of the same model."""
    run = setup(config, workdir)
    run.checkpointer.close()
    run.writer.close()
    fresh = build_vae_experiment(config).init_state().params
    return flatten(jax.device_get(run.state.params)), flatten(jax.device_get(fresh))


def _split(flat: dict) -> tuple[list[str], list[str]]:
    temporal = sorted(p for p in flat if is_temporal(p))
    return temporal, sorted(p for p in flat if p not in temporal)


def _check_started_from(image: dict, params: dict, fresh: dict) -> list[str]:
    """Non-temporal weights are the image run's (which differ from an init), temporal ones a
    fresh init's; returns the temporal paths."""
    temporal, spatial = _split(params)
    assert temporal and spatial
    assert leaves_equal([params[p] for p in spatial], [image[p] for p in spatial])
    assert not leaves_equal([fresh[p] for p in spatial], [image[p] for p in spatial])
    assert leaves_equal([params[p] for p in temporal], [fresh[p] for p in temporal])
    return temporal


def test_magicvideo_starts_from_the_image_run(image_run, tmp_path):
    image_dir, image = image_run
    params, fresh = _params_at_setup(_config("magicvideo", init_from=str(image_dir)), tmp_path)
    temporal = _check_started_from(image, params, fresh)
    assert all("decoder" in p for p in temporal)  # MagicVideo: attention over frames, decoder


@pytest.fixture(scope="module")
def frozen_run(image_run, tmp_path_factory):
    """2 steps of MagicVideo from (a copy of) the image run, only its temporal layers trained."""
    image_copy = tmp_path_factory.mktemp("copy") / "image_vae"
    shutil.copytree(image_run[0], image_copy)
    workdir = tmp_path_factory.mktemp("magicvideo")
    config = _config("magicvideo", init_from=str(image_copy), freeze_spatial=True)
    return config, workdir, flatten(jax.device_get(train_vae(config, workdir).params))


def test_freeze_spatial_trains_only_the_temporal_layers(image_run, frozen_run):
    _, image = image_run
    config, _, params = frozen_run
    fresh = flatten(jax.device_get(build_vae_experiment(config).init_state().params))
    temporal, spatial = _split(params)
    assert leaves_equal([params[p] for p in spatial], [image[p] for p in spatial])
    assert not leaves_equal([params[p] for p in temporal], [fresh[p] for p in temporal])


def test_video_vae_spatial_parts_start_from_the_image_run(image_run, tmp_path):
    image_dir, image = image_run
    params, fresh = _params_at_setup(_config("video_vae", init_from=str(image_dir)), tmp_path)
    temporal = _check_started_from(image, params, fresh)
    assert {"temporal_encoder", "temporal_decoder"} <= {p.split("/")[0] for p in temporal}
    spatial_roots = {p.split("/")[0] for p in params if p not in temporal}
    assert spatial_roots == {"encoder", "quant_conv", "post_quant_conv", "decoder"}


def test_resume_does_not_reapply_init_from(frozen_run):
    """The parameters come back from the checkpoint; the init_from run is not even read."""
    config, workdir, trained = frozen_run
    shutil.rmtree(config.train.init_from)
    resumed, _ = _params_at_setup(config, workdir)
    assert leaves_equal(resumed, trained)
    other = config.copy_and_resolve_references()
    other.train.init_from = ""
    with pytest.raises(IncompatibleCheckpointError, match="train.init_from: '.*image_vae.*' -> ''"):
        setup(other, workdir)


def test_resume_check_reads_runs_saved_before_init_from_as_scratch():
    saved = {"config": {"train": {"steps": 4}}}
    checkpointer = types.SimpleNamespace(read_meta=lambda: saved, directory="ckpt")
    check_same_start(checkpointer, _config("image_vae"))
    with pytest.raises(IncompatibleCheckpointError, match="train.freeze_spatial: False -> True"):
        check_same_start(checkpointer, _config("image_vae", freeze_spatial=True))


def test_mismatched_widths_name_the_run_and_the_parameter(image_run, tmp_path):
    image_dir, _ = image_run
    config = _config("magicvideo", init_from=str(image_dir))
    config.model.magicvideo.block_out_channels = (8, 16, 16)
    named = f"init_from='{re.escape(str(image_dir))}'.*model.name='magicvideo': "
    with pytest.raises(ValueError, match=named + r"(en|de)coder/\S+: the image model has \("):
        setup(config, tmp_path)


def test_missing_init_from_run_is_an_error(tmp_path):
    config = _config("magicvideo", init_from=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*nowhere"):
        setup(config, tmp_path / "run")
