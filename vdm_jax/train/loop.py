"""The training loop: short functions plus hooks (log, checkpoint, sample)."""

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from tqdm.auto import tqdm

from vdm_jax.data.pipeline import make_pipeline, skipped_count
from vdm_jax.data.sources import build_source
from vdm_jax.train.checkpoint import Checkpointer
from vdm_jax.train.experiment import build_experiment
from vdm_jax.train.metrics import MetricsWriter
from vdm_jax.train.restore import init_from_image_run
from vdm_jax.train.samples import SampleHook
from vdm_jax.train.sharded import make_placement
from vdm_jax.train.step import make_train_step

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclasses.dataclass
class Run:
    """Everything a training run holds between steps; the loop below drives any run (the
    diffusion models' here, the autoencoders' in ``vdm_jax.train.vae``)."""

    experiment: Any  # has .config
    workdir: Path
    state: Any
    data_iterator: object
    train_step: Callable
    checkpointer: Checkpointer
    writer: MetricsWriter
    hooks: list
    meta: dict  # what a checkpoint stores besides arrays (the config, the tokenizer, ...)
    to_device: Callable[[dict], dict]  # host batch -> the arrays the step reads

    @property
    def config(self) -> ml_collections.ConfigDict:
        return self.experiment.config


def setup(config: ml_collections.ConfigDict, workdir: str | Path) -> Run:
    """Builds the run and resumes from ``workdir`` when it holds a checkpoint."""
    workdir = Path(workdir)
    source = build_source(config.data, split="train")
    experiment = build_experiment(config, source=source)
    pipeline = make_pipeline(
        source,
        batch_size=config.data.batch_size,
        tokenizer=experiment.tokenizer,
        seed=config.data.seed,
        worker_count=config.data.worker_count,
    )
    data_iterator = iter(pipeline)
    checkpointer = Checkpointer(workdir / "checkpoints")
    placement = make_placement(config, experiment)  # None: one device
    state = placement.init_state(experiment) if placement else experiment.init_state()
    if checkpointer.latest_step() is not None:
        checkpointer.check_compatible(json.loads(config.to_json()))
        state, step = checkpointer.restore(state, data_iterator)
        log.info("resumed from %s at step %d", checkpointer.directory, step)
    elif config.train.get("init_from"):
        state = init_from_image_run(state, experiment, config.train.init_from, placement)
        log.info("initialised from the image run %s (inflated)", config.train.init_from)
    step_fn = make_train_step(
        experiment.model,
        experiment.optimizer(),
        experiment.step_settings(),
        jnp.asarray(experiment.tokenizer.null_tokens()),
    )
    is_main = jax.process_index() == 0
    run = Run(
        experiment=experiment,
        workdir=workdir,
        state=state,
        data_iterator=data_iterator,
        train_step=placement.jit_step(step_fn) if placement else jax.jit(
            step_fn, donate_argnums=(0,)),
        checkpointer=checkpointer,
        writer=MetricsWriter(workdir, enabled=is_main),
        hooks=[],
        meta={"config": json.loads(config.to_json()),
              "tokenizer": experiment.tokenizer.to_dict()},
        to_device=placement.to_device if placement else device_batch,
    )
    run.hooks.append(SampleHook(experiment, workdir, run.writer))  # writes on process 0 only
    return run


def device_batch(batch: dict) -> dict:
    """The arrays the step reads, as device arrays."""
    return {"video": jnp.asarray(batch["video"]), "tokens": jnp.asarray(batch["tokens"])}


def _check_streak(run: Run) -> None:
    streak = int(run.state.nonfinite_streak)
    limit = run.config.train.max_nonfinite_streak
    if streak >= limit:
        raise NonFiniteLossError(
            f"{streak} consecutive steps had a non-finite loss or gradient (limit "
            f"train.max_nonfinite_streak={limit}); the run has diverged. Lower "
            "train.learning_rate or check the data; the last good checkpoint is in "
            f"{run.checkpointer.directory}."
        )


def _log(run: Run, step: int, metrics: dict, bar, seconds: float, steps_timed: int) -> None:
    scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
    scalars["skipped_total"] = int(run.state.nonfinite)
    scalars["data_records_dropped"] = skipped_count(run.data_iterator)
    scalars["steps_per_second"] = steps_timed / max(seconds, 1e-9)
    run.writer.write(step, scalars, console=False)
    bar.set_postfix(loss=f"{scalars['loss']:.4f}", skipped=scalars["skipped_total"])
    _check_streak(run)


def _save(run: Run, step: int) -> None:
    run.checkpointer.save(step, run.state, run.meta, data_iterator=run.data_iterator)


def train(config: ml_collections.ConfigDict, workdir: str | Path, *, until_step: int | None = None):
    """Trains to ``config.train.steps`` (or stops early at ``until_step``, e.g. to test resume).

    Returns the final TrainState. Checkpoints every ``train.checkpoint_every`` steps and at the
    end; samples every ``train.sample_every`` steps (0: only at the end of training).
    """
    return fit(setup(config, workdir), until_step=until_step)


def fit(run: Run, *, until_step: int | None = None):
    """Steps ``run`` from its current step to ``train.steps`` (or ``until_step``): logs every
    ``train.log_every``, checkpoints every ``train.checkpoint_every`` and at the end, and calls
    the hooks every ``train.sample_every`` steps (0: only at the end). Returns the final state."""
    cfg = run.config.train
    start = int(run.state.step)
    stop = cfg.steps if until_step is None else min(until_step, cfg.steps)
    bar = tqdm(total=stop, initial=start, desc="train", unit="step", dynamic_ncols=True,
               disable=jax.process_index() != 0)
    tick, timed = time.perf_counter(), 0
    for step in range(start + 1, stop + 1):
        run.state, metrics = run.train_step(run.state, run.to_device(next(run.data_iterator)))
        bar.update(1)
        timed += 1
        if step % cfg.log_every == 0 or step == stop:
            _log(run, step, metrics, bar, time.perf_counter() - tick, timed)
            tick, timed = time.perf_counter(), 0
        if step % cfg.checkpoint_every == 0 or step == stop:
            _save(run, step)
        sample_now = cfg.sample_every and step % cfg.sample_every == 0
        if sample_now or step == cfg.steps:
            for hook in run.hooks:
                hook(step, run.state)
    bar.close()
    run.checkpointer.close()
    run.writer.close()
    return run.state
