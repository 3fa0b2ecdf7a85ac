"""The KL autoencoder of latent diffusion (Rombach et al. 2022), as diffusers' ``AutoencoderKL``.

Images ``(b, h, w, c)`` in ``[-1, 1]`` are encoded to a :class:`DiagonalGaussian` over latents
``(b, h/f, w/f, latent_channels)``, ``f = 2 ** (len(block_out_channels) - 1)``, and decoded
back. The naive latent-video baseline (and Latte) applies this image autoencoder to every frame
of a video: :meth:`AutoencoderKL.encode_video` / :meth:`~AutoencoderKL.decode_video` do that on
``(b, t, h, w, c)``. ``encode``/``decode`` work on raw latents like diffusers'; a diffusion model
sees :meth:`~AutoencoderKL.scale_latents` of them (``(z - shift_factor) * scaling_factor``).

Apply with ``model.apply(params, x, method="encode")`` etc.; ``model.apply(params, x, key)``
returns ``(reconstruction, posterior)`` (the posterior's mode without ``key``).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdm_jax.models import counting
from vdm_jax.models.posterior import DiagonalGaussian
from vdm_jax.models.vae_blocks import Decoder, Encoder
from vdm_jax.nn.conv import SpatialConv

Dtype = jnp.dtype


class AutoencoderKL(nn.Module):
    """diffusers ``AutoencoderKL`` (``DownEncoderBlock2D``/``UpDecoderBlock2D``, SiLU).

    Attributes:
      in_channels, out_channels: image channels.
      block_out_channels: width of each resolution level; all but the last halve h and w.
      layers_per_block: resnets per encoder level (the decoder has one more per level).
      latent_channels: channels of the latent (the encoder emits twice as many: mean, logvar).
      norm_num_groups: GroupNorm groups everywhere.
      scaling_factor, shift_factor: latent normalisation for the diffusion model.
      use_quant_conv, use_post_quant_conv: the 1x1 convs after the encoder / before the decoder.
      mid_block_add_attention: the self-attention in the encoder and decoder mid blocks.
      temporal_head_dim: set, the decoder gets identity-initialised attention over frames after
        every resnet (MagicVideo's video decoder, see ``video_decoder``); ``None``: the image
        autoencoder.
    """

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    temporal_head_dim: int | None = None
    dtype: Dtype | None = None

    def __post_init__(self):
        # Configs read back from JSON hold lists; keep the attribute hashable and comparable.
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        super().__post_init__()

    def setup(self):
        for ch in self.block_out_channels:
            if ch % self.norm_num_groups:
                raise ValueError(f"norm_num_groups={self.norm_num_groups} does not divide the "
                                 f"width {ch} of block_out_channels={self.block_out_channels}")
        self.encoder = Encoder(
            self.latent_channels, self.block_out_channels, self.layers_per_block,
            self.norm_num_groups, self.mid_block_add_attention, dtype=self.dtype)
        self.decoder = Decoder(
            self.out_channels, self.block_out_channels, self.layers_per_block,
            self.norm_num_groups, self.mid_block_add_attention, self.temporal_head_dim,
            dtype=self.dtype)
        c = self.latent_channels
        conv = lambda n: SpatialConv(n, kernel_size=(1, 1), dtype=self.dtype)  # noqa: E731
        self.quant_conv = conv(2 * c) if self.use_quant_conv else None
        self.post_quant_conv = conv(c) if self.use_post_quant_conv else None

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def check_pixels(self, x: jax.Array, video: bool) -> None:
        f, c = self.spatial_factor, self.in_channels
        want = f"(b, t, h, w, {c})" if video else f"(b, h, w, {c})"
        ok = x.ndim == (5 if video else 4) and x.shape[-1] == c
        if not ok or x.shape[-3] % f or x.shape[-2] % f:
            raise ValueError(f"expected {'videos' if video else 'images'} {want} with h and w "
                             f"multiples of {f}, got shape {x.shape}")

    def check_latents(self, z: jax.Array, video: bool) -> None:
        c = self.latent_channels
        if z.ndim != (5 if video else 4) or z.shape[-1] != c:
            want = f"(b, t, h, w, {c})" if video else f"(b, h, w, {c})"
            raise ValueError(f"expected latents {want}, got shape {z.shape}")

    def encode_frames(self, x: jax.Array) -> DiagonalGaussian:
        """``(b, t, h, w, c)`` -> posterior over ``(b, t, h/f, w/f, latent)``, per frame."""
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return DiagonalGaussian.from_moments(moments.astype(jnp.float32))

    def decode_frames(self, z: jax.Array) -> jax.Array:
        """``(b, t, h, w, latent)`` -> ``(b, t, h*f, w*f, out)``, per frame."""
        z = z.astype(self.dtype or z.dtype)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def encode(self, x: jax.Array) -> DiagonalGaussian:
        """Images ``(b, h, w, in)`` -> posterior over ``(b, h/f, w/f, latent)``."""
        self.check_pixels(x, video=False)
        post = self.encode_frames(x[:, None])
        return DiagonalGaussian(post.mean[:, 0], post.logvar[:, 0])

    def decode(self, z: jax.Array) -> jax.Array:
        """Latents ``(b, h, w, latent)`` -> images ``(b, h*f, w*f, out)``."""
        self.check_latents(z, video=False)
        return self.decode_frames(z[:, None])[:, 0]

    def encode_video(self, x: jax.Array) -> DiagonalGaussian:
        """Videos ``(b, t, h, w, in)`` -> posterior over ``(b, t, h/f, w/f, latent)``; every
        layer acts per frame, so this is :meth:`encode` of each frame."""
        self.check_pixels(x, video=True)
        return self.encode_frames(x)

    def decode_video(self, z: jax.Array) -> jax.Array:
        """Latent videos ``(b, t, h, w, latent)`` -> ``(b, t, h*f, w*f, out)``, frame by frame."""
        self.check_latents(z, video=True)
        return self.decode_frames(z)

    def __call__(self, x: jax.Array, key: jax.Array | None = None):
        """Images ``(b, h, w, in)`` -> ``(reconstruction, posterior)``; decodes a posterior
        sample drawn with ``key``, or its mode without one."""
        post = self.encode(x)
        z = post.mode() if key is None else post.sample(key)
        return self.decode(z), post

    def scale_latents(self, z: jax.Array) -> jax.Array:
        """Raw latents -> the unit-variance latents a diffusion model is trained on."""
        return (z - (self.shift_factor or 0.0)) * self.scaling_factor

    def unscale_latents(self, z: jax.Array) -> jax.Array:
        """Inverse of :meth:`scale_latents`, before :meth:`decode`."""
        return z / self.scaling_factor + (self.shift_factor or 0.0)


def example_inputs(model: AutoencoderKL) -> tuple[jax.Array]:
    """The smallest valid ``model.init`` input (parameter shapes do not depend on its size)."""
    f = model.spatial_factor
    return (jnp.zeros((1, f, f, model.in_channels)),)


def count_params(model: AutoencoderKL) -> int:
    return counting.count_params(model, *example_inputs(model))


# Released autoencoders (diffusers configs); SD 1.x/2.x has 83.65M parameters.
VARIANTS = {
    "sd": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
               scaling_factor=0.18215),
    "sdxl": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                 scaling_factor=0.13025),
    "sd3": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16,
                scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                use_post_quant_conv=False),
    "flux": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                 latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159,
                 use_quant_conv=False, use_post_quant_conv=False),
    "tiny": dict(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
                 norm_num_groups=4),
}
