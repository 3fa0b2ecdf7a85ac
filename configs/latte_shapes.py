"""python -m experiments.train --config configs/latte_shapes.py:tiny --workdir workdir/latte_tiny

Text-conditioned Latte (variant 1: interleaved spatial and temporal transformer blocks) on the
built-in shapes data in pixel space, with 2x2 patches; the same trainer, checkpoints and sampler
as the UNet (``configs/vdm_shapes.py``, whose data, diffusion, training and sampling settings
this reuses). Variants: ``tiny`` (CPU: 8x16x16 clips, 64 tokens per frame), ``small`` (a GPU:
16x32x32), ``test`` (seconds, for the test suite). Model fields are ``LatteTransformer``'s
attributes; ``size`` picks one of ``latte.VARIANTS`` (e.g. ``S/2``) that they override.
"""

import ml_collections

from configs.vdm_shapes import base_config

VARIANTS = ("tiny", "small", "test")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r} of latte_shapes; choose one of {VARIANTS}")
    c = base_config()
    c.model = dict(
        name="latte",
        size="",
        in_channels=3,  # pixel space
        learn_sigma=False,
        hidden_size=128,
        num_layers=4,  # spatial/temporal block pairs
        num_heads=4,
        patch_size=2,
        patch_size_t=1,
        variant=1,
        sample_size=16,
        temporal_pos="absolute",
        adaln="single",  # PixArt-style, as the text-to-video Latte
        remat="none",
        text=dict(vocab_size=0, width=64, depth=2, num_heads=2, max_len=0),
    )
    c.diffusion.loss_weighting = "none"
    if arg == "small":
        c.data.update(num_frames=16, resolution=32, batch_size=16)
        c.model.update(size="S/2", sample_size=32)
        c.train.update(steps=50_000, learning_rate=2e-4, warmup_steps=1000,
                       checkpoint_every=5000, sample_every=5000)
    elif arg == "test":
        c.data.update(num_frames=4, resolution=8, batch_size=2)
        c.model.update(hidden_size=32, num_layers=1, num_heads=2, sample_size=8)
        c.model.text.update(width=32, depth=1, num_heads=2)
        c.train.update(steps=4, warmup_steps=2, log_every=2, checkpoint_every=2)
        c.sample.update(num_steps=4, prompts=("a red circle moving right",))
        c.eval.update(num_samples=4, batch_size=4)
    return c
