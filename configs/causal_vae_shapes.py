"""python -m experiments.train_vae --config configs/causal_vae_shapes.py:tiny --workdir DIR

Video autoencoders on the built-in bouncing-shapes data. ``model.name`` picks one of
``causal_vae`` (CogVideoX's causal 3D VAE, the default), ``video_vae`` (VideoVAE, sequential),
``magicvideo`` (image VAE + temporal-attention decoder) or ``image_vae`` (per frame); each has its
fields under its own name. Variants: ``tiny`` (CPU: 9x32x32 clips), ``small`` (17x64x64, a GPU),
``test`` (seconds, for the test suite).

The four models share widths so the ablation compares designs at similar size: 4x spatial
compression everywhere, 4x temporal for the two 3D designs (9 frames -> 3 latent frames).

``--config.train.init_from=DIR`` starts a fresh run from the autoencoder run in ``DIR`` (e.g. an
``image_vae`` run for ``magicvideo`` or ``video_vae``): its weights go into the matching
non-temporal parameters, the temporal layers keep their init. ``--config.train.freeze_spatial``
then trains only the temporal layers (MagicVideo's fine-tuning).
"""

import ml_collections

from configs.vdm_shapes import base_config as diffusion_config

VARIANTS = ("tiny", "small", "test")
MODELS = ("causal_vae", "video_vae", "magicvideo", "image_vae")


def _models(widths: tuple[int, ...], latent: int, groups: int, head_dim: int) -> dict:
    image = dict(block_out_channels=widths, layers_per_block=1, latent_channels=latent,
                 norm_num_groups=groups)
    return dict(
        name="causal_vae",
        causal_vae=dict(block_out_channels=widths, layers_per_block=1, latent_channels=latent,
                        norm_num_groups=groups, temporal_compression_ratio=4,
                        encoder_frame_batch=None, decoder_frame_batch=None),
        video_vae=dict(block_out_channels=widths, layers_per_block=1, spatial_channels=latent,
                       norm_num_groups=groups, temporal_head_dim=head_dim,
                       latent_channels=latent, temporal_compression=4,
                       temporal_width=widths[-1], temporal_groups=groups),
        magicvideo=dict(image, temporal_head_dim=head_dim),
        image_vae=image,
    )


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = diffusion_config().data
    c.data.update(num_frames=9, resolution=32, batch_size=4)
    c.model = _models((16, 32, 64), latent=4, groups=8, head_dim=32)
    c.loss = dict(
        l1_weight=1.0,
        kl_weight=1e-6,  # per input value (latent diffusion's balance)
        perceptual="",  # "module:function(reconstruction, target) -> scalar", e.g. LPIPS
        perceptual_weight=0.0,
        disc_weight=0.0,  # > 0: PatchGAN hinge loss on reconstructions
        disc_start=1000,
        disc_kind="3d",  # 2d: per frame | 3d: space-time kernels (sees flicker)
        disc_channels=32,
        disc_layers=2,
    )
    c.train = dict(
        steps=1500,
        learning_rate=1e-3,
        warmup_steps=100,
        final_lr_fraction=0.05,
        weight_decay=0.0,
        adam_b1=0.9,
        adam_b2=0.99,
        grad_clip=1.0,
        num_images=1,  # joint batches: per clip, this many random frames as one-frame videos
        image_weight=0.25,
        log_every=50,
        checkpoint_every=500,
        sample_every=0,  # held-out evaluation; 0: only at the end
        max_nonfinite_streak=20,
        init_from="",  # workdir of a trained autoencoder run to start from ("": scratch)
        freeze_spatial=False,  # True: only temporal parameters train
    )
    c.eval = dict(num_samples=32, batch_size=8)
    return c


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r} of causal_vae_shapes; choose one of {VARIANTS}")
    c = base_config()
    if arg == "small":
        c.data.update(num_frames=17, resolution=64, batch_size=8)
        c.model = _models((64, 128, 256, 256), latent=8, groups=32, head_dim=64)
        c.loss.update(disc_weight=0.1, disc_start=20_000, disc_channels=64, disc_layers=3)
        c.train.update(steps=100_000, learning_rate=2e-4, warmup_steps=1000,
                       checkpoint_every=5000, sample_every=5000)
    elif arg == "test":
        c.data.update(num_frames=9, resolution=16, batch_size=2)
        c.model = _models((8, 8, 16), latent=4, groups=4, head_dim=8)
        c.loss.update(disc_weight=0.1, disc_start=2, disc_channels=8, disc_layers=1)
        c.train.update(steps=4, warmup_steps=2, log_every=2, checkpoint_every=2)
        c.eval.update(num_samples=4, batch_size=4)
    return c
