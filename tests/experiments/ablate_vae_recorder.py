"""``python tests/experiments/ablate_vae_recorder.py [ablate_vae flags]``: runs the autoencoder
ablation's ``main`` with training and scoring replaced by recorders and prints, as the last line
of stdout, JSON ``{"trained": [[run, train config], ...], "reported": [row, ...]}``.

A child process of the tests, because the script's absl flags (``--config``) clash with the
other experiment scripts' in one process.
"""

import json

import numpy as np
from absl import app

from experiments import ablate_vae
from vdm_jax.train import vae

trained, reported = [], []


def design(name, out):
    ablate_vae._train(name, out)
    return {"design": name, "init": ablate_vae.start_of(name)}, None


def main(argv):
    ablate_vae.init_runtime = lambda: None
    vae.train_vae = lambda config, workdir: trained.append((workdir.name, config.train.to_dict()))
    vae.held_out_clips = lambda config, num: np.zeros((num, 1, 4, 4, 3))
    ablate_vae.run_design = design
    ablate_vae.write_report = lambda out, results, clip, recons: reported.extend(results)
    ablate_vae.main(argv)
    print(json.dumps({"trained": trained, "reported": reported}))


if __name__ == "__main__":
    app.run(main)
