"""Load a trained run from its workdir for sampling or evaluation, or to start another run from
its weights (an image model inflated into a video model)."""

from pathlib import Path

import jax
import ml_collections

from vdm_jax.data.tokenizer import WordTokenizer
from vdm_jax.models.param_paths import inflate_image_params
from vdm_jax.train.checkpoint import Checkpointer
from vdm_jax.train.experiment import Experiment, build_experiment
from vdm_jax.train.state import TrainState


def load_run(workdir: str | Path, step: int | None = None) -> tuple[Experiment, object, int]:
    """Rebuilds the experiment from the checkpoint's saved config and tokenizer.

    Returns ``(experiment, state, step)``; the state's ``ema_params`` are what to sample with.
    """
    checkpointer = Checkpointer(Path(workdir) / "checkpoints")
    if checkpointer.latest_step() is None:
        raise FileNotFoundError(
            f"no checkpoint in {Path(workdir) / 'checkpoints'}; train first with "
            f"`python -m experiments.train --config ... --workdir {workdir}`"
        )
    meta = checkpointer.read_meta(step)
    config = ml_collections.ConfigDict(meta["config"])
    tokenizer = WordTokenizer.from_dict(meta["tokenizer"])
    experiment = build_experiment(config, tokenizer=tokenizer)
    template = jax.eval_shape(experiment.init_state)
    state, restored_step = checkpointer.restore(template, step=step)
    checkpointer.close()
    return experiment, state, restored_step


def init_from_image_run(state: TrainState, experiment: Experiment, image_workdir: str | Path,
                        placement=None) -> TrainState:
    """A fresh train state whose weights are the image run's EMA weights inflated into
    ``state.params`` (``param_paths.inflate_image_params``: the temporal layers keep their
    identity initialisation); the optimizer state and EMA start anew. ``placement`` (a sharded
    run's) puts the weights where its state's parameters live."""
    _, image_state, _ = load_run(image_workdir)
    params = inflate_image_params({"params": image_state.ema_params},
                                  {"params": state.params})["params"]
    if placement is not None:
        params = jax.device_put(params, placement.state.params)
    return TrainState.create(params, experiment.optimizer(), state.rng)
