"""python -m experiments.train --config configs/mav_sr_l.py:image --workdir workdir/mav_sr_l_image

Make-A-Video's spatiotemporal super-resolution SR_l^t on the built-in shapes data: 16 -> 32
pixels, with temporal layers, trained like D_t in two steps::

    python -m experiments.train --config configs/mav_sr_l.py:image --workdir workdir/mav_sr_l_image
    python -m experiments.train --config configs/mav_sr_l.py:video --workdir workdir/mav_sr_l_video

The low-resolution input is the clip shrunk to 16x16, noised to a level drawn from U(0, 0.5)
(noise-conditioning augmentation, a diffusion time of the same schedule) and resized back to
32x32; it is concatenated to the noisy input and the level conditions the model (a context
token). Sampling noises the input to ``sample.aug_level`` (0.1) and tells the model so.

``image``: single 32x32 frames, spatial layers only. ``video``: 8-frame clips (the model takes
any frame count; 8 rather than F's 16 keeps a CPU step cheap), the image run inflated, only the
temporal layers trained. ``image_test`` / ``video_test``: seconds, for the tests.
"""

import ml_collections

from configs.mav_common import check_variant, shrink_for_test, stage_config

VARIANTS = ("image", "video", "image_test", "video_test")


def get_config(arg: str = "image") -> ml_collections.ConfigDict:
    check_variant(arg, VARIANTS, "mav_sr_l")
    video = arg.startswith("video")
    c = stage_config(frames=8 if video else 1, resolution=32, video=video,
                     task=dict(name="super_resolve", low_resolution=16, aug_max=0.5),
                     batch_size=2 if video else 16, steps=400 if video else 1200)
    c.sample.guidance = 1.0
    if video:
        c.train.update(init_from="workdir/mav_sr_l_image", freeze_spatial=True)
    if arg.endswith("_test"):
        shrink_for_test(c)
        c.data.update(resolution=16, num_frames=3 if video else 1)
        c.task.low_resolution = 8
        c.train.init_from = ""
    return c
