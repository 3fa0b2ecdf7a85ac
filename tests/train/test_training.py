"""End-to-end training: exact resume, checkpoint digests, skip guard, bad-input errors."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import vdm_shapes
from vdm_jax.testing import leaves_equal
from vdm_jax.train import checkpoint as ckpt
from vdm_jax.train.experiment import build_experiment
from vdm_jax.train.loop import setup, train
from vdm_jax.train.step import append_image_frames, make_train_step


def _config(**train):
    config = vdm_shapes.get_config("test")
    config.train.update(train)
    return config


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """4 steps in one go (checkpoints at 2 and 4)."""
    workdir = tmp_path_factory.mktemp("straight")
    return workdir, jax.device_get(train(_config(), workdir))


def test_resume_is_bitwise_exact(straight_run, tmp_path):
    _, straight = straight_run
    train(_config(), tmp_path, until_step=2)
    resumed = jax.device_get(train(_config(), tmp_path))
    assert int(resumed.step) == int(straight.step) == 4
    assert leaves_equal(resumed.params, straight.params)
    assert leaves_equal(resumed.ema_params, straight.ema_params)
    assert leaves_equal(resumed.opt_state, straight.opt_state)


def test_training_writes_metrics_and_samples(straight_run):
    workdir, state = straight_run
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert any('"loss"' in line for line in lines)
    sample_dir = workdir / "samples" / "4"
    assert (sample_dir / "grid.png").stat().st_size > 0
    assert len(list(sample_dir.glob("*.mp4"))) == 1 and len(list(sample_dir.glob("*.gif"))) == 1
    assert list((workdir / "tensorboard").iterdir())
    # EMA moved away from the initial params but not all the way to the live params.
    assert not leaves_equal(state.ema_params, state.params)


def test_corrupt_checkpoint_falls_back_to_previous_step(straight_run, tmp_path, caplog):
    source, straight = straight_run
    workdir = tmp_path / "copy"
    shutil.copytree(source, workdir)
    checkpointer = ckpt.Checkpointer(workdir / "checkpoints")
    meta_file = next((workdir / "checkpoints" / "4" / "meta").glob("*"))
    meta_file.write_text(meta_file.read_text().replace('"digest": "', '"digest": "0'))
    template = jax.eval_shape(build_experiment(_config()).init_state)
    state, step = checkpointer.restore(template)
    assert step == 2
    assert int(state.step) == 2
    assert "digest" in caplog.text


def test_incompatible_checkpoint_is_a_clear_error(straight_run, tmp_path):
    source, _ = straight_run
    workdir = tmp_path / "copy"
    shutil.copytree(source, workdir)
    config = _config()
    config.model.channels = 32
    with pytest.raises(ckpt.IncompatibleCheckpointError, match="model.channels: 16 -> 32"):
        setup(config, workdir)


def _jitted_step(experiment):
    """The jitted train step and a batch-of-2 caption for ``experiment``."""
    step = jax.jit(make_train_step(experiment.model, experiment.optimizer(),
                                   experiment.step_settings(),
                                   jnp.asarray(experiment.tokenizer.null_tokens())))
    tokens = jnp.asarray(experiment.tokenizer.encode_batch(["a red circle moving left"] * 2))
    return step, tokens


def test_nonfinite_step_is_skipped_and_counted():
    experiment = build_experiment(_config())
    state = experiment.init_state()
    step, tokens = _jitted_step(experiment)
    t, h, w, c = experiment.video_shape
    bad = {"video": jnp.full((2, t, h, w, c), jnp.nan), "tokens": tokens}
    new, metrics = step(state, bad)
    assert int(metrics["skipped"]) == 1 and int(new.nonfinite) == 1
    assert int(new.nonfinite_streak) == 1 and int(new.step) == 1
    assert leaves_equal(new.params, state.params)
    good = {"video": jnp.zeros((2, t, h, w, c)), "tokens": tokens}
    newer, metrics = step(new, good)  # the optimizer's own count (and so its lr) did not advance
    newer, metrics = step(newer, good)
    assert int(metrics["skipped"]) == 0 and int(newer.nonfinite_streak) == 0
    assert int(newer.nonfinite) == 1
    assert not leaves_equal(newer.params, state.params)


def test_image_frames_are_stills_of_the_clip():
    video = jnp.arange(2 * 4).reshape(2, 4, 1, 1, 1).astype(jnp.float32)
    joint, image_frames = append_image_frames(jax.random.PRNGKey(0), video, 3)
    assert joint.shape == (2, 7, 1, 1, 1)
    np.testing.assert_array_equal(image_frames[:, :4], False)
    np.testing.assert_array_equal(image_frames[:, 4:], True)
    for b in range(2):  # each still is one of the same clip's frames
        assert set(np.asarray(joint[b, 4:, 0, 0, 0])) <= set(np.asarray(video[b, :, 0, 0, 0]))


def test_joint_image_video_training_step_runs():
    config = _config(num_image_frames=2)
    config.model.conv = "spatial"  # the image-frame mask covers attention, not temporal convs
    experiment = build_experiment(config)
    state = experiment.init_state()
    step, tokens = _jitted_step(experiment)
    t, h, w, c = experiment.video_shape
    batch = {"video": jax.random.uniform(jax.random.PRNGKey(1), (2, t, h, w, c)) * 2 - 1,
             "tokens": tokens}
    _, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
