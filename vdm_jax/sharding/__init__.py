from vdm_jax.sharding.logical import ACT_AXES, PARAM_AXES, shard
from vdm_jax.sharding.mesh import (
    MESH_AXES,
    activate,
    context_parallel,
    context_parallel_of,
    make_mesh,
    mesh_and_rules,
)
from vdm_jax.sharding.rules import PRESETS, get_rules, logical_to_mesh_sharding

__all__ = [
    "ACT_AXES",
    "MESH_AXES",
    "PARAM_AXES",
    "PRESETS",
    "activate",
    "context_parallel",
    "context_parallel_of",
    "get_rules",
    "logical_to_mesh_sharding",
    "make_mesh",
    "mesh_and_rules",
    "shard",
]
