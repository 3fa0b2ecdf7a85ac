"""Make-A-Video stages: inflation, temporal-only fine-tuning, each task's conditioning, one train
step per stage config, and sampling each task with its conditioning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from einops import rearrange

from configs import mav_base, mav_interp, mav_sr_h, mav_sr_l
from vdm_jax.data.pipeline import make_pipeline
from vdm_jax.data.sources import build_source
from vdm_jax.diffusion import cosine
from vdm_jax.diffusion.conditioning import (
    frame_mask,
    initial_noise,
    pooled_frame_embedding,
    resize_video,
    spread_keyframes,
)
from vdm_jax.models.param_paths import flatten, inflate_image_params, is_temporal
from vdm_jax.pipelines.make_a_video import stage_sampler
from vdm_jax.testing import fast_init, random_params
from vdm_jax.train.experiment import build_experiment
from vdm_jax.train.loop import device_batch
from vdm_jax.train.state import TrainState
from vdm_jax.train.step import make_train_step
from vdm_jax.train.tasks import Task, drop_text_conditioning


def _config(module, variant, **train):
    """The stage's ``test`` config, shrunk further to one UNet level (compile time)."""
    config = module.get_config(variant)
    config.model.update(channels=8, channel_mult=(1,), attention_levels=(0,), head_dim=8,
                        prior_hidden=16)
    config.model.text.update(width=16, depth=1, num_heads=2)
    config.train.update(train)
    return config


def _stage(module, variant, **train):
    config = _config(module, variant, **train)
    source = build_source(config.data)
    experiment = build_experiment(config, source=source)
    pipeline = make_pipeline(source, batch_size=2, tokenizer=experiment.tokenizer, seed=0)
    return experiment, device_batch(next(iter(pipeline)))


def _step(experiment, state, batch):
    """The jitted train step, compiled at XLA optimisation level 0 (compile time)."""
    step = jax.jit(make_train_step(experiment.model, experiment.optimizer(),
                                   experiment.step_settings(),
                                   jnp.asarray(experiment.tokenizer.null_tokens())))
    return step.lower(state, batch).compile({"xla_backend_optimization_level": 0})


def _random_state(experiment, batch):
    """A train state with every weight random: at init the output layer is zero, so no other
    layer has a gradient yet, and the model ignores its conditioning."""
    params = random_params(experiment.model, batch["video"], jnp.zeros(2), batch["tokens"],
                           scale=0.1)["params"]
    return TrainState.create(params, experiment.optimizer(), jax.random.key(0))


# ---------------------------------------------------------------- inflation and freezing


def test_inflated_video_model_equals_image_model_per_frame():
    image_exp, _ = _stage(mav_base, "image_test")
    video_exp, _ = _stage(mav_base, "video_test")
    tokens = jnp.asarray(image_exp.tokenizer.encode_batch(["a red circle moving right"] * 2))
    x = jax.random.normal(jax.random.key(0), (2, 3, 16, 16, 3))
    t, embed = jnp.array([0.3, 0.8]), jax.random.normal(jax.random.key(1), (2, 12))
    image_params = random_params(image_exp.model, x[:, :1], t, tokens)  # every weight random
    video_params = inflate_image_params(image_params, fast_init(video_exp.model, x, t, tokens))

    def apply(model, params, x, t, tokens, embed):
        return model.apply(params, x, t, tokens, cond={"image_embed": embed})

    got = jax.jit(apply, static_argnums=0)(video_exp.model, video_params, x, t, tokens, embed)
    per_frame = jax.jit(apply, static_argnums=0)(
        image_exp.model, image_params, rearrange(x, "b t h w c -> (b t) 1 h w c"),
        jnp.repeat(t, 3), jnp.repeat(tokens, 3, axis=0), jnp.repeat(embed, 3, axis=0))
    want = rearrange(per_frame, "(b t) 1 h w c -> b t h w c", b=2)
    assert float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want)) <= 1e-6
    temporal = [k for k in flatten(video_params["params"]) if is_temporal(k)]
    assert any("/conv1/temporal/" in k for k in temporal)  # (2+1)D convs
    assert any("/temporal/" in k and "attn" in k for k in temporal)  # temporal attention


def test_freeze_spatial_trains_only_temporal_layers():
    experiment, batch = _stage(mav_base, "video_test", freeze_spatial=True)
    state = _random_state(experiment, batch)
    step = _step(experiment, state, batch)
    before = flatten(jax.device_get(state.params))
    for _ in range(2):  # the warm-up's first learning rate is 0
        state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    after = flatten(jax.device_get(state.params))
    spatial = [k for k in before if not is_temporal(k)]
    temporal = [k for k in before if is_temporal(k)]
    assert spatial and temporal
    assert all(np.array_equal(before[k], after[k]) for k in spatial)
    assert any(not np.array_equal(before[k], after[k]) for k in temporal)


# ---------------------------------------------------------------- each task's conditioning


def _video(b=2, t=5, size=8):
    return jax.random.uniform(jax.random.key(3), (b, t, size, size, 3), minval=-1.0, maxval=1.0)


def test_interpolation_keeps_every_skip_th_frame():
    video = _video()
    cond = Task("interpolate", skips=(2, 4)).conditioning(jax.random.key(0), video, cosine())
    assert cond["video"].shape == (2, 5, 8, 8, 4)
    skip = np.asarray(cond["scalar"]).astype(int)
    assert set(skip) <= {2, 4}
    mask = np.asarray(frame_mask(5, skip))
    np.testing.assert_array_equal(np.asarray(cond["video"][..., 3]),
                                  np.broadcast_to(mask[:, :, None, None], (2, 5, 8, 8)))
    kept = np.asarray(cond["video"][..., :3])[mask]
    np.testing.assert_array_equal(kept, np.asarray(video)[mask])
    assert not np.asarray(cond["video"][..., :3])[~mask].any()
    assert mask[:, 0].all() and mask[:, 4].all()  # 2 and 4 divide 4: the last frame is kept


