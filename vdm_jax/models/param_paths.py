"""Parameter trees as ``{"a/b/kernel": array}`` dicts and back: the form weight surgery
(inflating an image model into a video model, freezing layers by name) is easiest to write in."""

import flax.linen as nn
import jax


def flatten(tree) -> dict[str, object]:
    """Nested dict of arrays (boxed or not) -> ``{"path/to/leaf": array}``."""
    leaves = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(tree))[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in leaves}


def unflatten(flat: dict[str, object]) -> dict:
    """Inverse of :func:`flatten`."""
    out: dict = {}
    for path, leaf in flat.items():
        *parents, name = path.split("/")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = leaf
    return out


TEMPORAL_NAME = "temporal"
TEMPORAL_PREFIX = "temporal_"


def is_temporal(path: str) -> bool:
    """A parameter a video model adds to its image model: some module on its path is named
    ``temporal`` or ``temporal_*`` (temporal attention, the temporal half of a (2+1)D conv, the
    temporal autoencoder, ...)."""
    return any(part == TEMPORAL_NAME or part.startswith(TEMPORAL_PREFIX)
               for part in path.split("/"))


def image_paths(path: str) -> list[str]:
    """Where a non-temporal video weight lives in the image model, most specific first: the same
    path, then (for the spatial half ``.../spatial/kernel`` of a (2+1)D conv, whose image model
    has a plain 2D conv there) the path without that ``spatial`` module."""
    parts = path.split("/")
    if len(parts) >= 3 and parts[-2] == "spatial":
        return [path, "/".join(parts[:-2] + parts[-1:])]
    return [path]


def inflate_image_params(image_params: dict, video_params: dict) -> dict:
    """``video_params`` with every non-temporal weight taken from ``image_params`` (found by
    :func:`image_paths`).

    Both are ``{"params": ...}`` trees; image weights the video model does not have (e.g. an
    encoder, for a decoder-only model) are ignored. Raises, naming the path, when a non-temporal
    video weight is missing from the image model or has another shape. Returns unboxed arrays.
    """
    image = flatten(image_params["params"])
    merged = {}
    for path, leaf in flatten(video_params["params"]).items():
        if is_temporal(path):
            merged[path] = leaf
            continue
        source = next((p for p in image_paths(path) if p in image), None)
        if source is None or jax.numpy.shape(image[source]) != jax.numpy.shape(leaf):
            got = jax.numpy.shape(image[source]) if source else "missing"
            raise ValueError(f"{path}: the image model has {got}, the video model needs "
                             f"{jax.numpy.shape(leaf)}")
        merged[path] = image[source]
    return {"params": unflatten(merged)}


def temporal_param_labels(params) -> object:
    """``"temporal"`` / ``"frozen"`` per leaf of ``params`` (``optax.multi_transform``'s
    ``param_labels``): fine-tune only what inflation added."""
    def label(path, _):
        keys = "/".join(str(getattr(k, "key", k)) for k in path)
        return "temporal" if is_temporal(keys) else "frozen"

    return jax.tree_util.tree_map_with_path(label, params)
