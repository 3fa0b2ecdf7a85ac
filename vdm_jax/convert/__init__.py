"""Weight import from diffusers folders (safetensors + config.json); no torch at runtime.

``load_diffusers(path) -> (model, params)``; ``python -m vdm_jax.convert --src DIR --dst DIR``
writes the params as an Orbax checkpoint plus the model config (``load_converted`` reads it).
"""

from vdm_jax.convert.diffusers import (
    CONVERTERS,
    load_converted,
    load_diffusers,
    model_config,
    model_from_config,
    save_converted,
)

__all__ = [
    "CONVERTERS",
    "load_converted",
    "load_diffusers",
    "model_config",
    "model_from_config",
    "save_converted",
]
