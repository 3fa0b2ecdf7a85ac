"""diffusers ``LatteTransformer3DModel`` -> :class:`vdm_jax.models.latte.LatteTransformer`.

Config: diffusers' ``num_layers`` spatial + ``num_layers`` temporal blocks are our
``num_layers`` pairs (variant 1), ``ada_norm_single`` is ``adaln="single"``, and the temporal
sin-cos table is computed for any frame count (``video_length`` is not needed). ``dropout``
only matters in training and is not carried over.
"""

import re

import numpy as np

from vdm_jax.models.latte import LatteTransformer, example_inputs

from .weights import assemble, expected_shapes

_ACTIVATIONS = {"geglu": "geglu", "gelu": "gelu", "gelu-approximate": "gelu_tanh"}

# diffusers module prefix -> (our path, kind of its ``weight``).
_TOP = {
    "pos_embed.proj": ("patch_embed", "conv"),
    "adaln_single.emb.timestep_embedder.linear_1": ("time_embed/linear_1", "linear"),
    "adaln_single.emb.timestep_embedder.linear_2": ("time_embed/linear_2", "linear"),
    "adaln_single.linear": ("adaln_single", "linear"),
    "caption_projection.linear_1": ("caption_projection/linear_1", "linear"),
    "caption_projection.linear_2": ("caption_projection/linear_2", "linear"),
    "proj_out": ("proj_out", "linear"),
}
_BLOCK = {
    "norm1": ("norm1", "norm"),
    "norm2": ("norm2", "norm"),
    "ff.net.0.proj": ("ff/proj_in", "linear"),
    "ff.net.2": ("ff/proj_out", "linear"),
    **{f"attn{i}.{p}": (f"attn{i}/{p}", "linear")
       for i in (1, 2) for p in ("to_q", "to_k", "to_v")},
    **{f"attn{i}.to_out.0": (f"attn{i}/to_out", "linear") for i in (1, 2)},
}
_STACKS = {"transformer_blocks": "blocks/spatial", "temporal_transformer_blocks": "blocks/temporal"}
_BLOCK_KEY = re.compile(r"^(transformer_blocks|temporal_transformer_blocks)\.(\d+)\.(.+)$")


def model_from_config(config: dict) -> LatteTransformer:
    """The :class:`LatteTransformer` equal to a diffusers ``LatteTransformer3DModel`` config."""
    if config.get("norm_type") != "ada_norm_single":
        raise ValueError(f"only norm_type='ada_norm_single' Latte is supported, got "
                         f"{config.get('norm_type')!r}")
    act = config.get("activation_fn", "geglu")
    if act not in _ACTIVATIONS:
        raise ValueError(f"activation_fn {act!r} is not supported; known: {list(_ACTIVATIONS)}")
    heads, in_ch = config["num_attention_heads"], config["in_channels"]
    hidden = heads * config["attention_head_dim"]
    out_ch = config.get("out_channels") or in_ch
    if out_ch not in (in_ch, 2 * in_ch):
        raise ValueError(f"out_channels={out_ch} must be in_channels={in_ch} or twice it "
                         "(learned sigma)")
    cross = config.get("cross_attention_dim")
    if cross is not None and cross != hidden:
        raise ValueError(f"cross_attention_dim={cross} must equal the width {hidden} (the "
                         "caption projection's output)")
    return LatteTransformer(
        in_channels=in_ch, learn_sigma=out_ch == 2 * in_ch, hidden_size=hidden,
        num_layers=config["num_layers"], num_heads=heads, patch_size=config["patch_size"],
        sample_size=config["sample_size"], adaln="single", activation=_ACTIVATIONS[act],
        qkv_bias=config.get("attention_bias", False),
        norm_eps=config.get("norm_eps", 1e-5),
        norm_affine=config.get("norm_elementwise_affine", True),
        # Without cross-attention diffusers still builds (and ignores) the caption projection.
        caption_channels=config.get("caption_channels") if cross is not None else None,
    )


def _rename(key: str) -> tuple[str, str, int | None] | None:
    """diffusers key -> (our path, kind, layer) or None (a weight the model does not use)."""
    if key == "scale_shift_table":
        return "scale_shift_table", "param", None
    match = _BLOCK_KEY.match(key)
    if match:
        stack, layer, rest = match.groups()
        if rest == "scale_shift_table":
            return f"{_STACKS[stack]}/scale_shift_table", "param", int(layer)
        found = _rename_module(rest, _BLOCK)
        return None if found is None else (f"{_STACKS[stack]}/{found[0]}", found[1], int(layer))
    found = _rename_module(key, _TOP)
    return None if found is None else (*found, None)


def _rename_module(key: str, table: dict) -> tuple[str, str] | None:
    stem, _, suffix = key.rpartition(".")
    if stem not in table:
        return None
    path, kind = table[stem]
    if suffix == "bias":
        return f"{path}/bias", "param"
    if suffix != "weight":
        return None
    if kind == "norm":
        return f"{path}/scale", "param"
    return f"{path}/kernel", kind


def convert(config: dict, weights: dict[str, np.ndarray], dtype=np.float32):
    """``(model, {"params": ...})`` from a diffusers Latte config and state dict."""
    model = model_from_config(config)
    args, kwargs = example_inputs(model)
    expected = expected_shapes(model, *args, **kwargs)
    mapped, unknown = {}, []
    for key, w in weights.items():
        if key.startswith("caption_projection.") and model.caption_channels is None:
            continue  # built but unused by diffusers without cross-attention
        found = _rename(key)
        if found is None:
            unknown.append(key)
        else:
            mapped[key] = (*found, w)
    if unknown:
        raise ValueError(f"unrecognised LatteTransformer3DModel weights: {sorted(unknown)}")
    return model, assemble(mapped, expected, dtype)
