"""PatchGAN discriminator (Isola et al. 2017; the VQGAN / latent-diffusion autoencoder recipe) and
the hinge losses, for adversarial autoencoder training.

``kind="2d"`` judges every frame on its own (the image-VAE recipe); ``kind="3d"`` uses
``3 x 4 x 4`` kernels, so it also sees motion and can penalise flicker (the video-VAE recipe).
GroupNorm replaces the original BatchNorm so the module stays a pure function of its params.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

KINDS = ("2d", "3d")


def _conv(features: int, kind: str, stride: int, name: str) -> nn.Conv:
    kernel = (4, 4) if kind == "2d" else (3, 4, 4)
    strides = (stride, stride) if kind == "2d" else (1, stride, stride)
    padding = ((1, 2), (1, 2)) if kind == "2d" else ((1, 1), (1, 2), (1, 2))
    names = (None,) * len(kernel) + ("conv_in", "conv_out")
    return nn.Conv(
        features, kernel, strides=strides, padding=padding, name=name,
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
    )


class PatchDiscriminator(nn.Module):
    """Videos ``(b, t, h, w, c)`` -> patch logits ``(b, t, h', w', 1)``.

    Attributes:
      channels: width of the first layer, doubled per layer up to 8x.
      num_layers: stride-2 layers after the first (each halves h and w).
      kind: ``"2d"`` (per frame) or ``"3d"`` (space-time kernels).
    """

    channels: int = 64
    num_layers: int = 3
    kind: str = "2d"

    @nn.compact
    def __call__(self, video: jax.Array) -> jax.Array:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        b, t = video.shape[:2]
        h = video if self.kind == "3d" else video.reshape(b * t, *video.shape[2:])
        h = nn.leaky_relu(_conv(self.channels, self.kind, 2, "conv_0")(h), 0.2)
        for i in range(1, self.num_layers + 1):
            stride = 2 if i < self.num_layers else 1
            width = self.channels * min(2**i, 8)
            h = _conv(width, self.kind, stride, f"conv_{i}")(h)
            h = nn.GroupNorm(num_groups=min(32, width // 4), name=f"norm_{i}")(h)
            h = nn.leaky_relu(h, 0.2)
        logits = _conv(1, self.kind, 1, "logits")(h)
        return logits if self.kind == "3d" else logits.reshape(b, t, *logits.shape[1:])


def hinge_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``, halved (as VQGAN)."""
    return 0.5 * (jnp.mean(nn.relu(1.0 - real_logits)) + jnp.mean(nn.relu(1.0 + fake_logits)))


def generator_adversarial_loss(fake_logits: jax.Array) -> jax.Array:
    """The autoencoder's side of the hinge game: ``-mean(D(reconstruction))``."""
    return -jnp.mean(fake_logits)
