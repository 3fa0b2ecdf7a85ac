"""MagicVideo's video decoder (Zhou et al. 2022): the image VAE decoder with temporal attention.

Decoding latent frames one at a time lets neighbouring frames drift apart (flicker). The video
decoder inserts attention over frames after every resnet block of the image decoder (divided
space-time attention: the decoder's own layers mix within a frame, the new ones across frames)
and is fine-tuned on videos with the encoder and the spatial layers frozen. The temporal layers'
output projections start at zero, so at init it *is* the image decoder applied per frame.

It is an :class:`AutoencoderKL` with ``temporal_head_dim`` set. Workflow::

    video_vae = video_decoder_for(vae)
    params = inflate_image_params(vae_params, video_vae.init(key, frames))
    tx = optax.multi_transform({"temporal": optax.adam(lr), "frozen": optax.set_to_zero()},
                               temporal_param_labels)
    video = video_vae.apply(params, latents, method="decode_video")
"""

from vdm_jax.models.autoencoder_kl import AutoencoderKL
from vdm_jax.models.param_paths import inflate_image_params, temporal_param_labels

__all__ = ["inflate_image_params", "temporal_param_labels", "video_decoder_for"]


def video_decoder_for(vae: AutoencoderKL, temporal_head_dim: int = 64) -> AutoencoderKL:
    """``vae`` with MagicVideo's temporal attention in its decoder (``temporal_head_dim``
    channels per head, ``max(c // temporal_head_dim, 1)`` heads at width ``c``)."""
    return vae.clone(temporal_head_dim=temporal_head_dim)
