"""Autoencoder training: L1 reconstruction (+ an optional perceptual term) + KL, an optional
PatchGAN from a start step, image-video joint batches, held-out PSNR / SSIM / flicker.

Runs through the same loop, checkpoints, resume and metrics as the diffusion models
(``vdm_jax.train.loop.fit``); ``load_autoencoder(workdir)`` rebuilds a trained one, and
``train.init_from`` starts a video autoencoder from a trained image one (MagicVideo, VideoVAE).
"""

import dataclasses
import importlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vdm_jax.data import video_io
from vdm_jax.data.pipeline import make_pipeline
from vdm_jax.data.sources import build_source, build_tokenizer
from vdm_jax.eval.video_metrics import reconstruction_metrics
from vdm_jax.models.autoencoders import build_autoencoder, check_round_trip, reconstruct
from vdm_jax.models.discriminator import (
    PatchDiscriminator,
    generator_adversarial_loss,
    hinge_discriminator_loss,
)
from vdm_jax.models.param_paths import inflate_image_params
from vdm_jax.train import loop
from vdm_jax.train.checkpoint import Checkpointer, IncompatibleCheckpointError
from vdm_jax.train.experiment import clip_shape
from vdm_jax.train.metrics import MetricsWriter
from vdm_jax.train.optim import make_optimizer
from vdm_jax.train.step import keep_if, random_frames

log = logging.getLogger(__name__)


@flax.struct.dataclass
class VaeState:
    """Autoencoder and discriminator parameters and optimizer states, step, RNG, skip counters
    (as :class:`~vdm_jax.train.state.TrainState`)."""

    step: jax.Array
    params: Any
    opt_state: Any
    disc_params: Any
    disc_opt_state: Any
    rng: jax.Array
    nonfinite: jax.Array
    nonfinite_streak: jax.Array


@dataclasses.dataclass
class VaeExperiment:
    config: ml_collections.ConfigDict
    model: nn.Module
    discriminator: nn.Module | None

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        return clip_shape(self.config.data)

    def optimizer(self) -> optax.GradientTransformation:
        return make_optimizer(self.config.train)

    def init_state(self) -> VaeState:
        key, disc_key, rng = jax.random.split(jax.random.PRNGKey(self.config.seed), 3)
        video = jnp.zeros((1, *self.video_shape), jnp.float32)
        params = nn.meta.unbox(self.model.init(key, video, method=reconstruct)["params"])
        disc_params = disc_opt = None
        if self.discriminator is not None:
            disc_params = nn.meta.unbox(self.discriminator.init(disc_key, video)["params"])
            disc_opt = self.optimizer().init(disc_params)

        def zero():
            return jnp.zeros((), jnp.int32)

        return VaeState(zero(), params, self.optimizer().init(params), disc_params, disc_opt,
                        rng, zero(), zero())


def build_vae_experiment(config: ml_collections.ConfigDict) -> VaeExperiment:
    model = build_autoencoder(config.model)
    check_round_trip(model, config.data.num_frames)
    gan = config.loss
    disc = PatchDiscriminator(gan.disc_channels, gan.disc_layers, gan.disc_kind) \
        if gan.disc_weight > 0 else None
    return VaeExperiment(config, model, disc)


def load_perceptual(path: str) -> Callable | None:
    """``"package.module:function"`` -> ``function(reconstruction, target) -> scalar`` on videos
    in [-1, 1] (e.g. an LPIPS network the user has locally); ``""`` -> None."""
    if not path:
        return None
    module, _, name = path.partition(":")
    if not name:
        raise ValueError(f"loss.perceptual must be 'module:function', got {path!r}")
    return getattr(importlib.import_module(module), name)


def random_stills(key: jax.Array, video: jax.Array, per_clip: int) -> jax.Array:
    """``per_clip`` random frames of every clip as one-frame videos ``(b * per_clip, 1, ...)``:
    the image half of a joint batch (a causal autoencoder encodes an image as one frame)."""
    stills = random_frames(key, video, per_clip)
    return stills.reshape(video.shape[0] * per_clip, 1, *video.shape[2:])


def _generator_loss(exp: VaeExperiment, perceptual, params, disc_params, video, key,
                    adv_weight):
    cfg = exp.config.loss
    recon, post = exp.model.apply({"params": params}, video, key, method=reconstruct)
    rec = jnp.mean(jnp.abs(recon - video))
    # KL summed over the latent, per input value: with kl_weight 1e-6 this is latent diffusion's
    # balance of a summed reconstruction term against a summed KL.
    kl = jnp.mean(post.kl()) / np.prod(video.shape[1:])
    loss = cfg.l1_weight * rec + cfg.kl_weight * kl
    metrics = {"l1": rec, "kl": kl}
    if perceptual is not None:
        metrics["perceptual"] = perceptual(recon, video)
        loss += cfg.perceptual_weight * metrics["perceptual"]
    if exp.discriminator is not None:
        fake = exp.discriminator.apply({"params": disc_params}, recon)
        metrics["generator_adv"] = generator_adversarial_loss(fake)
        loss += adv_weight * metrics["generator_adv"]
    return loss, (recon, metrics)


