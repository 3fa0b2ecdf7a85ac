"""Train a video diffusion model.

    python -m experiments.train --config configs/vdm_shapes.py:tiny --workdir workdir/vdm_tiny

Override any config entry with ``--config.section.key=value``; unknown keys are an error.
Running again with the same workdir resumes from its latest checkpoint.

Multi-host: start one process per host with the same flags plus
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` (HOST is process 0's
address), or ``--distributed`` to detect them from the cluster environment (SLURM, Open MPI,
Cloud TPU). ``data.batch_size`` is per process; the workdir must be shared. Only process 0 logs,
writes metrics and samples; every process writes its part of each checkpoint.
"""

import logging

from absl import app, flags
from ml_collections import config_flags

from experiments.common import init_runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, samples).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "Multi-host: HOST:PORT of process 0's coordinator service.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Multi-host: detect the coordinator settings from the cluster "
                                 "environment (jax.distributed.initialize() without arguments).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    init_runtime(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                 process_id=_PROCESS_ID.value, auto=_DISTRIBUTED.value)
    from vdm_jax.train.loop import train

    config = _CONFIG.value
    config.lock()
    train(config, _WORKDIR.value)
    logging.info("done: %s", _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
