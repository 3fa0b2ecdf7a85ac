"""Rule presets: which mesh axes each logical axis name is split over.

A rules table is an ordered tuple of ``(logical_name, mesh_axes)`` pairs, flax's format, where
``mesh_axes`` is ``None`` (replicated), one mesh axis or a tuple of them. Every name of both
vocabularies (``PARAM_AXES``, ``ACT_AXES``) appears exactly once in every preset.

Order is priority. Within one array, names claim mesh axes in table order and a name whose axes
are already taken by another dimension of the same array stays unsplit, so no array ever puts
two of its dimensions on one mesh axis (``PartitionSpec`` would reject it). Under ``fsdp`` a
kernel ``("embed", "mlp")`` therefore splits ``embed`` over ``fsdp`` and keeps ``mlp`` whole,
while an ``("mlp",)`` bias splits ``mlp``. Flax resolves the activation constraints
(``shard()``) with the same first-free-rule-wins order; for parameters
:func:`logical_to_spec` also skips a rule whose mesh axes do not divide the dimension (jit
rejects uneven argument shardings), letting a later name claim those axes.

Presets (mesh axes ``data, fsdp, context, tensor``):

- ``dp``: batch over ``data``; parameters replicated.
- ``fsdp``: batch over ``(data, fsdp)``; parameters split over ``fsdp`` on the first of
  ``embed, mlp, heads, vocab, conv_out, conv_in`` that divides.
- ``fsdp_tp``: ``fsdp`` plus ``heads, mlp, vocab`` (and ``act_heads``) over ``tensor``.
- ``fsdp_cp``: ``fsdp`` plus ``act_seq`` (else ``act_frames``) over ``context``.
- ``vae_spatial``: batch over ``data``, ``act_height`` over ``context``; parameters replicated
  (autoencoder weights are small next to their activations).
"""

import math
from collections.abc import Mapping

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec

from vdm_jax.sharding.logical import ACT_AXES, PARAM_AXES
from vdm_jax.sharding.mesh import MESH_AXES

Axes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, Axes], ...]

BATCH = ("data", "fsdp")
# Priority of the parameter names that claim the fsdp axis.
_FSDP_ORDER = ("embed", "mlp", "heads", "vocab", "conv_out", "conv_in")


def _table(entries: Mapping[str, Axes], order: tuple[str, ...] = ()) -> Rules:
    """A full table: ``order`` first, then the rest of both vocabularies; unlisted -> None."""
    names = tuple(dict.fromkeys(order + ACT_AXES + PARAM_AXES))
    return tuple((n, entries.get(n)) for n in names)


_FSDP = {"act_batch": BATCH, **{n: "fsdp" for n in _FSDP_ORDER}}
_TP = {"heads": "tensor", "mlp": "tensor", "vocab": "tensor", "act_heads": "tensor"}

PRESETS: dict[str, Rules] = {
    "dp": _table({"act_batch": "data"}),
    "fsdp": _table(_FSDP, _FSDP_ORDER),
    "fsdp_tp": _table({**_FSDP, **_TP}, ("heads", "mlp", "vocab") + _FSDP_ORDER),
    "fsdp_cp": _table({**_FSDP, "act_seq": "context", "act_frames": "context"},
                      ("act_seq", "act_frames") + _FSDP_ORDER),
    "vae_spatial": _table({"act_batch": "data", "act_height": "context"}),
}


def _axes_tuple(axes: Axes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def _normalise(axes) -> Axes:
    """Mesh axes as a rules entry: ``None``, one axis name, or a tuple of two or more."""
    axes = _axes_tuple(axes)
    if not axes:
        return None
    unknown = [a for a in axes if a not in MESH_AXES]
    if unknown:
        raise ValueError(f"unknown mesh axes {unknown}; the mesh axes are {MESH_AXES}")
    return axes[0] if len(axes) == 1 else axes


def get_rules(preset: str, overrides: Mapping[str, Axes] | None = None) -> Rules:
    """The table of ``preset`` with ``overrides`` (name -> mesh axes) replacing entries in place,
    so an overridden name keeps its priority."""
    if preset not in PRESETS:
        raise ValueError(f"unknown sharding preset {preset!r}; choose one of {sorted(PRESETS)}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(PARAM_AXES + ACT_AXES))
    if unknown:
        raise ValueError(f"mesh.rules_overrides names unknown logical axes {unknown}; the "
                         f"logical axes are {PARAM_AXES + ACT_AXES}")
    return tuple((n, _normalise(overrides[n]) if n in overrides else a)
                 for n, a in PRESETS[preset])


def logical_to_spec(names, shape, mesh_sizes: Mapping[str, int], rules: Rules) -> PartitionSpec:
    """The ``PartitionSpec`` of an array with logical ``names`` and ``shape`` (see module doc)."""
    spec, used = [None] * len(names), set()
    for name, axes in rules:
        ax = _axes_tuple(axes)
        if not ax or name not in names:
            continue
        i = list(names).index(name)
        size = math.prod(mesh_sizes[a] for a in ax)
        if spec[i] is None and not used.intersection(ax) and shape[i] % size == 0:
            spec[i] = axes
            used.update(ax)
    return PartitionSpec(*spec)


def _is_box(x) -> bool:
    return isinstance(x, nn.Partitioned)


def logical_to_mesh_sharding(tree, mesh: jax.sharding.Mesh, rules: Rules):
    """``NamedSharding`` per leaf of a (possibly abstract) tree of boxed parameters or a train
    state holding them: a leaf boxed with logical names gets :func:`logical_to_spec`, a plain
    leaf (step counters, optimizer counts, RNG keys) is replicated. The result has the structure
    of the unboxed tree."""
    sizes = dict(mesh.shape)

    def one(leaf):
        if _is_box(leaf):
            spec = logical_to_spec(leaf.names, leaf.value.shape, sizes, rules)
            return NamedSharding(mesh, spec)
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, tree, is_leaf=_is_box)


def batch_spec(ndim: int, rules: Rules) -> PartitionSpec:
    """The spec of a batch array: dim 0 over the mesh axes of ``act_batch``, the rest whole."""
    return PartitionSpec(dict(rules).get("act_batch"), *([None] * (ndim - 1)))
