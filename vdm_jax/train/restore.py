"""Load a trained run from its workdir for sampling or evaluation."""

from pathlib import Path

import jax
import ml_collections

from vdm_jax.data.tokenizer import WordTokenizer
from vdm_jax.train.checkpoint import Checkpointer
from vdm_jax.train.experiment import Experiment, build_experiment


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
