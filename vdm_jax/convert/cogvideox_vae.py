"""diffusers ``AutoencoderKLCogVideoX`` -> :class:`vdm_jax.models.causal_vae.CausalVAE`.

Our module names mirror diffusers' (``down_blocks.0.resnets.1`` is ``down_blocks_0/resnets_1``)
except that a ``CogVideoXCausalConv3d`` holds its kernel directly, not in an inner ``.conv``.
Conv3d weights ``(out, in, kt, kh, kw)`` become ``(kt, kh, kw, in, out)`` kernels, Conv2d ones
(the resamplers) HWIO. ``sample_height``/``sample_width`` set the default tiles;
``force_upcast``, ``shift_factor``, ``latents_mean``/``latents_std`` and
``invert_scale_latents`` concern pipelines, not the network, and are not carried over.
"""

import re

import numpy as np

from vdm_jax.models.causal_vae import CausalVAE, example_inputs

from .weights import assemble, check_vae_config, expected_shapes, substituted_path

_BLOCK_TYPES = {"down_block_types": "CogVideoXDownBlock3D",
                "up_block_types": "CogVideoXUpBlock3D"}
_SUBSTITUTIONS = [
    (re.compile(r"\b(down_blocks|up_blocks|resnets|downsamplers|upsamplers)\.(\d+)\b"),
     r"\1_\2"),
    # CogVideoXCausalConv3d wraps its nn.Conv3d as ``.conv``; ours is the conv itself.
    (re.compile(r"\b(conv_in|conv_out|conv1|conv2|conv_y|conv_b)\.conv$"), r"\1"),
]


def model_from_config(config: dict) -> CausalVAE:
    """The :class:`CausalVAE` equal to a diffusers ``AutoencoderKLCogVideoX`` config."""
    check_vae_config(config, _BLOCK_TYPES)
    for field in ("use_quant_conv", "use_post_quant_conv"):
        if config.get(field):
            raise ValueError(f"{field}=True is not supported (no released CogVideoX VAE has it)")
    ratio = config.get("temporal_compression_ratio", 4)
    if ratio != int(ratio):
        raise ValueError(f"temporal_compression_ratio={ratio} must be an integer")
    return CausalVAE(
        in_channels=config.get("in_channels", 3), out_channels=config.get("out_channels", 3),
        block_out_channels=tuple(config["block_out_channels"]),
        latent_channels=config.get("latent_channels", 16),
        layers_per_block=config.get("layers_per_block", 3),
        norm_num_groups=config.get("norm_num_groups", 32),
        norm_eps=config.get("norm_eps", 1e-6),
        temporal_compression_ratio=int(ratio),
        sample_size=(config.get("sample_height", 480), config.get("sample_width", 720)),
        scaling_factor=config.get("scaling_factor", 1.15258426),
    )


def _rename(key: str, ndim: int) -> tuple[str, str] | None:
    """diffusers key (and its weight's rank) -> (our path, kind), or None for an unknown key."""
    found = substituted_path(key, _SUBSTITUTIONS)
    if found is None or not key.startswith(("encoder.", "decoder.")):
        return None
    path, suffix = found
    if suffix == "bias":
        return f"{path}/bias", "param"
    kinds = {1: ("scale", "param"), 4: ("kernel", "conv"), 5: ("kernel", "conv3d")}
    if ndim not in kinds:
        return None
    leaf, kind = kinds[ndim]
    return f"{path}/{leaf}", kind


def _conv3d(key: str, w: np.ndarray, path: str, expected: dict) -> np.ndarray:
    """``(out, in, kt, kh, kw)`` -> ``(kt, kh, kw, in, out)``, checked against the model."""
    w = np.transpose(w, (2, 3, 4, 1, 0))
    if path in expected and tuple(expected[path]) != w.shape:
        raise ValueError(f"{key}: Conv3d weight (as {w.shape}, kt kh kw in out) does not fit "
                         f"{path} {tuple(expected[path])}")
    return w


def convert(config: dict, weights: dict[str, np.ndarray], dtype=np.float32):
    """``(model, {"params": ...})`` from a diffusers AutoencoderKLCogVideoX config and state
    dict."""
    model = model_from_config(config)
    expected = expected_shapes(model, *example_inputs(model))
    mapped, unknown = {}, []
    for key, w in weights.items():
        found = _rename(key, np.ndim(w))
        if found is None:
            unknown.append(key)
            continue
        path, kind = found
        if kind == "conv3d":
            w, kind = _conv3d(key, np.asarray(w), path, expected), "param"
        mapped[key] = (path, kind, None, w)
    if unknown:
        raise ValueError(f"unrecognised AutoencoderKLCogVideoX weights: {sorted(unknown)}")
    return model, assemble(mapped, expected, dtype)
