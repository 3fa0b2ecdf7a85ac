"""One process of the multi-host test (tests/train/test_multihost.py), started as a script:

    python tests/train/multihost_worker.py SETTINGS_JSON

SETTINGS_JSON: {"coordinator_address", "num_processes", "process_id", "workdir", "until_step",
"timeout_s", "config": {flattened config overrides of configs/latte_shapes.py:test}}.
"""

import faulthandler
import json
import sys


def main(settings: dict) -> None:
    faulthandler.dump_traceback_later(settings["timeout_s"], exit=True)  # a hang shows where
    from experiments.common import init_runtime

    init_runtime(coordinator_address=settings["coordinator_address"],
                 num_processes=settings["num_processes"], process_id=settings["process_id"])
    from configs import latte_shapes
    from vdm_jax.train.loop import train

    config = latte_shapes.get_config("test")
    for key, value in settings["config"].items():
        section, name = key.split(".")
        config[section][name] = tuple(value) if isinstance(value, list) else value
    train(config, settings["workdir"], until_step=settings["until_step"])


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
