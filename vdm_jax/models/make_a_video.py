"""Make-A-Video's networks (Singer et al. 2022) as configurations of the VDM UNet.

Every stage is :class:`MakeAVideoUNet`: the caption encoder and a :class:`UNet3D`, plus
conditioning that needs no change to the UNet:

- a conditioning video (``cond_channels``), concatenated to the noisy input on channels: the
  masked frames and mask channel of the interpolation network F, the upsampled low-resolution
  video of the super-resolution networks SR_l / SR_h;
- a scalar (``scalar_cond``), the frame skip of F or the noise-augmentation level of an SR stage,
  as one extra context token (cross-attention, and the time embedding through ``pooled_text``);
- an image embedding ``(b, d)`` (``image_embed_dim``), the decoder D_t's conditioning, as
  ``embed_tokens`` extra context tokens; any image embedding fits. Without one, the prior P
  (:class:`ImagePrior`, text -> image embedding over the caption encoder's output) supplies it.

The image model and its video model differ only in ``UNet3D.conv`` / ``attention``
(``spatial`` / ``space`` vs ``2plus1d`` / ``divided``); ``param_paths.inflate_image_params``
turns one's parameters into the other's, the identity-initialised temporal layers making the
inflated video model equal the image model applied per frame.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vdm_jax.models.text_encoder import TextEncoder
from vdm_jax.models.unet3d import UNet3D
from vdm_jax.models.vdm import encode_captions
from vdm_jax.nn.dense import dense
from vdm_jax.nn.embeddings import timestep_embedding
from vdm_jax.nn.norms import layer_norm

Dtype = jnp.dtype


class ScalarToken(nn.Module):
    """A scalar ``(b,)`` (sinusoidal features, as a diffusion time) -> a token ``(b, 1, width)``."""

    width: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, value: jax.Array) -> jax.Array:
        x = timestep_embedding(value, self.width)
        x = dense(self.width, ("embed", "mlp"), "hidden", self.dtype)(x)
        return dense(self.width, ("mlp", "embed"), "out", self.dtype)(nn.silu(x))[:, None]


class EmbeddingTokens(nn.Module):
    """An image embedding ``(b, d)`` -> ``(b, num_tokens, width)`` context tokens (unCLIP)."""

    num_tokens: int
    width: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, embed: jax.Array) -> jax.Array:
        x = dense(self.num_tokens * self.width, ("embed", "mlp"), "proj", self.dtype)(embed)
        return x.reshape(embed.shape[0], self.num_tokens, self.width)


class ImagePrior(nn.Module):
    """The prior P: caption features ``(b, L, w)`` (masked ``(b, L)``) -> an image embedding
    ``(b, dim)``: masked mean, LayerNorm, a two-layer MLP. Trained by regression (MSE) onto the
    training images' embeddings, so it predicts their conditional mean."""

    dim: int
    hidden: int = 256
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, context: jax.Array, mask: jax.Array) -> jax.Array:
        w = mask.astype(jnp.float32)[..., None]
        pooled = (context * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
        x = layer_norm("norm", self.dtype)(pooled)
        x = nn.silu(dense(self.hidden, ("embed", "mlp"), "hidden", self.dtype)(x))
        return dense(self.dim, ("mlp", "embed"), "out", self.dtype)(x).astype(jnp.float32)


class MakeAVideoUNet(nn.Module):
    """Caption encoder + UNet with the stage's conditioning (see the module docstring).

    Attributes:
      cond_channels: channels of the conditioning video concatenated to the input (0: none).
      scalar_cond: condition on a scalar ``(b,)`` (frame skip, augmentation level).
      image_embed_dim: size of the image-embedding conditioning (0: none); the prior predicts it
        from the caption when none is given.
      embed_tokens: context tokens made from the image embedding.
      prior_hidden: hidden width of the prior.
    """

    unet: UNet3D
    text: TextEncoder
    cond_channels: int = 0
    scalar_cond: bool = False
    image_embed_dim: int = 0
    embed_tokens: int = 4
    prior_hidden: int = 256

    def setup(self):
        width, dtype = self.text.width, self.unet.dtype
        if self.scalar_cond:
            self.scalar_token = ScalarToken(width, dtype)
        if self.image_embed_dim:
            self.embed_token = EmbeddingTokens(self.embed_tokens, width, dtype)
            self.prior = ImagePrior(self.image_embed_dim, self.prior_hidden, dtype)

    def __call__(self, x, t, tokens, image_frames=None, *, cond=None, train=False):
        """``x (b, t, h, w, c)`` noisy video, ``t (b,)``, ``tokens (b, L)``; ``cond`` a dict with
        ``video (b, t, h, w, cond_channels)``, ``scalar (b,)``, ``image_embed (b, d)`` (missing
        entries: zeros, and the prior's embedding) -> ``(b, t, h, w, out_channels)``."""
        cond = cond or {}
        context, mask = self._context(tokens, cond, x.shape[0])
        if self.cond_channels:
            video = cond.get("video", jnp.zeros((*x.shape[:-1], self.cond_channels), x.dtype))
            x = jnp.concatenate([x, video.astype(x.dtype)], axis=-1)
        return self.unet(x, t, context, mask, image_frames, train=train)

    def _context(self, tokens: jax.Array, cond: dict, b: int) -> tuple[jax.Array, jax.Array]:
        """The caption's tokens followed by the scalar's and the image embedding's:
        ``(context (b, L + extra, w), mask (b, L + extra))``."""
        context, mask = encode_captions(self.text, tokens, b)
        extra = []
        if self.scalar_cond:
            extra.append(self.scalar_token(cond.get("scalar", jnp.zeros((b,)))))
        if self.image_embed_dim:
            embed = cond.get("image_embed")
            if embed is None:
                embed = self.prior(jax.lax.stop_gradient(context), mask)
            extra.append(self.embed_token(embed.astype(context.dtype)))
        if not extra:
            return context, mask
        extra = jnp.concatenate(extra, axis=1).astype(context.dtype)
        return (jnp.concatenate([context, extra], axis=1),
                jnp.concatenate([mask, jnp.ones(extra.shape[:2], bool)], axis=1))

    def predict_image_embed(self, tokens: jax.Array) -> jax.Array:
        """The prior P: ``tokens (b, L)`` -> image embedding ``(b, image_embed_dim)``."""
        context, mask = encode_captions(self.text, tokens, tokens.shape[0])
        return self.prior(jax.lax.stop_gradient(context), mask)

    def prior_loss(self, tokens: jax.Array, image_embed: jax.Array) -> jax.Array:
        """Per-example MSE of the prior against ``image_embed (b, d)``: ``(b,)``. The caption
        features enter with a stopped gradient, so the prior does not change the denoiser."""
        return jnp.mean(jnp.square(self.predict_image_embed(tokens) - image_embed), axis=-1)


def build_make_a_video(model_cfg: ml_collections.ConfigDict, unet: UNet3D,
                       text: TextEncoder) -> MakeAVideoUNet:
    """The stage from ``model_cfg`` fields ``cond_channels``, ``scalar_cond``,
    ``image_embed_dim``, ``embed_tokens``, ``prior_hidden`` (defaults as the class)."""
    return MakeAVideoUNet(
        unet=unet, text=text,
        cond_channels=model_cfg.get("cond_channels", 0),
        scalar_cond=model_cfg.get("scalar_cond", False),
        image_embed_dim=model_cfg.get("image_embed_dim", 0),
        embed_tokens=model_cfg.get("embed_tokens", 4),
        prior_hidden=model_cfg.get("prior_hidden", 256),
    )
