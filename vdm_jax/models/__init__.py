"""Video diffusion architectures; each file ends with a ``VARIANTS`` table of named sizes."""

from vdm_jax.models.text_encoder import BOS_ID, PAD_ID, TextEncoder
from vdm_jax.models.unet3d import VARIANTS, UNet3D
from vdm_jax.models.vdm import TextToVideoUNet, build_model, count_params, model_config

__all__ = [
    "BOS_ID",
    "PAD_ID",
    "TextEncoder",
    "TextToVideoUNet",
    "UNet3D",
    "VARIANTS",
    "build_model",
    "count_params",
    "model_config",
]
