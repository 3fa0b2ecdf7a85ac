"""Sample videos during and after training, write them, and score them against their prompts."""

import logging
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from vdm_jax.data import video_io
from vdm_jax.data.sources import build_source, is_shapes_data
from vdm_jax.eval.prompt_agreement import format_report, prompt_agreement
from vdm_jax.pipelines.text_to_video import SamplerSettings, TextToVideo
from vdm_jax.train.experiment import Experiment
from vdm_jax.train.stage_samples import stage_samples

log = logging.getLogger(__name__)


def sampler_settings(sample_cfg) -> SamplerSettings:
    return SamplerSettings(
        sampler=sample_cfg.sampler,
        num_steps=sample_cfg.num_steps,
        eta=sample_cfg.eta,
        guidance=sample_cfg.guidance,
    )


def make_pipeline(experiment: Experiment, params) -> TextToVideo:
    cfg = experiment.config
    return TextToVideo(experiment.model, params, experiment.tokenizer, experiment.schedule,
                       cfg.diffusion.parameterization, channels=experiment.video_shape[-1])


def write_videos(directory: Path, videos: np.ndarray, prompts: list[str], fps: int) -> None:
    """``NN_<prompt>.mp4`` and ``.gif`` per video plus ``grid.png`` (one row per video)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, (video, prompt) in enumerate(zip(videos, prompts, strict=True)):
        stem = f"{i:02d}_{prompt.replace(' ', '_')}"
        video_io.write_mp4(directory / f"{stem}.mp4", video, fps=fps, scale=4)
        video_io.write_gif(directory / f"{stem}.gif", video, fps=fps, scale=4)
    video_io.write_frame_grid(directory / "grid.png", videos, scale=4)
    (directory / "prompts.txt").write_text("\n".join(prompts) + "\n")


def sample_videos(pipeline: TextToVideo, experiment: Experiment, prompts, *, seed: int,
                  progress: bool = True) -> np.ndarray:
    """Videos in [-1, 1] for ``prompts`` (latent samples decoded to pixels)."""
    t, h, w, _ = experiment.video_shape
    settings = sampler_settings(experiment.config.sample)
    samples = pipeline(list(prompts), num_frames=t, resolution=(h, w), settings=settings,
                       seed=seed, progress=progress)
    return np.asarray(experiment.to_pixels(samples))


def evaluation_prompts(experiment: Experiment, num: int) -> list[str]:
    """Captions of held-out clips: prompts drawn from the data's own distribution."""
    source = build_source(experiment.config.data, split="eval")
    return [source[i]["caption"] for i in range(num)]


def score_prompt_agreement(pipeline: TextToVideo, experiment: Experiment, *, num_samples: int,
                           batch_size: int, seed: int, progress: bool = True) -> dict:
    """Samples ``num_samples`` held-out prompts and scores colour/shape/direction agreement."""
    prompts = evaluation_prompts(experiment, num_samples)
    videos = [
        sample_videos(pipeline, experiment, prompts[i:i + batch_size], seed=seed + i,
                      progress=progress)
        for i in range(0, num_samples, batch_size)
    ]
    return prompt_agreement(np.concatenate(videos), prompts)


def gather_to_host(params):
    """Every process's copy of the whole of ``params`` as numpy arrays (all processes call it)."""
    def replicated(x):
        return NamedSharding(x.sharding.mesh, PartitionSpec()) if isinstance(
            getattr(x, "sharding", None), NamedSharding) else None

    shardings = jax.tree.map(replicated, params)
    return jax.device_get(jax.jit(lambda tree: tree, out_shardings=shardings)(params))


class SampleHook:
    """Writes ``workdir/samples/<step>/`` from the EMA params and logs prompt agreement.

    Every process calls it; in a multi-host run all take part in gathering the EMA params and
    process 0 alone samples from its copy and writes.
    """

    def __init__(self, experiment: Experiment, workdir: Path, writer):
        self.experiment = experiment
        self.directory = Path(workdir) / "samples"
        self.writer = writer
        self.pipeline = None

    def __call__(self, step: int, state) -> None:
        params = state.ema_params
        if jax.process_count() > 1:
            params = gather_to_host(params)
            if jax.process_index() != 0:
                return
        if self.pipeline is None:
            self.pipeline = make_pipeline(self.experiment, params)
        self.pipeline.params = params
        cfg = self.experiment.config
        if cfg.model.name == "make_a_video":  # a cascade stage, with its task's conditioning
            videos, prompts = stage_samples(self.experiment, params, seed=cfg.sample.seed)
        else:
            prompts = list(cfg.sample.prompts)
            videos = sample_videos(self.pipeline, self.experiment, prompts, seed=cfg.sample.seed)
        write_videos(self.directory / str(step), videos, prompts, cfg.sample.fps)
        log.info("step %d: samples written to %s", step, self.directory / str(step))
        if is_shapes_data(cfg.data):
            scores = prompt_agreement(videos, prompts)
            self.writer.write(step, {f"samples/{k}": v for k, v in scores.items()}, console=False)
            log.info("step %d: %s", step, format_report(scores))
