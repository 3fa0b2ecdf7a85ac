"""Samples of a Make-A-Video stage during training, each with the conditioning its task takes:
keyframes for the captions of ``sample.prompts`` (D_t, its image embedding from the prior); for
the interpolation and super-resolution stages, held-out clips' every ``sample.skip``-th frame or
low-resolution version (noised to ``sample.aug_level``), with their captions."""

import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax.data import video_io
from vdm_jax.data.sources import build_source
from vdm_jax.diffusion.conditioning import resize_video
from vdm_jax.pipelines.make_a_video import stage_sampler
from vdm_jax.train.experiment import Experiment
from vdm_jax.train.tasks import task_from_config


def held_out_clips(experiment: Experiment, num: int) -> tuple[jax.Array, list[str]]:
    """The first ``num`` clips of the eval split in [-1, 1] ``(num, t, h, w, 3)`` and captions."""
    source = build_source(experiment.config.data, split="eval")
    records = [source[i] for i in range(num)]
    clips = video_io.to_float(np.stack([r["video"] for r in records]))
    return jnp.asarray(clips), [r["caption"] for r in records]


def stage_samples(experiment: Experiment, params, *, seed: int) -> tuple[np.ndarray, list[str]]:
    """``(videos (n, t, h, w, 3) in [-1, 1], their captions)``, n = ``len(sample.prompts)``."""
    cfg = experiment.config
    task = task_from_config(cfg)
    sampler = stage_sampler(experiment, params)
    key = jax.random.PRNGKey(seed)
    num = len(cfg.sample.prompts)
    if task.name == "generate":
        prompts = list(cfg.sample.prompts)
        tokens = jnp.asarray(experiment.tokenizer.encode_batch(prompts))
        return np.asarray(sampler.generate(tokens, (num, *experiment.video_shape), key)), prompts
    clips, prompts = held_out_clips(experiment, num)
    tokens = jnp.asarray(experiment.tokenizer.encode_batch(prompts))
    if task.name == "interpolate":
        skip = cfg.sample.get("skip", max(task.skips))
        out = sampler.interpolate(tokens, clips[:, ::skip], skip, key)
    else:
        low = resize_video(clips, task.low_resolution)
        out = sampler.super_resolve(tokens, low, clips.shape[2:4], key,
                                    cfg.sample.get("aug_level", 0.0))
    return np.asarray(out), prompts
