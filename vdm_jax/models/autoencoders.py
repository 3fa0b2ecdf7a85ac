"""The video autoencoders by name, behind one interface, for training, latent caching and the
ablation.

Every autoencoder here is a Linen module with ``encode_video(x) -> DiagonalGaussian`` and
``decode_video(z) -> video`` on channels-last videos ``(b, t, h, w, c)`` in ``[-1, 1]``, and a
``spatial_factor`` (pixels per latent pixel along h and w):

- ``image_vae``: Stable Diffusion's :class:`AutoencoderKL`, frame by frame (the naive baseline).
- ``magicvideo``: the same with temporal attention in the decoder (MagicVideo).
- ``video_vae``: :class:`VideoVAE`, spatial then temporal compression (VideoVAE, sequential).
- ``causal_vae``: :class:`CausalVAE`, CogVideoX's causal 3D autoencoder.

A config's ``model`` section names one (``model.name``) and holds the fields of each under its
name, so ``--config.model.name=video_vae`` switches model without touching the others.
"""

import flax.linen as nn
import jax

from vdm_jax.models.autoencoder_kl import AutoencoderKL
from vdm_jax.models.causal_vae import CausalVAE
from vdm_jax.models.posterior import DiagonalGaussian
from vdm_jax.models.sizes import nearest_valid
from vdm_jax.models.video_vae import VideoVAE

AUTOENCODERS: dict[str, type[nn.Module]] = {
    "image_vae": AutoencoderKL,
    "magicvideo": AutoencoderKL,
    "video_vae": VideoVAE,
    "causal_vae": CausalVAE,
}


def build_autoencoder(model_cfg) -> nn.Module:
    """The module named by ``model_cfg.name``, built from ``model_cfg[name]``."""
    name = model_cfg.name
    if name not in AUTOENCODERS:
        raise ValueError(f"unknown autoencoder {name!r}; choose one of {sorted(AUTOENCODERS)}")
    fields = dict(model_cfg.get(name, {}))
    if name == "magicvideo" and not fields.get("temporal_head_dim"):
        raise ValueError("model.magicvideo.temporal_head_dim must be set (the decoder's "
                         "temporal attention is what makes it MagicVideo's)")
    if name == "image_vae" and fields.get("temporal_head_dim"):
        raise ValueError("model.image_vae has no temporal layers; use model.name=magicvideo")
    try:
        return AUTOENCODERS[name](**fields)
    except TypeError as err:
        raise ValueError(f"bad model.{name} fields: {err}") from None


def temporal_factor(model: nn.Module) -> int:
    """Frames per latent frame after the first (1 for per-frame autoencoders)."""
    if isinstance(model, CausalVAE):
        return model.temporal_compression_ratio
    if isinstance(model, VideoVAE):
        return model.temporal_compression
    return 1


def latent_shape(model: nn.Module, video_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(t, h, w, c)`` of a clip -> ``(t', h', w', latent_channels)`` of its latents."""
    t, h, w, _ = video_shape
    r, f = temporal_factor(model), model.spatial_factor
    frames = t if r == 1 else (t - 1) // r + 1
    return (frames, h // f, w // f, model.latent_channels)


def check_round_trip(model: nn.Module, frames: int) -> None:
    """Raises unless clips of ``frames`` frames decode back to ``frames`` frames.

    The causal VAE decodes ``n`` latent frames to ``4n - 3`` frames only for odd ``n`` (CogVideoX's
    decoder keeps the first latent separate only then), so it round-trips ``8k + 1`` frames.
    """
    r = temporal_factor(model)
    if r == 1:
        return
    period = 2 * r if isinstance(model, CausalVAE) else r
    if (frames - 1) % period:
        raise ValueError(f"{type(model).__name__} round-trips {period}k+1 frames; got {frames}: "
                         f"{nearest_valid(frames, period, 1)}")


def compression_ratio(model: nn.Module, video_shape: tuple[int, ...]) -> float:
    """Values in a clip / values in its latents."""
    lt, lh, lw, lc = latent_shape(model, video_shape)
    t, h, w, c = video_shape
    return (t * h * w * c) / (lt * lh * lw * lc)


def reconstruct(module: nn.Module, video: jax.Array, key: jax.Array | None = None):
    """``(reconstruction, posterior)``: a posterior sample with ``key``, else its mode.

    Use as ``model.apply(params, video, key, method=reconstruct)``.
    """
    post: DiagonalGaussian = module.encode_video(video)
    z = post.mode() if key is None else post.sample(key)
    return module.decode_video(z), post
