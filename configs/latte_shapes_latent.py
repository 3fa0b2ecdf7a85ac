"""Latte in the latent space of a video autoencoder trained on the built-in shapes data.

    python -m experiments.train_vae --config configs/causal_vae_shapes.py:tiny --workdir workdir/vae
    python -m experiments.encode_latents --autoencoder workdir/vae --out workdir/latents
    python -m experiments.train --config configs/latte_shapes_latent.py:tiny \\
        --workdir workdir/latte_latent

The latent cache sets the shape Latte denoises (9x32x32 clips -> 3x8x8x4 latents with the tiny
causal VAE) and its input channels; samples are decoded by the cache's autoencoder, so sampling,
``experiments.sample`` and prompt agreement work as in pixel space. ``--config.data.path`` /
``eval_path`` point at another cache.
"""

import ml_collections

from configs import latte_shapes

VARIANTS = ("tiny", "test")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r} of latte_shapes_latent; choose one of "
                         f"{VARIANTS}")
    c = latte_shapes.get_config(arg)
    c.data.update(source="latents", path="workdir/latents/train",
                  eval_path="workdir/latents/eval")
    # Latents are 8x8 per frame: 1x1 patches give 64 tokens per frame, as the pixel model's.
    c.model.update(in_channels=0, patch_size=1, sample_size=8)  # in_channels: from the cache
    return c
