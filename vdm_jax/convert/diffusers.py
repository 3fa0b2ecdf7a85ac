"""Load diffusers model folders as vdm_jax models; save and reload the converted result.

``load_diffusers`` dispatches on the folder's ``config.json`` ``_class_name`` through
``CONVERTERS``; adding a class (AutoencoderKL, UNet3DConditionModel, ...) is one entry: a
function ``(config, weights) -> (model, {"params": ...})``. A converted model is stored as an
Orbax checkpoint of its params beside ``model_config.json`` (the Flax module's attributes), so
it reloads without diffusers, torch or the original folder.
"""

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from vdm_jax.convert import autoencoder_kl, cogvideox_vae, latte, unet3d_condition
from vdm_jax.convert.weights import read_config, read_weights
from vdm_jax.models.autoencoder_kl import AutoencoderKL
from vdm_jax.models.latte import LatteTransformer
from vdm_jax.models.unet3d_condition import UNet3DCondition

CONVERTERS: dict[str, Callable] = {
    "LatteTransformer3DModel": latte.convert,
    "AutoencoderKL": autoencoder_kl.convert,
    "AutoencoderKLCogVideoX": cogvideox_vae.convert,
    "UNet3DConditionModel": unet3d_condition.convert,
}
# vdm_jax model classes a saved config may name.
MODELS: dict[str, type[nn.Module]] = {"LatteTransformer": LatteTransformer,
                                      "AutoencoderKL": AutoencoderKL,
                                      "CausalVAE": cogvideox_vae.CausalVAE,
                                      "UNet3DCondition": UNet3DCondition}
CONFIG_NAME = "model_config.json"
PARAMS_DIR = "params"


def load_diffusers(path: str | Path, *, variant: str | None = None, dtype=np.float32):
    """``(model, {"params": ...})`` from a diffusers model folder (``save_pretrained`` output).

    ``variant`` picks ``diffusion_pytorch_model.<variant>.safetensors`` (e.g. ``"fp16"``);
    weights are cast to ``dtype`` (``None`` keeps the file's). Params are plain (unboxed) jax
    arrays; the logical partitioning comes from ``jax.eval_shape`` of ``model.init``.
    """
    config = read_config(path)
    name = config["_class_name"]
    if name not in CONVERTERS:
        raise ValueError(f"no converter for diffusers class {name!r}; supported: "
                         f"{sorted(CONVERTERS)}")
    model, params = CONVERTERS[name](config, read_weights(path, variant), dtype)
    return model, jax.tree.map(jnp.asarray, params)


def model_config(model: nn.Module) -> dict:
    """JSON-able ``{"_class_name", <attributes>}`` of a top-level vdm_jax model."""
    config = {"_class_name": type(model).__name__}
    for field in dataclasses.fields(model):
        if field.name in ("parent", "name"):
            continue
        value = getattr(model, field.name)
        config[field.name] = jnp.dtype(value).name if field.name == "dtype" and value else value
    return config


def model_from_config(config: dict) -> nn.Module:
    config = dict(config)
    name = config.pop("_class_name")
    if name not in MODELS:
        raise ValueError(f"unknown vdm_jax model class {name!r}; known: {sorted(MODELS)}")
    if config.get("dtype"):
        config["dtype"] = jnp.dtype(config["dtype"])
    return MODELS[name](**config)


def save_converted(dst: str | Path, model: nn.Module, params, *, overwrite: bool = False):
    """Writes ``dst/params`` (Orbax) and ``dst/model_config.json``."""
    dst = Path(dst).absolute()
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise FileExistsError(f"{dst} is not empty; pass overwrite=True (--overwrite) to replace")
    dst.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(dst / PARAMS_DIR, params, force=True)
        ckptr.wait_until_finished()
    (dst / CONFIG_NAME).write_text(json.dumps(model_config(model), indent=2) + "\n")


def load_converted(dst: str | Path):
    """``(model, {"params": ...})`` written by :func:`save_converted`."""
    dst = Path(dst).absolute()
    model = model_from_config(json.loads((dst / CONFIG_NAME).read_text()))
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(dst / PARAMS_DIR)
    return model, params