def make_vae_step(exp: VaeExperiment) -> Callable[[VaeState, dict], tuple[VaeState, dict]]:
    """``step(state, {"video"}) -> (state, metrics)``, pure and jittable; a non-finite loss or
    gradient skips the update and is counted, as in the diffusion step."""
    cfg, tx = exp.config, exp.optimizer()
    perceptual = load_perceptual(cfg.loss.perceptual)

    def joint_loss(params, disc_params, video, key, adv_weight):
        k_video, k_stills, k_image = jax.random.split(key, 3)
        loss, (recon, m) = _generator_loss(exp, perceptual, params, disc_params, video, k_video,
                                           adv_weight)
        if cfg.train.num_images:
            stills = random_stills(k_stills, video, cfg.train.num_images)
            image_loss, _ = _generator_loss(exp, perceptual, params, disc_params, stills, k_image,
                                            adv_weight)
            loss += cfg.train.image_weight * image_loss
            m["image_loss"] = image_loss
        return loss, (recon, m)

    def step(state: VaeState, batch: dict):
        video = batch["video"]
        key = jax.random.fold_in(state.rng, state.step)
        gan_on = state.step >= cfg.loss.disc_start
        adv_weight = jnp.where(gan_on, cfg.loss.disc_weight, 0.0)
        (loss, (recon, metrics)), grads = jax.value_and_grad(joint_loss, has_aux=True)(
            state.params, state.disc_params, video, key, adv_weight)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        disc_params, disc_opt = state.disc_params, state.disc_opt_state
        if exp.discriminator is not None:
            disc_params, disc_opt, metrics["disc_loss"] = _disc_update(
                exp, tx, state, video, jax.lax.stop_gradient(recon), gan_on & finite)
        skipped = (~finite).astype(jnp.int32)
        new = state.replace(
            step=state.step + 1, params=keep_if(finite, params, state.params),
            opt_state=keep_if(finite, opt_state, state.opt_state), disc_params=disc_params,
            disc_opt_state=disc_opt, nonfinite=state.nonfinite + skipped,
            nonfinite_streak=(state.nonfinite_streak + skipped) * skipped)
        return new, {"loss": loss, "grad_norm": grad_norm, "skipped": skipped, **metrics}

    return step


def _disc_update(exp, tx, state, video, recon, active):
    """One hinge-loss step of the discriminator, applied only when ``active``."""
    def disc_loss(dp):
        real = exp.discriminator.apply({"params": dp}, video)
        fake = exp.discriminator.apply({"params": dp}, recon)
        return hinge_discriminator_loss(real, fake)

    loss, grads = jax.value_and_grad(disc_loss)(state.disc_params)
    updates, opt = tx.update(grads, state.disc_opt_state, state.disc_params)
    params = optax.apply_updates(state.disc_params, updates)
    return (keep_if(active, params, state.disc_params),
            keep_if(active, opt, state.disc_opt_state), loss)


def held_out_clips(config: ml_collections.ConfigDict, num: int) -> np.ndarray:
    """The first ``num`` clips of the eval split, float32 in [-1, 1]."""
    source = build_source(config.data, split="eval")
    return video_io.to_float(np.stack([source[i]["video"] for i in range(num)]))


def evaluate(model: nn.Module, params, videos: np.ndarray, batch_size: int) -> tuple:
    """Posterior-mode reconstructions of ``videos`` and their mean PSNR / SSIM / flicker."""
    run = jax.jit(lambda p, v: model.apply({"params": p}, v, method=reconstruct)[0])
    recons = np.concatenate([np.asarray(run(params, jnp.asarray(videos[i:i + batch_size])))
                             for i in range(0, len(videos), batch_size)])
    return recons, reconstruction_metrics(jnp.asarray(recons), jnp.asarray(videos))


class EvalHook:
    """Writes ``eval/<step>.json`` (held-out PSNR, SSIM, flicker) and ``eval/<step>.png`` (input
    and reconstruction rows, alternating) and logs the metrics."""

    def __init__(self, exp: VaeExperiment, workdir: Path, writer: MetricsWriter):
        self.exp, self.writer = exp, writer
        self.directory = Path(workdir) / "eval"
        self.videos = held_out_clips(exp.config, exp.config.eval.num_samples)

    def __call__(self, step: int, state: VaeState) -> None:
        recons, metrics = evaluate(self.exp.model, state.params, self.videos,
                                   self.exp.config.eval.batch_size)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"{step}.json").write_text(json.dumps({"step": step, **metrics}))
        shown = min(4, len(recons))
        rows = np.stack([self.videos[:shown], recons[:shown]], axis=1).reshape(
            2 * shown, *recons.shape[1:])
        video_io.write_frame_grid(self.directory / f"{step}.png", np.clip(rows, -1, 1), scale=2)
        self.writer.write(step, {f"eval/{k}": v for k, v in metrics.items()}, console=False)
        log.info("step %d: held-out %s", step, ", ".join(f"{k} {v:.4g}" for k, v in
                                                        metrics.items()))


