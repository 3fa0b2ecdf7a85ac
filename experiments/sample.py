"""Sample videos from a trained run.

    python -m experiments.sample --workdir workdir/vdm_tiny \
        --prompt "a blue circle moving right" --num_samples 4 --sampler ddim --steps 50 \
        --guidance 3 --out out.mp4

Writes ``out.mp4`` (samples side by side), ``out.gif`` and ``out.png`` (a frame grid). With
``--extend clip.mp4`` the given frames start every sample and the rest continues them
(reconstruction guidance, VDM §3.1).

A Make-A-Video D_t run (``configs/mav_base.py``) samples keyframes, its prior supplying the image
embedding; the other Make-A-Video stages take a previous stage's video, so they sample through
``experiments.sample_cascade``.
"""

import logging
from pathlib import Path

import numpy as np
from absl import app, flags

from experiments.common import init_runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints.")
_PROMPT = flags.DEFINE_string("prompt", None, "Text prompt.")
_NUM = flags.DEFINE_integer("num_samples", 4, "Videos to sample for the prompt.")
_SAMPLER = flags.DEFINE_enum("sampler", "ddim", ["ddim", "ddpm"], "Sampler.")
_STEPS = flags.DEFINE_integer("steps", 50, "Sampling steps.")
_ETA = flags.DEFINE_float("eta", 0.0, "DDIM eta (0: deterministic).")
_GUIDANCE = flags.DEFINE_float("guidance", 3.0, "Classifier-free guidance scale (1: none).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_FRAMES = flags.DEFINE_integer("num_frames", None, "Frames to sample (default: as trained).")
_EXTEND = flags.DEFINE_string("extend", None, "A clip to continue (MP4/GIF/...).")
_WEIGHT = flags.DEFINE_float("reconstruction_weight", 4.0, "Reconstruction guidance weight.")
_STEP = flags.DEFINE_integer("checkpoint_step", None, "Checkpoint step (default: latest).")
_OUT = flags.DEFINE_string("out", "sample.mp4", "Output MP4 path (GIF/PNG written beside it).")
flags.mark_flags_as_required(["workdir", "prompt"])


def _clip_to_extend(path: str, resolution: tuple[int, int]) -> np.ndarray:
    from vdm_jax.data import video_io

    clip = video_io.read_video(path)
    clip = video_io.resize_center_crop(clip, resolution)
    return video_io.to_float(clip)


def _keyframes(experiment, params, settings, shape: tuple[int, int, int]) -> np.ndarray:
    """A Make-A-Video D_t run's videos (its prior supplies the image embedding). The other
    stages start from a previous stage's output, which only the cascade script has."""
    import jax

    from vdm_jax.pipelines.make_a_video import stage_sampler
    from vdm_jax.train.tasks import task_from_config

    task = task_from_config(experiment.config).name
    if task != "generate":
        raise SystemExit(f"this run is a Make-A-Video {task!r} stage, which takes a previous "
                         "stage's video; sample it in the cascade: python -m "
                         "experiments.sample_cascade --workdirs base=...,interp=...,...")
    if _EXTEND.value:
        raise SystemExit("--extend is not supported for Make-A-Video stages")
    sampler = stage_sampler(experiment, params)
    sampler.settings = settings
    tokens = experiment.tokenizer.encode_batch([_PROMPT.value] * _NUM.value)
    videos = sampler.generate(tokens, (_NUM.value, *shape, 3), jax.random.PRNGKey(_SEED.value))
    return np.asarray(videos)


def main(argv):
    del argv
    init_runtime()
    from vdm_jax.data import video_io
    from vdm_jax.pipelines.text_to_video import SamplerSettings
    from vdm_jax.train.restore import load_run
    from vdm_jax.train.samples import make_pipeline

    experiment, state, step = load_run(_WORKDIR.value, _STEP.value)
    if _EXTEND.value and experiment.config.data.source == "latents":
        raise SystemExit("--extend takes pixel clips; this model was trained on latents")
    t, h, w, _ = experiment.video_shape
    num_frames = t if _FRAMES.value is None else _FRAMES.value
    extend = _clip_to_extend(_EXTEND.value, (h, w)) if _EXTEND.value else None
    if extend is not None and _FRAMES.value is None:
        num_frames = max(t, extend.shape[0] + t // 2)
    settings = SamplerSettings(_SAMPLER.value, _STEPS.value, _ETA.value, _GUIDANCE.value,
                               _WEIGHT.value)
    if experiment.config.model.name == "make_a_video":
        videos = _keyframes(experiment, state.ema_params, settings, (num_frames, h, w))
    else:
        pipeline = make_pipeline(experiment, state.ema_params)
        samples = pipeline([_PROMPT.value] * _NUM.value, num_frames=num_frames,
                           resolution=(h, w), settings=settings, seed=_SEED.value, extend=extend)
        videos = np.asarray(experiment.to_pixels(samples))
    out = Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    tiled = np.concatenate(list(video_io.to_uint8(videos)), axis=2)  # side by side
    fps = experiment.config.sample.fps
    video_io.write_mp4(out, tiled, fps=fps, scale=4)
    video_io.write_gif(out.with_suffix(".gif"), tiled, fps=fps, scale=4)
    video_io.write_frame_grid(out.with_suffix(".png"), videos, scale=4)
    logging.info("checkpoint step %d: wrote %s (+ .gif, .png)", step, out)


if __name__ == "__main__":
    app.run(main)
