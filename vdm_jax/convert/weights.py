"""Reading diffusers weight folders and fitting PyTorch tensors into Flax parameter trees.

No torch: safetensors are read with ``safetensors.numpy`` (bfloat16 files, which it cannot
represent, through a small reader of the format with ``ml_dtypes``). A converter renames each
diffusers weight to a path in the Flax tree and says what kind of tensor it is; the shape the
Flax model expects decides the final reshape (heads split, tubelet axis added), and every
mismatch, missing or left-over weight is an error naming it.
"""

import json
import math
import struct
from pathlib import Path

import flax.linen as nn
import jax
import ml_dtypes
import numpy as np

from vdm_jax.models import param_paths

WEIGHTS_NAME = "diffusion_pytorch_model"
_SAFETENSORS_DTYPES = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32,
                       "F64": np.float64}


def read_config(path: str | Path) -> dict:
    """The folder's ``config.json`` (must name its ``_class_name``)."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: expected a diffusers model folder "
                                "(written by save_pretrained)")
    config = json.loads(file.read_text())
    if "_class_name" not in config:
        raise ValueError(f"{file} has no _class_name")
    return config


def _read_raw(file: Path) -> dict[str, np.ndarray]:
    """Minimal safetensors reader (8-byte header size, JSON header, raw little-endian data)."""
    with open(file, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{file}: {key} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        out[key] = np.frombuffer(data[start:end], _SAFETENSORS_DTYPES[info["dtype"]]).reshape(
            info["shape"])
    return out


def read_safetensors(file: str | Path) -> dict[str, np.ndarray]:
    import safetensors.numpy

    try:
        return safetensors.numpy.load_file(file)
    except TypeError:  # bfloat16 is not a numpy dtype
        return _read_raw(Path(file))


def weight_files(path: str | Path, variant: str | None = None) -> list[Path]:
    """The safetensors files of one checkpoint: the sharded index's files, else the single
    ``diffusion_pytorch_model[.variant].safetensors``."""
    path = Path(path)
    stem = WEIGHTS_NAME + (f".{variant}" if variant else "")
    index = path / f"{stem}.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / s for s in shards]
    single = path / f"{stem}.safetensors"
    if single.is_file():
        return [single]
    found = sorted(p.name for p in path.glob("*.safetensors"))
    raise FileNotFoundError(f"no {single.name} (or its sharded index) in {path}; "
                            f"safetensors present: {found or 'none'}")


def read_weights(path: str | Path, variant: str | None = None) -> dict[str, np.ndarray]:
    weights = {}
    for file in weight_files(path, variant):
        weights.update(read_safetensors(file))
    return weights


def substituted_path(key: str, substitutions) -> tuple[str, str] | None:
    """A diffusers ``module.path.weight|bias`` key as ``(our/module/path, "weight"|"bias")``
    after the ``(pattern, replacement)`` rewrites (applied in order to the dotted module path);
    None for a key that is neither a weight nor a bias."""
    stem, _, suffix = key.rpartition(".")
    if suffix not in ("weight", "bias"):
        return None
    for pattern, repl in substitutions:
        stem = pattern.sub(repl, stem)
    return stem.replace(".", "/"), suffix


def _split_point(shape: tuple[int, ...], n_in: int, n_out: int) -> bool:
    return any(math.prod(shape[:k]) == n_in and math.prod(shape[k:]) == n_out
               for k in range(len(shape) + 1))


def fit(key: str, kind: str, w: np.ndarray, target: tuple[int, ...], path: str) -> np.ndarray:
    """``w`` from PyTorch layout into the Flax ``target`` shape.

    Kinds: ``linear`` (``(out, in)`` -> ``(in..., out...)``), ``conv`` (OIHW -> HWIO, then the
    target's leading singleton axes, e.g. a tubelet of one frame), ``param`` (same size).
    """
    if kind == "linear":
        if w.ndim != 2 or not _split_point(target, w.shape[1], w.shape[0]):
            raise ValueError(f"{key}: Linear weight {w.shape} does not fit {path} {target}")
        return w.T.reshape(target)
    if kind == "conv":
        hwio = w.transpose(2, 3, 1, 0) if w.ndim == 4 else w
        if w.ndim != 4 or tuple(target[-4:]) != hwio.shape or math.prod(target[:-4]) != 1:
            raise ValueError(f"{key}: conv weight {w.shape} (OIHW) does not fit {path} {target}")
        return hwio.reshape(target)
    if kind == "param":
        if w.size != math.prod(target):
            raise ValueError(f"{key}: {w.shape} does not fit {path} {target}")
        return w.reshape(target)
    raise ValueError(f"unknown weight kind {kind!r}")


def expected_shapes(model: nn.Module, *args, **kwargs) -> dict[str, tuple[int, ...]]:
    """``{"a/b/kernel": shape}`` of ``model.init``'s params, from ``jax.eval_shape``."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
    flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(shapes["params"]))[0]
    return {"/".join(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def assemble(mapped: dict[str, tuple[str, str, int | None, np.ndarray]],
             expected: dict[str, tuple[int, ...]], dtype=np.float32) -> dict:
    """Builds the nested params dict from renamed weights.

    ``mapped``: diffusers key -> (flax path, kind, layer index or None, array). Per-layer
    weights are stacked on the leading scan axis; raises on shape mismatch, on a parameter no
    weight fills (missing layers included) and on a path filled twice.
    """
    layers: dict[str, dict[int, np.ndarray]] = {}
    flat: dict[str, np.ndarray] = {}
    for key, (path, kind, layer, w) in mapped.items():
        if path not in expected:
            raise ValueError(f"{key}: maps to {path}, which the model does not have")
        target = expected[path] if layer is None else expected[path][1:]
        w = fit(key, kind, np.asarray(w), target, path).astype(dtype or w.dtype)
        slot = flat if layer is None else layers.setdefault(path, {})
        index = path if layer is None else layer
        if index in slot:
            raise ValueError(f"{key}: {path} (layer {layer}) is filled twice")
        slot[index] = w
    for path, per_layer in layers.items():
        n = expected[path][0]
        missing = sorted(set(range(n)) - set(per_layer))
        if missing or len(per_layer) != n:
            raise ValueError(f"{path}: layers {missing} missing from the checkpoint "
                             f"(expected {n} layers, found {sorted(per_layer)})")
        flat[path] = np.stack([per_layer[i] for i in range(n)])
    missing = sorted(set(expected) - set(flat))
    if missing:
        raise ValueError(f"no checkpoint weight for model parameters: {missing}")
    return {"params": param_paths.unflatten(flat)}


def check_vae_config(config: dict, block_types: dict[str, str]) -> None:
    """Raises unless every down/up block is of the one supported type and the activation is
    SiLU (what the vdm_jax autoencoders implement)."""
    n = len(config["block_out_channels"])
    for field, kind in block_types.items():
        types = list(config.get(field, [kind] * n))
        if types != [kind] * n:
            raise ValueError(f"{field} must be {n} x {kind!r} (one per block_out_channels), "
                             f"got {types}")
    if config.get("act_fn", "silu") not in ("silu", "swish"):
        raise ValueError(f"act_fn={config['act_fn']!r} is not supported (only 'silu')")