START_DEFAULTS = {"init_from": "", "freeze_spatial": False}  # how a run starts


def check_same_start(checkpointer: Checkpointer, config: ml_collections.ConfigDict) -> None:
    """Raises unless the checkpoint's run had this config's ``train.init_from`` and
    ``train.freeze_spatial`` (missing in older runs: the defaults). A resume never re-reads
    ``init_from``, so a different one would be silently ignored."""
    saved = checkpointer.read_meta()["config"].get("train", {})
    diffs = [f"train.{k}: {saved.get(k, d)!r} -> {config.train.get(k, d)!r}"
             for k, d in START_DEFAULTS.items() if saved.get(k, d) != config.train.get(k, d)]
    if diffs:
        raise IncompatibleCheckpointError(
            f"{checkpointer.directory} holds a run started differently; it cannot resume with "
            "this config (checkpoint -> config):\n  " + "\n  ".join(diffs)
            + "\nUse a new --workdir, or the train.init_from / freeze_spatial it was started with.")


def init_from_autoencoder_run(exp: VaeExperiment, state: VaeState,
                              workdir: str | Path) -> VaeState:
    """``state`` with the autoencoder run in ``workdir``'s weights put into its parameters by
    path (``param_paths.inflate_image_params``: temporal parts keep their init, weights this
    model lacks are ignored) and a fresh optimizer state."""
    _, image_params, _ = load_autoencoder(workdir)
    try:
        params = inflate_image_params({"params": image_params},
                                      {"params": state.params})["params"]
    except ValueError as err:
        raise ValueError(f"train.init_from={str(workdir)!r}: its weights do not fit "
                         f"model.name={exp.config.model.name!r}: {err}") from None
    log.info("initialised from the autoencoder run %s (temporal layers at init)", workdir)
    return state.replace(params=params, opt_state=exp.optimizer().init(params))


def setup(config: ml_collections.ConfigDict, workdir: str | Path) -> loop.Run:
    """Builds the run and resumes from ``workdir`` when it holds a checkpoint; a fresh run starts
    from ``config.train.init_from``'s weights when that names an autoencoder run."""
    workdir = Path(workdir)
    exp = build_vae_experiment(config)
    source = build_source(config.data, split="train")
    data_iterator = iter(make_pipeline(
        source, batch_size=config.data.batch_size, tokenizer=build_tokenizer(config.data, source),
        seed=config.data.seed, worker_count=config.data.worker_count))
    checkpointer = Checkpointer(workdir / "checkpoints")
    state = exp.init_state()
    if checkpointer.latest_step() is not None:
        checkpointer.check_compatible(json.loads(config.to_json()), sections=("model", "loss"))
        check_same_start(checkpointer, config)
        state, step = checkpointer.restore(state, data_iterator)
        log.info("resumed from %s at step %d", checkpointer.directory, step)
    elif config.train.get("init_from"):
        state = init_from_autoencoder_run(exp, state, config.train.init_from)
    is_main = jax.process_index() == 0
    writer = MetricsWriter(workdir, enabled=is_main)
    return loop.Run(
        experiment=exp, workdir=workdir, state=state, data_iterator=data_iterator,
        train_step=jax.jit(make_vae_step(exp), donate_argnums=(0,)),
        checkpointer=checkpointer, writer=writer,
        hooks=[EvalHook(exp, workdir, writer)] if is_main else [],
        meta={"config": json.loads(config.to_json())},
        to_device=lambda batch: {"video": jnp.asarray(batch["video"])})


def train_vae(config: ml_collections.ConfigDict, workdir: str | Path, *,
              until_step: int | None = None) -> VaeState:
    """Trains to ``config.train.steps`` (or ``until_step``); returns the final state."""
    return loop.fit(setup(config, workdir), until_step=until_step)


def load_autoencoder(workdir: str | Path, step: int | None = None):
    """``(model, params, config)`` of a trained autoencoder run."""
    checkpointer = Checkpointer(Path(workdir) / "checkpoints")
    if checkpointer.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {Path(workdir) / 'checkpoints'}; train one "
                                f"with `python -m experiments.train_vae --workdir {workdir}`")
    config = ml_collections.ConfigDict(checkpointer.read_meta(step)["config"])
    exp = build_vae_experiment(config)
    state, _ = checkpointer.restore(jax.eval_shape(exp.init_state), step=step)
    checkpointer.close()
    return exp.model, state.params, config
