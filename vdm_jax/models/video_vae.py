"""VideoVAE's sequential spatio-temporal autoencoder (Xing et al. 2024; survey §2.2).

Space first, then time: a temporal-aware spatial encoder (the image VAE's encoder with
identity-initialised temporal attention after every resnet, so it starts as the image encoder)
compresses each frame 8x (or the image VAE's factor); a lightweight temporal autoencoder then
compresses the latent frames 2x per level with causal strided convs, keeping the first frame on
its own as CogVideoX does, so ``(r k + 1)`` frames map to ``k + 1`` latent frames and a single
image is a one-frame video. Decoding mirrors it: the temporal decoder restores the latent
frames, then the image decoder (with the same temporal attention, MagicVideo style) the pixels.

``param_paths.inflate_image_params(image_params, params)`` copies an :class:`AutoencoderKL`'s
weights into the spatial parts, so training starts from a pretrained image autoencoder.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdm_jax.models.posterior import DiagonalGaussian
from vdm_jax.models.sizes import nearest_valid
from vdm_jax.models.vae_blocks import Decoder, Encoder, ResnetBlock, group_norm
from vdm_jax.nn.conv import CausalVideoConv, SpatialConv

Dtype = jnp.dtype


def upsample_time(x: jax.Array) -> jax.Array:
    """``k + 1`` frames -> ``2k + 1``: the first frame alone, every later one repeated twice."""
    return jnp.concatenate([x[:, :1], jnp.repeat(x[:, 1:], 2, axis=1)], axis=1)


class TemporalEncoder(nn.Module):
    """Spatial latents ``(b, t, h, w, c)`` -> moments ``(b, (t-1)/r + 1, h, w, 2 * out)``."""

    out_channels: int
    width: int
    levels: int
    num_groups: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = CausalVideoConv(self.width, dtype=self.dtype, name="conv_in")(x)
        for i in range(self.levels):
            x = ResnetBlock(self.width, self.num_groups, self.dtype, causal=True,
                            name=f"res_{i}")(x)
            # kt=3, stride 2, first frame replicated twice in front: t = 2k + 1 -> k + 1.
            x = CausalVideoConv(self.width, temporal_stride=2, dtype=self.dtype,
                                name=f"down_{i}")(x)
        x = nn.silu(group_norm(self.num_groups, self.dtype, "norm_out")(x))
        return CausalVideoConv(2 * self.out_channels, dtype=self.dtype, name="conv_out")(x)


class TemporalDecoder(nn.Module):
    """Temporal latents ``(b, k + 1, h, w, c)`` -> spatial latents ``(b, r k + 1, h, w, out)``."""

    out_channels: int
    width: int
    levels: int
    num_groups: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        x = CausalVideoConv(self.width, dtype=self.dtype, name="conv_in")(z)
        for i in range(self.levels):
            x = CausalVideoConv(self.width, dtype=self.dtype, name=f"up_{i}")(upsample_time(x))
            x = ResnetBlock(self.width, self.num_groups, self.dtype, causal=True,
                            name=f"res_{i}")(x)
        x = nn.silu(group_norm(self.num_groups, self.dtype, "norm_out")(x))
        return CausalVideoConv(self.out_channels, dtype=self.dtype, name="conv_out")(x)


class VideoVAE(nn.Module):
    """Videos ``(b, r k + 1, h, w, in)`` <-> latents ``(b, k + 1, h/f, w/f, latent_channels)``.

    Attributes:
      block_out_channels, layers_per_block, spatial_channels, norm_num_groups,
        mid_block_add_attention: the image VAE's (``spatial_channels`` is its latent width).
      temporal_head_dim: channels per head of the temporal attention in encoder and decoder.
      latent_channels: channels of the final space-time latent.
      temporal_compression: ``r``, a power of two.
      temporal_width, temporal_groups: width and GroupNorm groups of the temporal autoencoder.
    """

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    spatial_channels: int = 4
    norm_num_groups: int = 32
    mid_block_add_attention: bool = True
    temporal_head_dim: int = 64
    latent_channels: int = 16
    temporal_compression: int = 4
    temporal_width: int = 64
    temporal_groups: int = 8
    dtype: Dtype | None = None

    def __post_init__(self):
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        super().__post_init__()

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def temporal_levels(self) -> int:
        r = self.temporal_compression
        if r < 1 or r & (r - 1):
            raise ValueError(f"temporal_compression must be a power of two, got {r}")
        return int(math.log2(r))

    def setup(self):
        args = (self.block_out_channels, self.layers_per_block, self.norm_num_groups,
                self.mid_block_add_attention, self.temporal_head_dim)
        self.encoder = Encoder(self.spatial_channels, *args, dtype=self.dtype)
        self.quant_conv = SpatialConv(2 * self.spatial_channels, kernel_size=(1, 1),
                                      dtype=self.dtype)
        temporal = (self.temporal_width, self.temporal_levels, self.temporal_groups)
        self.temporal_encoder = TemporalEncoder(self.latent_channels, *temporal, self.dtype)
        self.temporal_decoder = TemporalDecoder(self.spatial_channels, *temporal, self.dtype)
        self.post_quant_conv = SpatialConv(self.spatial_channels, kernel_size=(1, 1),
                                           dtype=self.dtype)
        self.decoder = Decoder(self.out_channels, *args, dtype=self.dtype)

    def check_video(self, x: jax.Array) -> None:
        f, r, c = self.spatial_factor, self.temporal_compression, self.in_channels
        if x.ndim != 5 or x.shape[-1] != c or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"expected videos (b, t, h, w, {c}) with h and w multiples of {f}, "
                             f"got shape {x.shape}")
        t = x.shape[1]
        if (t - 1) % r:
            raise ValueError(f"got {t} frames; the temporal autoencoder takes {r}k+1 frames: "
                             f"{nearest_valid(t, r, 1)}")

    def encode(self, x: jax.Array) -> DiagonalGaussian:
        """``(b, r k + 1, h, w, in)`` -> posterior over ``(b, k + 1, h/f, w/f, latent)``."""
        self.check_video(x)
        spatial = DiagonalGaussian.from_moments(self.quant_conv(self.encoder(x))).mode()
        return DiagonalGaussian.from_moments(
            self.temporal_encoder(spatial).astype(jnp.float32))

    def decode(self, z: jax.Array) -> jax.Array:
        """``(b, k + 1, h, w, latent)`` -> ``(b, r k + 1, h*f, w*f, out)``."""
        if z.ndim != 5 or z.shape[-1] != self.latent_channels:
            raise ValueError(f"expected latents (b, t, h, w, {self.latent_channels}), got "
                             f"shape {z.shape}")
        spatial = self.temporal_decoder(z.astype(self.dtype or z.dtype))
        return self.decoder(self.post_quant_conv(spatial))

    def encode_video(self, x: jax.Array) -> DiagonalGaussian:
        """:meth:`encode` (the name every video autoencoder shares)."""
        return self.encode(x)

    def decode_video(self, z: jax.Array) -> jax.Array:
        """:meth:`decode` (the name every video autoencoder shares)."""
        return self.decode(z)

    def __call__(self, x: jax.Array, key: jax.Array | None = None):
        """``(reconstruction, posterior)``; decodes a sample with ``key``, else the mode."""
        post = self.encode(x)
        return self.decode(post.mode() if key is None else post.sample(key)), post


def example_inputs(model: VideoVAE) -> tuple[jax.Array]:
    f = model.spatial_factor
    return (jnp.zeros((1, model.temporal_compression + 1, f, f, model.in_channels)),)


VARIANTS = {
    # The SD image VAE's spatial part, 4x time, 16 latent channels (VideoVAE's setting).
    "sd_4x": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                  spatial_channels=4, latent_channels=16, temporal_compression=4,
                  temporal_width=256, temporal_groups=32),
    "tiny": dict(block_out_channels=(8, 16), layers_per_block=1, spatial_channels=4,
                 norm_num_groups=4, temporal_head_dim=8, latent_channels=8,
                 temporal_compression=4, temporal_width=16, temporal_groups=4),
}
