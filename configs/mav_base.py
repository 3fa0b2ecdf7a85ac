"""python -m experiments.train --config configs/mav_base.py:image --workdir workdir/mav_base_image

Make-A-Video's decoder D_t (keyframes from a caption and an image embedding) on the built-in
shapes data, trained in two steps::

    python -m experiments.train --config configs/mav_base.py:image --workdir workdir/mav_base_image
    python -m experiments.train --config configs/mav_base.py:video --workdir workdir/mav_base_video

``image``: image pretraining. The text-to-image model (spatial convs, spatial attention) on
single 16x16 frames, conditioned on the caption and an image embedding: the frame average-pooled
to 2x2 (12 numbers), a parameter-free stand-in for the CLIP image embedding of the paper. The
prior P (caption -> embedding, an MLP over the caption encoder's output trained by MSE) trains
beside it; at sampling it supplies the embedding, and any other ``(b, 12)`` embedding fits.

``video``: the spatiotemporal decoder D_t: 4 keyframes of 16x16 (the shapes clips spread their
motion over the clip whatever its length, so these are the keyframes 0, 5, 10, 15 of the 16-frame
clips the interpolation network F fills in). (2+1)D convs and divided attention, the image run's
weights inflated into them (``train.init_from``), only the temporal layers trained
(``train.freeze_spatial``); the image embedding is the first frame's.

``image_test`` / ``video_test``: seconds, for the tests (``video_test`` starts from scratch).
"""

import ml_collections

from configs.mav_common import check_variant, shrink_for_test, stage_config

VARIANTS = ("image", "video", "image_test", "video_test")


def get_config(arg: str = "image") -> ml_collections.ConfigDict:
    check_variant(arg, VARIANTS, "mav_base")
    video = arg.startswith("video")
    c = stage_config(frames=4 if video else 1, resolution=16, video=video,
                     task=dict(name="generate", image_embed_grid=2),
                     batch_size=8 if video else 32, steps=600 if video else 1500)
    if video:
        c.train.update(init_from="workdir/mav_base_image", freeze_spatial=True)
    else:
        c.train.update(prior_weight=1.0)
    if arg.endswith("_test"):
        shrink_for_test(c)
        c.train.init_from = ""
    return c
