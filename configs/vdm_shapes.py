"""python -m experiments.train --config configs/vdm_shapes.py:tiny --workdir workdir/vdm_tiny

Text-conditioned VDM (3D UNet, divided space-time attention) on the built-in bouncing-shapes
data. Variants: ``tiny`` (the CPU demo: 8×16×16 clips, minutes on 2 cores), ``small``
(16×64×64, a GPU), ``test`` (a few seconds, for the test suite).

The ``tiny`` model departs from VDM in switchable ways, with which its samples follow the
direction word within the demo's budget (which of them are necessary is not ablated): (2+1)D
convolutions; an absolute frame-index embedding and the pooled caption added to the time
embedding (``model.frame_positions``, ``model.pooled_text``); a conditional layout map added to
the prediction, an MLP of the caption's tokens, the frame index and the time
(``model.cond_layout="output"``, ``model.layout_tokens``, see ``vdm_jax.nn.layout``); a
pixel-position embedding (``model.pixel_positions``) and a time-modulated output norm
(``model.film_out``). It trains with the unweighted v-loss on times warped towards high noise
(``diffusion.time_warp``), where the layout of a clip, and so its direction, is decided, on
clips whose objects cross the whole frame (``data.min_travel=1``). ``conv=spatial`` with every
extra off is the paper's architecture.
"""

import ml_collections

VARIANTS = ("tiny", "small", "test")


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = dict(
        source="shapes",  # shapes | folder | tfds
        num_frames=8,
        resolution=16,
        num_examples=1_000_000,
        min_travel=1 / 3,  # least travel over a clip, fraction of the frame (1: edge to edge)
        seed=0,
        batch_size=8,
        max_text_len=8,
        path="",  # folder root or TFDS data_dir
        eval_path="",
        frame_stride=1,
        default_caption="",
        tfds_name="",
        tfds_split="train",
        tfds_eval_split="test",
        tfds_video_key="video",
        tfds_label_key="",  # caption from a class label: caption_template.format(name)
        tfds_caption_key="",  # or from a text feature
        caption_template="a video of {}",
        worker_count=0,
    )

    c.model = dict(
        name="unet3d",
        channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_levels=(1, 2),
        head_dim=32,
        conv="2plus1d",  # spatial (1x3x3, as VDM) | 2plus1d | naive3d | causal3d
        attention="divided",  # space | joint | divided | sparse_local_global | axial | godiva
        frame_positions=True,  # absolute frame-index embedding (VDM: relative only)
        pooled_text=True,  # pooled caption added to the time embedding (Imagen)
        pixel_positions=False,  # absolute pixel-position embedding after the first conv
        cond_layout="none",  # none | input | output: conditional spatial map (caption x frame)
        layout_tokens=False,  # the conditional map embeds the caption tokens itself
        film_out=False,  # output GroupNorm modulated by the time/caption/frame embedding
        dropout=0.0,
        out_channels=3,
        text=dict(vocab_size=0, width=64, depth=2, num_heads=2, max_len=0),  # sizes from data
    )

    c.diffusion = dict(
        schedule="cosine",
        schedule_kwargs=dict(),
        parameterization="v",  # eps | v | x0
        loss_weighting="min_snr",  # none | snr | min_snr | truncated_snr
        cond_drop_rate=0.1,
        time_warp=1.0,  # training times t -> 1 - (1 - t)^time_warp; > 1 favours high noise
    )

    c.train = dict(
        steps=1200,
        learning_rate=1e-3,
        warmup_steps=100,
        final_lr_fraction=0.05,
        weight_decay=0.0,
        adam_b1=0.9,
        adam_b2=0.99,
        grad_clip=1.0,
        ema_decay=0.999,
        num_image_frames=0,  # joint image-video training: stills appended per clip
        log_every=50,
        checkpoint_every=400,
        sample_every=0,  # 0: only at the end
        max_nonfinite_streak=20,
    )

    c.sample = dict(
        sampler="ddim",  # ddim | ddpm
        num_steps=50,
        eta=0.0,
        guidance=3.0,
        prompts=(
            "a red circle moving right",
            "a green square moving left",
            "a blue triangle moving up",
            "a yellow circle moving down",
        ),
        seed=0,
        fps=4,
    )

    c.eval = dict(num_samples=48, batch_size=16, seed=1)

    # Device mesh (vdm_jax.sharding): preset none | dp | fsdp | fsdp_tp | fsdp_cp | vae_spatial;
    # shape = sizes of (data, fsdp, context, tensor), one may be -1, () = the preset's default;
    # rules_overrides = logical name -> mesh axes (or None). data.batch_size is per process.
    c.mesh = dict(preset="none", shape=(), rules_overrides=dict())
    return c


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r} of vdm_shapes; choose one of {VARIANTS}")
    c = base_config()
    if arg == "tiny":
        c.data.min_travel = 1.0
        c.model.update(channels=16, cond_layout="output", layout_tokens=True, film_out=True,
                       pixel_positions=True)
        c.diffusion.update(loss_weighting="none", time_warp=2.0)
        c.train.steps = 3600
    if arg == "small":
        c.data.update(num_frames=16, resolution=64, batch_size=16)
        c.model.update(channels=64, channel_mult=(1, 2, 3, 4), num_res_blocks=2,
                       attention_levels=(2, 3))
        c.train.update(steps=50_000, learning_rate=2e-4, warmup_steps=1000, checkpoint_every=5000,
                       sample_every=5000)
    elif arg == "test":
        c.data.update(num_frames=4, resolution=16, batch_size=2)
        c.model.update(channels=16, channel_mult=(1, 2), attention_levels=(1,), head_dim=16)
        c.model.text.update(width=32, depth=1, num_heads=2)
        c.train.update(steps=4, warmup_steps=2, log_every=2, checkpoint_every=2)
        c.sample.update(num_steps=4, prompts=("a red circle moving right",))
        c.eval.update(num_samples=4, batch_size=4)
    return c
