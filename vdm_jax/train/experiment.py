"""Assembles a run's parts from its config: data source, tokenizer, model, schedule, optimizer.

Training and sampling both build from here, so a checkpoint's saved config rebuilds exactly the
model it was trained with.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vdm_jax.data.latents import latent_decoder, read_meta
from vdm_jax.data.sources import build_source, build_tokenizer
from vdm_jax.data.tokenizer import WordTokenizer
from vdm_jax.data.video_io import normalize_resolution
from vdm_jax.diffusion import Schedule, get_schedule
from vdm_jax.models.vdm import build_model
from vdm_jax.train.optim import make_optimizer
from vdm_jax.train.state import TrainState
from vdm_jax.train.step import StepSettings
from vdm_jax.train.tasks import task_from_config


@dataclasses.dataclass
class Experiment:
    config: ml_collections.ConfigDict
    tokenizer: WordTokenizer
    model: nn.Module
    schedule: Schedule

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        """``(t, h, w, c)`` of one training example: a clip, or its latents for a latent cache."""
        data = self.config.data
        if data.source == "latents":
            return tuple(read_meta(data.path)["latent_shape"])
        return clip_shape(data)

    @functools.cached_property
    def to_pixels(self):
        """Model-space samples -> videos in [-1, 1]: the identity in pixel space, the cache's
        autoencoder (its latents unscaled, then decoded) for a latent cache."""
        if self.config.data.source != "latents":
            return lambda samples: samples
        return latent_decoder(self.config.data.path)

    def step_settings(self) -> StepSettings:
        d, t = self.config.diffusion, self.config.train
        return StepSettings(
            schedule=self.schedule,
            parameterization=d.parameterization,
            loss_weighting=d.loss_weighting,
            cond_drop_rate=d.cond_drop_rate,
            ema_decay=t.ema_decay,
            num_image_frames=t.num_image_frames,
            time_warp=d.get("time_warp", 1.0),
            task=task_from_config(self.config),
            prior_weight=t.get("prior_weight", 0.0),
        )

    def optimizer(self) -> optax.GradientTransformation:
        return make_optimizer(self.config.train)

    def init_boxed_params(self, key: jax.Array):
        """Initialises the model on a one-example dummy batch; params keep their logical names
        (``jax.eval_shape`` of this gives the sharding layer its abstract tree)."""
        video = jnp.zeros((1, *self.video_shape), jnp.float32)
        tokens = jnp.asarray(self.tokenizer.null_tokens())[None]
        return self.model.init(key, video, jnp.zeros((1,)), tokens)["params"]

    def init_params(self, key: jax.Array):
        """Initialises the model on a one-example dummy batch; returns unboxed params."""
        return nn.meta.unbox(self.init_boxed_params(key))

    def init_state(self) -> TrainState:
        root = jax.random.PRNGKey(self.config.seed)
        init_key, train_key = jax.random.split(root)
        return TrainState.create(self.init_params(init_key), self.optimizer(), train_key)


def clip_shape(data: ml_collections.ConfigDict) -> tuple[int, int, int, int]:
    """``(t, h, w, 3)`` of the pixel clips a ``data`` config describes."""
    return (data.num_frames, *normalize_resolution(data.resolution), 3)


def build_experiment(
    config: ml_collections.ConfigDict,
    *,
    tokenizer: WordTokenizer | None = None,
    source=None,
) -> Experiment:
    """Builds the parts; fills ``config.model.text.vocab_size`` and ``max_len`` from the
    tokenizer (taken from a checkpoint when given, else built for the training source)."""
    if tokenizer is None:
        source = source if source is not None else build_source(config.data, split="train")
        tokenizer = build_tokenizer(config.data, source)
    with config.unlocked():
        config.model.text.vocab_size = tokenizer.vocab_size
        config.model.text.max_len = tokenizer.max_len
        if config.data.source == "latents":  # the denoiser's channels are the latents'
            channels = read_meta(config.data.path)["latent_shape"][-1]
            config.model["in_channels" if config.model.name == "latte" else "out_channels"] = \
                channels
        if config.model.name == "make_a_video":  # the stage's inputs follow from its task
            config.model.update(task_from_config(config).model_fields)
    return Experiment(
        config=config,
        tokenizer=tokenizer,
        model=build_model(config.model),
        schedule=get_schedule(config.diffusion.schedule, **config.diffusion.schedule_kwargs),
    )
