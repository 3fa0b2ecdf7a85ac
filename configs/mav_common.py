"""Shared parts of the Make-A-Video stage configs (``configs/mav_*.py``), on the built-in
bouncing-shapes data. A stage is the VDM UNet (``model.name="make_a_video"``) with the inputs its
``task`` needs; an image variant (spatial convs, spatial attention, single frames) pretrains the
weights a video variant ((2+1)D convs, divided attention) inflates with ``train.init_from``.
"""

import ml_collections

from configs import vdm_shapes


def stage_config(*, frames: int, resolution: int, video: bool, task: dict,
                 batch_size: int = 8, steps: int = 1000) -> ml_collections.ConfigDict:
    """A stage trained on ``frames x resolution x resolution`` clips (``frames=1``: images).

    ``video`` picks the spatiotemporal layers (``2plus1d`` convs, ``divided`` attention) over the
    per-frame image layers (``spatial``, ``space``).
    """
    c = vdm_shapes.base_config()
    c.data.update(num_frames=frames, resolution=resolution, batch_size=batch_size)
    c.model.update(
        name="make_a_video",
        conv="2plus1d" if video else "spatial",
        attention="divided" if video else "space",
        frame_positions=False,  # only temporal layers differ between image and video models
        pooled_text=True,  # extra context tokens (scalar, image embedding) reach every res block
        cond_channels=0, scalar_cond=False, image_embed_dim=0,  # filled from the task
        embed_tokens=2,
        prior_hidden=128,
    )
    c.task = dict(name="generate", image_embed_grid=0, skips=(4,), low_resolution=16,
                  aug_max=0.5)
    c.task.update(task)
    c.train.update(steps=steps, init_from="", freeze_spatial=False, prior_weight=0.0,
                   checkpoint_every=max(steps // 2, 1))
    c.sample.update(aug_level=0.1, share_noise=False)
    return c


def shrink_for_test(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The stage at the smallest size that exercises every layer: seconds on a CPU."""
    c.data.update(batch_size=2)
    c.model.update(channels=16, channel_mult=(1, 2), attention_levels=(1,), head_dim=16,
                   prior_hidden=32)
    c.model.text.update(width=32, depth=1, num_heads=2)
    c.train.update(steps=2, warmup_steps=1, log_every=1, checkpoint_every=2)
    c.sample.update(num_steps=2, prompts=("a red circle moving right",))
    c.eval.update(num_samples=2, batch_size=2)
    return c


def check_variant(arg: str, variants: tuple[str, ...], name: str) -> None:
    if arg not in variants:
        raise ValueError(f"unknown variant {arg!r} of {name}; choose one of {variants}")