def test_super_resolution_noise_augments_the_low_resolution_clip():
    video = _video(b=64, t=2)
    cond = Task("super_resolve", low_resolution=(4, 4), aug_max=0.3).conditioning(
        jax.random.key(0), video, cosine())
    assert cond["video"].shape == video.shape
    level = np.asarray(cond["scalar"])
    assert level.shape == (64,) and level.min() >= 0.0 and level.max() <= 0.3
    assert level.max() - level.min() > 0.1  # drawn per example
    clean = Task("super_resolve", low_resolution=(4, 4), aug_max=0.0).conditioning(
        jax.random.key(0), video, cosine())
    want = resize_video(resize_video(video, (4, 4)), (8, 8))
    np.testing.assert_allclose(clean["video"], want, atol=1e-6)


def test_generation_conditions_on_the_first_frame_embedding_and_drops_it_with_the_caption():
    video = _video()
    cond = Task("generate", image_embed_grid=2).conditioning(jax.random.key(0), video, cosine())
    first = np.asarray(video[:, 0])
    np.testing.assert_allclose(cond["image_embed"][:, :3], first[:, :4, :4].mean((1, 2)),
                               atol=1e-6)
    assert cond["image_embed"].shape == (2, 12)
    tokens, dropped = drop_text_conditioning(jax.random.key(0), jnp.ones((2, 4), jnp.int32),
                                             {**cond, "scalar": jnp.ones(2)},
                                             jnp.zeros(4, jnp.int32), 1.0)
    assert not tokens.any() and not dropped["image_embed"].any() and dropped["scalar"].all()


def test_keyframes_spread_and_shared_noise():
    keyframes = _video(t=4)
    video, mask = spread_keyframes(keyframes, 5)  # mav_interp:tiny's 4 keyframes -> 16 frames
    assert video.shape == (2, 16, 8, 8, 3)
    np.testing.assert_array_equal(video[:, ::5], keyframes)
    assert np.asarray(mask).sum() == 2 * 4
    shared = initial_noise(jax.random.key(0), (2, 5, 4, 4, 3), share_frames=True)
    assert all(np.array_equal(shared[:, 0], shared[:, i]) for i in range(5))
    assert not np.array_equal(shared[0, 0], shared[1, 0])
    own = initial_noise(jax.random.key(0), (2, 5, 4, 4, 3))
    assert not np.array_equal(own[:, 0], own[:, 1])


def test_pooled_frame_embedding_needs_a_divisible_frame():
    with pytest.raises(ValueError, match="grid=3"):
        pooled_frame_embedding(jnp.zeros((1, 8, 8, 3)), 3)


# ---------------------------------------------------------------- one train step per stage


@pytest.mark.parametrize("module, variant", [
    (mav_base, "image_test"), (mav_interp, "test"), (mav_sr_l, "video_test"), (mav_sr_h, "test"),
])
def test_stage_train_step_runs(module, variant):
    experiment, batch = _stage(module, variant)
    state = _random_state(experiment, batch)
    _, metrics = _step(experiment, state, batch)(state, batch)
    assert np.isfinite(float(metrics["loss"])) and int(metrics["skipped"]) == 0
    if module is mav_base:
        assert np.isfinite(float(metrics["prior_loss"]))


# ---------------------------------------------------------------- sampling each task


def _sampler(module, variant):
    """A stage sampler with random weights."""
    experiment, batch = _stage(module, variant)
    return stage_sampler(experiment, _random_state(experiment, batch).params), batch


def test_sample_keyframes_from_the_prior_or_a_given_embedding():
    sampler, batch = _sampler(mav_base, "video_test")
    tokens = batch["tokens"]
    embed = sampler.prior(tokens)
    assert embed.shape == (2, 12)
    out = sampler.generate(tokens, (2, 4, 16, 16, 3), jax.random.key(0))
    given = sampler.generate(tokens, (2, 4, 16, 16, 3), jax.random.key(0), image_embed=embed)
    assert out.shape == (2, 4, 16, 16, 3) and np.isfinite(np.asarray(out)).all()
    np.testing.assert_allclose(out, given, atol=1e-5)


def test_sample_interpolation_keeps_the_keyframes():
    sampler, batch = _sampler(mav_interp, "test")
    keyframes = batch["video"][:, ::2]  # 3 of the 5 frames
    out = sampler.interpolate(batch["tokens"], keyframes, 2, jax.random.key(0))
    assert out.shape == (2, 5, 16, 16, 3)
    np.testing.assert_array_equal(out[:, ::2], keyframes)


def test_sample_super_resolution_per_frame_with_shared_noise():
    sampler, batch = _sampler(mav_sr_h, "test")
    assert sampler.share_frames
    low = resize_video(jnp.repeat(batch["video"], 3, axis=1), (8, 8))  # a 3-frame still clip
    out = sampler.super_resolve(batch["tokens"], low, (16, 16), jax.random.key(0), 0.0)
    assert out.shape == (2, 3, 16, 16, 3) and np.isfinite(np.asarray(out)).all()
    # A per-frame model given identical frames and identical noise gives identical frames.
    np.testing.assert_allclose(out[:, 0], out[:, 2], atol=1e-6)
    noisy = sampler.super_resolve(batch["tokens"], low, (16, 16), jax.random.key(0), 0.3)
    assert noisy.shape == out.shape and not np.allclose(noisy, out)
