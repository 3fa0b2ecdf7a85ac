"""Train a video diffusion model.

    python -m experiments.train --config configs/vdm_shapes.py:tiny --workdir workdir/vdm_tiny

Override any config entry with ``--config.section.key=value``; unknown keys are an error.
Running again with the same workdir resumes from its latest checkpoint.
"""

import logging

from absl import app, flags
from ml_collections import config_flags

from experiments.common import init_runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, samples).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    init_runtime()
    from vdm_jax.train.loop import train

    config = _CONFIG.value
    config.lock()
    train(config, _WORKDIR.value)
    logging.info("done: %s", _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
