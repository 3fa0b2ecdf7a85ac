"""Video diffusion architectures; each file ends with a ``VARIANTS`` table of named sizes."""

from vdm_jax.models.latte import LatteTransformer
from vdm_jax.models.text_encoder import BOS_ID, PAD_ID, TextEncoder
from vdm_jax.models.timesformer import TimeSformer
from vdm_jax.models.unet3d import VARIANTS, UNet3D
from vdm_jax.models.unet3d_condition import UNet3DCondition
from vdm_jax.models.vdm import TextToVideoUNet, build_model, count_params, model_config
from vdm_jax.models.video_resnet import VideoResNet

__all__ = [
    "BOS_ID",
    "LatteTransformer",
    "PAD_ID",
    "TextEncoder",
    "TextToVideoUNet",
    "TimeSformer",
    "UNet3D",
    "UNet3DCondition",
    "VARIANTS",
    "VideoResNet",
    "build_model",
    "count_params",
    "model_config",
]
