"""diffusers ``UNet3DConditionModel`` (ModelScope text-to-video) ->
:class:`vdm_jax.models.unet3d_condition.UNet3DCondition`.

Module names mirror diffusers' (``down_blocks.0.resnets.1`` is ``down_blocks_0/resnets_1``);
temporal modules get the ``temporal_`` prefix (``temp_convs``, ``temp_attentions``,
``transformer_in``), a temporal conv layer's ``convK.0`` (GroupNorm) is ``normK`` and its
``convK.2``/``convK.3`` (Conv3d) is ``convK``, stored as a ``(3, c_in, c_out)`` kernel.
``sample_size`` concerns pipelines, not the network, and is not carried over.
"""

import re

import numpy as np

from vdm_jax.models.unet3d_condition import (
    DOWN_BLOCK_TYPES,
    UP_BLOCK_TYPES,
    UNet3DCondition,
    example_inputs,
)

from .weights import assemble, expected_shapes, substituted_path

# diffusers module path pieces -> ours (applied in order, on the dotted key).
_SUBSTITUTIONS = [
    (re.compile(r"^transformer_in\b"), "temporal_transformer_in"),
    (re.compile(r"\btemp_(convs|attentions)\b"), r"temporal_\1"),
    (re.compile(r"\b(down_blocks|up_blocks|resnets|attentions|temporal_convs|"
                r"temporal_attentions|transformer_blocks)\.(\d+)\b"), r"\1_\2"),
    (re.compile(r"\b(temporal_convs_\d+)\.conv(\d)\.0\b"), r"\1.norm\2"),
    (re.compile(r"\b(temporal_convs_\d+)\.conv(\d)\.[23]\b"), r"\1.conv\2"),
    (re.compile(r"\bdownsamplers\.0\.conv\b"), "downsample"),
    (re.compile(r"\bupsamplers\.0\.conv\b"), "upsample"),
    (re.compile(r"\bff\.net\.0\.proj\b"), "ff.proj_in"),
    (re.compile(r"\bff\.net\.2\b"), "ff.proj_out"),
    (re.compile(r"\bto_out\.0\b"), "to_out"),
]
_LINEAR = ("to_q", "to_k", "to_v", "to_out", "proj_in", "proj_out", "linear_1", "linear_2",
           "time_emb_proj")
# Config entries that change the network and what we support of each.
_FIXED = {"num_attention_heads": None, "time_cond_proj_dim": None, "downsample_padding": 1}


def check_unet3d_config(config: dict) -> None:
    """Raises a ValueError naming the first config option :class:`UNet3DCondition` does not
    implement (block types, activation, attention heads, time conditioning, padding)."""
    for key, want in _FIXED.items():
        if config.get(key, want) != want:
            raise ValueError(f"{key}={config[key]!r} is not supported (only {want!r})")
    if config.get("act_fn", "silu") not in ("silu", "swish"):
        raise ValueError(f"act_fn={config['act_fn']!r} is not supported (only 'silu')")
    if config.get("norm_num_groups", 32) is None:
        raise ValueError("norm_num_groups=None (no output norm) is not supported")
    head_dim = config.get("attention_head_dim", 64)
    if not isinstance(head_dim, int):
        raise ValueError(f"attention_head_dim must be one int (diffusers' transformer_in "
                         f"needs it), got {head_dim!r}")
    for field, known in (("down_block_types", DOWN_BLOCK_TYPES),
                         ("up_block_types", UP_BLOCK_TYPES)):
        bad = [k for k in config.get(field, ()) if k not in known]
        if bad:
            raise ValueError(f"{field}: {bad} not supported; known: {list(known)}")


def model_from_config(config: dict) -> UNet3DCondition:
    """The :class:`UNet3DCondition` equal to a diffusers ``UNet3DConditionModel`` config."""
    check_unet3d_config(config)
    defaults = UNet3DCondition()
    fields = ("in_channels", "out_channels", "down_block_types", "up_block_types",
              "block_out_channels", "layers_per_block", "mid_block_scale_factor",
              "norm_num_groups", "norm_eps", "cross_attention_dim", "attention_head_dim")
    model = UNet3DCondition(**{f: config.get(f, getattr(defaults, f)) for f in fields})
    model.check()
    return model


def _rename(key: str) -> tuple[str, str] | None:
    """diffusers key -> (our path, kind) or None for a key we do not know."""
    found = substituted_path(key, _SUBSTITUTIONS)
    if found is None:
        return None
    path, suffix = found
    leaf = path.rpartition("/")[2]
    if suffix == "bias":
        return f"{path}/bias", "param"
    if leaf.startswith("norm") or leaf == "conv_norm_out":
        return f"{path}/scale", "param"
    if leaf in _LINEAR:
        return f"{path}/kernel", "linear"
    if "/temporal_convs_" in path:
        return f"{path}/kernel", "temporal_conv"
    return f"{path}/kernel", "conv"


def _temporal_kernel(key: str, w: np.ndarray) -> np.ndarray:
    """Conv3d ``(c_out, c_in, 3, 1, 1)`` -> ``(3, c_in, c_out)``."""
    if w.ndim != 5 or w.shape[3:] != (1, 1):
        raise ValueError(f"{key}: expected a (c_out, c_in, k, 1, 1) Conv3d weight, "
                         f"got {w.shape}")
    return np.transpose(w[:, :, :, 0, 0], (2, 1, 0))


def convert(config: dict, weights: dict[str, np.ndarray], dtype=np.float32):
    """``(model, {"params": ...})`` from a diffusers UNet3DConditionModel config and state
    dict."""
    model = model_from_config(config)
    expected = expected_shapes(model, *example_inputs(model))
    mapped, unknown = {}, []
    for key, w in weights.items():
        found = _rename(key)
        if found is None or found[0] not in expected:
            unknown.append(key)
            continue
        path, kind = found
        if kind == "temporal_conv":
            kind, w = "param", _temporal_kernel(key, np.asarray(w))
            if w.shape != expected[path]:
                raise ValueError(f"{key}: temporal conv weight (as {w.shape}) does not fit "
                                 f"{path} {expected[path]}")
        mapped[key] = (path, kind, None, w)
    if unknown:
        raise ValueError(f"unrecognised UNet3DConditionModel weights: {sorted(unknown)}")
    return model, assemble(mapped, expected, dtype)
