"""python -m experiments.train --config configs/mav_sr_h.py:tiny --workdir workdir/mav_sr_h

Make-A-Video's per-frame super-resolution SR_h on the built-in shapes data: 32 -> 64 pixels, no
temporal layers (spatial convs, spatial attention), trained on single frames with the same
noise-conditioning augmentation as SR_l (U(0, 0.5), level as a context token). Applied to a
video it treats every frame alike; ``sample.share_noise`` starts every frame from the same noise,
which the paper uses to reduce flicker. Attention only at 16x16 keeps 64x64 affordable.
``test``: seconds, for the tests.
"""

import ml_collections

from configs.mav_common import check_variant, shrink_for_test, stage_config

VARIANTS = ("tiny", "test")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    check_variant(arg, VARIANTS, "mav_sr_h")
    c = stage_config(frames=1, resolution=64, video=False,
                     task=dict(name="super_resolve", low_resolution=32, aug_max=0.5),
                     batch_size=8, steps=1200)
    c.model.update(channels=16, channel_mult=(1, 2, 4), attention_levels=(2,))
    c.sample.update(guidance=1.0, share_noise=True)
    if arg == "test":
        shrink_for_test(c)
        c.data.resolution = 16
        c.task.low_resolution = 8
    return c
