"""Train a video autoencoder.

    python -m experiments.train_vae --config configs/causal_vae_shapes.py:tiny --workdir DIR

``--config.model.name=video_vae`` (or ``magicvideo``, ``image_vae``) switches the model; any
config entry can be overridden the same way. Running again with the same workdir resumes. At the
end it prints held-out PSNR, SSIM and flicker and writes ``DIR/eval/<step>.{json,png}``.
"""

import logging

from absl import app, flags
from ml_collections import config_flags

from experiments.common import init_runtime

_CONFIG = config_flags.DEFINE_config_file("config", "configs/causal_vae_shapes.py:tiny",
                                          "Autoencoder config file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, eval).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    init_runtime()
    from vdm_jax.train.vae import train_vae

    config = _CONFIG.value
    config.lock()
    train_vae(config, _WORKDIR.value)
    logging.info("done: %s", _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
