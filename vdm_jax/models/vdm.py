"""Text-to-video models: a caption encoder feeding a denoiser (the VDM 3D UNet or Latte), and
the model builder the trainer and sampler share."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vdm_jax.models.counting import count_params  # noqa: F401  (re-exported)
from vdm_jax.models.latte import LatteTransformer
from vdm_jax.models.text_encoder import PAD_ID, TextEncoder
from vdm_jax.models.unet3d import VARIANTS, UNet3D

KNOWN_MODELS = ("unet3d", "latte", "make_a_video")  # make_a_video: the UNet + stage inputs
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class TextToVideoUNet(nn.Module):
    """Encodes caption tokens and runs the UNet with them as cross-attention context."""

    unet: UNet3D
    text: TextEncoder

    def __call__(self, x, t, tokens, image_frames=None, *, train=False):
        """``x (b, t, h, w, c)``, ``t (b,)`` in [0, 1], ``tokens (b, L) int32`` (0 = PAD),
        ``image_frames (b, t)`` bool -> ``(b, t, h, w, out_channels)`` float32."""
        context, mask = encode_captions(self.text, tokens, x.shape[0])
        layout_tokens = tokens if self.unet.layout_vocab else None
        return self.unet(x, t, context, mask, image_frames, train=train, tokens=layout_tokens)


class TextToVideoLatte(nn.Module):
    """Encodes caption tokens and runs Latte with them as cross-attention context."""

    latte: LatteTransformer
    text: TextEncoder

    def __call__(self, x, t, tokens, image_frames=None, *, train=False):
        """As :class:`TextToVideoUNet`: ``image_frames (b, t)`` bool marks independent images
        (they skip Latte's temporal blocks)."""
        del train  # no dropout in Latte
        context, mask = encode_captions(self.text, tokens, x.shape[0])
        return self.latte(x, t, context, mask, image_frames=image_frames)


def encode_captions(text: TextEncoder, tokens: jax.Array, batch: int):
    """``tokens (b, L)`` -> (context ``(b, L, d)``, mask ``(b, L)``), checking the batch."""
    if tokens.ndim != 2 or tokens.shape[0] != batch:
        raise ValueError(f"tokens must be (b, L) with b={batch}, got {tokens.shape}")
    return text(tokens), tokens != PAD_ID


def _dtype(name) -> jnp.dtype:
    if not isinstance(name, str):
        return name
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


def build_model(model_cfg: ml_collections.ConfigDict) -> nn.Module:
    """Builds the model named by ``model_cfg.name`` (see :func:`model_config` for fields).

    Optional fields: ``num_groups`` (None), ``remat`` ("none"), ``frame_positions`` (False),
    ``pooled_text`` (False), ``pixel_positions`` (False), ``cond_layout`` ("none"),
    ``layout_tokens`` (False), ``film_out`` (False),
    ``dtype`` ("float32").
    """
    if model_cfg.name not in KNOWN_MODELS:
        raise ValueError(f"unknown model name {model_cfg.name!r}; known: {list(KNOWN_MODELS)}")
    dtype = _dtype(model_cfg.get("dtype", "float32"))
    tc = model_cfg.text
    text = TextEncoder(
        vocab_size=tc.vocab_size, width=tc.width, depth=tc.depth, num_heads=tc.num_heads,
        max_len=tc.max_len, dtype=dtype,
    )
    if model_cfg.name == "latte":
        return TextToVideoLatte(latte=_build_latte(model_cfg, tc.width, dtype), text=text)
    unet = UNet3D(
        out_channels=model_cfg.out_channels,
        channels=model_cfg.channels,
        channel_mult=tuple(model_cfg.channel_mult),
        num_res_blocks=model_cfg.num_res_blocks,
        attention_levels=tuple(model_cfg.attention_levels),
        head_dim=model_cfg.head_dim,
        conv=model_cfg.conv,
        attention=model_cfg.get("attention", "divided"),
        dropout=model_cfg.dropout,
        num_groups=model_cfg.get("num_groups", None),
        remat=model_cfg.get("remat", "none"),
        frame_positions=model_cfg.get("frame_positions", False),
        pooled_text=model_cfg.get("pooled_text", False),
        pixel_positions=model_cfg.get("pixel_positions", False),
        cond_layout=model_cfg.get("cond_layout", "none"),
        layout_vocab=tc.vocab_size if model_cfg.get("layout_tokens", False) else 0,
        film_out=model_cfg.get("film_out", False),
        dtype=dtype,
    )
    if model_cfg.name == "make_a_video":
        from vdm_jax.models.make_a_video import build_make_a_video

        return build_make_a_video(model_cfg, unet, text)
    return TextToVideoUNet(unet=unet, text=text)


def _build_latte(model_cfg: ml_collections.ConfigDict, caption_channels: int, dtype):
    """Latte from ``model_cfg`` (fields as :class:`LatteTransformer`'s attributes; ``size``
    picks a ``latte.VARIANTS`` entry that explicit fields override)."""
    from vdm_jax.models import latte

    fields = dict(latte.VARIANTS[model_cfg.size]) if model_cfg.get("size") else {}
    known = {f.name for f in dataclasses.fields(LatteTransformer)} - {"parent", "name"}
    fields.update({k: v for k, v in model_cfg.items() if k in known})
    fields.update(caption_channels=caption_channels, dtype=dtype)
    return LatteTransformer(**fields)


def model_config(variant: str = "tiny") -> ml_collections.ConfigDict:
    """A model config for a named size in ``unet3d.VARIANTS`` (``name="unet3d"``)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    cfg = ml_collections.ConfigDict(dict(name="unet3d", **VARIANTS[variant]))
    cfg.num_groups = ml_collections.config_dict.placeholder(int)
    cfg.remat = "none"
    cfg.dtype = "float32"
    return cfg
