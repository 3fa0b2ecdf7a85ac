"""Logical axis names and the one activation-sharding helper models use.

Parameters are annotated with ``nn.with_logical_partitioning(init, PARAM_AXES)``; activations
go through :func:`shard`. Both are inert until a mesh and a rules table are active, so models
run unchanged on one device.
"""

import flax.linen as nn

# Parameter axis vocabulary.
PARAM_AXES = ("embed", "mlp", "heads", "kv", "conv_in", "conv_out", "layers", "vocab", "norm")
# Activation axis vocabulary.
ACT_AXES = (
    "act_batch",
    "act_frames",
    "act_height",
    "act_width",
    "act_seq",
    "act_embed",
    "act_heads",
)


def shard(x, *names):
    """Constrains ``x`` to the logical axes ``names`` (one per dim; ``None`` = unconstrained).

    A no-op without an active mesh and logical-axis rules.
    """
    if len(names) != x.ndim:
        raise ValueError(f"shard(): {len(names)} names {names} for an array of rank {x.ndim}")
    return nn.with_logical_constraint(x, names)
