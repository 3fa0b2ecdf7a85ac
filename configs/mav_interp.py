"""python -m experiments.train --config configs/mav_interp.py:tiny --workdir workdir/mav_interp

Make-A-Video's frame interpolation network F on the built-in shapes data: 16-frame 16x16 clips
of which every ``skip``-th frame is kept (``skip`` drawn per clip from 3 and 5, both dividing 15,
so the last frame is always kept and F only interpolates, never extrapolates); the masked clip
and a binary mask channel are concatenated to the noisy input, and the skip conditions the model
as an extra context token (the paper's frame-rate conditioning). At sampling, skip 5 turns D_t's
4 keyframes into (4 - 1) * 5 + 1 = 16 frames (the paper's 16 -> 76 keyframes-to-frames is the
same rule with the same skip).

The paper fine-tunes F from D_t; its input layer takes 7 channels here (noisy video, masked
video, mask) and its only scalar is the skip, so F starts from scratch (``tiny``) or from any run
of the same architecture via ``train.init_from`` (inflation copies matching weights by path and
shape and raises on any other). ``test``: seconds, for the tests.
"""

import ml_collections

from configs.mav_common import check_variant, shrink_for_test, stage_config

VARIANTS = ("tiny", "test")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    check_variant(arg, VARIANTS, "mav_interp")
    c = stage_config(frames=16, resolution=16, video=True,
                     task=dict(name="interpolate", skips=(3, 5)), batch_size=4, steps=1000)
    c.sample.update(guidance=1.0, skip=5)
    if arg == "test":
        shrink_for_test(c)
        c.data.num_frames = 5  # skips 2 and 4 divide 4
        c.task.skips = (2, 4)
        c.sample.skip = 2
    return c
