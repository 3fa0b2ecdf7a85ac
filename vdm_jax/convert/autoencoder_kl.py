"""diffusers ``AutoencoderKL`` -> :class:`vdm_jax.models.autoencoder_kl.AutoencoderKL`.

Our module names mirror diffusers' (``down_blocks.0.resnets.1`` is ``down_blocks_0/resnets_1``),
so renaming is a few substitutions. The mid-block attention's projections are accepted under
both their current names (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) and the older ones
(``query``, ``key``, ``value``, ``proj_attn``) that diffusers still renames when loading.
``sample_size``, ``force_upcast`` and ``latents_mean``/``latents_std`` concern tiling and
pipelines, not the network, and are not carried over.
"""

import re

import numpy as np

from vdm_jax.models.autoencoder_kl import AutoencoderKL, example_inputs

from .weights import assemble, check_vae_config, expected_shapes, substituted_path

_BLOCK_TYPES = {"down_block_types": "DownEncoderBlock2D", "up_block_types": "UpDecoderBlock2D"}
# diffusers module path pieces -> ours (applied in order, on the dotted key).
_SUBSTITUTIONS = [
    (re.compile(r"\b(down_blocks|up_blocks|resnets)\.(\d+)\b"), r"\1_\2"),
    (re.compile(r"\bdownsamplers\.0\b"), "downsample"),
    (re.compile(r"\bupsamplers\.0\b"), "upsample"),
    (re.compile(r"\battentions\.0\.group_norm\b"), "attention.norm"),
    (re.compile(r"\battentions\.0\.(to_q|query)\b"), "attention.attn.to_q"),
    (re.compile(r"\battentions\.0\.(to_k|key)\b"), "attention.attn.to_k"),
    (re.compile(r"\battentions\.0\.(to_v|value)\b"), "attention.attn.to_v"),
    (re.compile(r"\battentions\.0\.(to_out\.0|proj_attn)\b"), "attention.attn.to_out"),
]
_NORMS = ("norm1", "norm2", "norm", "conv_norm_out")


def model_from_config(config: dict) -> AutoencoderKL:
    """The :class:`AutoencoderKL` equal to a diffusers ``AutoencoderKL`` config."""
    check_vae_config(config, _BLOCK_TYPES)
    return AutoencoderKL(
        in_channels=config.get("in_channels", 3), out_channels=config.get("out_channels", 3),
        block_out_channels=tuple(config["block_out_channels"]),
        layers_per_block=config.get("layers_per_block", 1),
        latent_channels=config.get("latent_channels", 4),
        norm_num_groups=config.get("norm_num_groups", 32),
        scaling_factor=config.get("scaling_factor", 0.18215),
        shift_factor=config.get("shift_factor"),
        use_quant_conv=config.get("use_quant_conv", True),
        use_post_quant_conv=config.get("use_post_quant_conv", True),
        mid_block_add_attention=config.get("mid_block_add_attention", True),
    )


def _rename(key: str) -> tuple[str, str] | None:
    """diffusers key -> (our path, kind) or None for a key we do not know."""
    found = substituted_path(key, _SUBSTITUTIONS)
    if found is None:
        return None
    path, suffix = found
    leaf = path.rpartition("/")[2]
    if suffix == "bias":
        return f"{path}/bias", "param"
    if leaf in _NORMS:
        return f"{path}/scale", "param"
    return f"{path}/kernel", "linear" if leaf.startswith("to_") else "conv"


def _as_linear(w: np.ndarray) -> np.ndarray:
    # Projections stored as 1x1 convs (out, in, 1, 1) are the same matrix.
    return w[:, :, 0, 0] if w.ndim == 4 and w.shape[2:] == (1, 1) else w


def convert(config: dict, weights: dict[str, np.ndarray], dtype=np.float32):
    """``(model, {"params": ...})`` from a diffusers AutoencoderKL config and state dict."""
    model = model_from_config(config)
    expected = expected_shapes(model, *example_inputs(model))
    mapped, unknown = {}, []
    for key, w in weights.items():
        found = _rename(key)
        if found is None or found[0] not in expected:
            unknown.append(key)
            continue
        path, kind = found
        mapped[key] = (path, kind, None, _as_linear(w) if kind == "linear" else w)
    if unknown:
        raise ValueError(f"unrecognised AutoencoderKL weights: {sorted(unknown)}")
    return model, assemble(mapped, expected, dtype)
