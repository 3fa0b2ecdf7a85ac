"""Rematerialisation by policy name: which activations a block keeps for the backward pass.

- ``none``: keep everything (fastest, most memory);
- ``dots_saveable``: keep matmul and conv outputs, recompute the elementwise work around them;
- ``dots_with_no_batch_dims_saveable``: keep only matmuls without batch dimensions (the
  projections), recompute attention scores;
- ``full``: keep only the block's inputs and recompute the whole block.
"""

import flax.linen as nn
import jax

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check_policy(policy: str) -> None:
    if policy not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {policy!r}; choose one of {list(REMAT_POLICIES)}")


def remat(cls: type[nn.Module], policy: str, scanned: bool = False) -> type[nn.Module]:
    """``cls`` rematerialised under ``policy`` (``cls`` itself for ``"none"``). ``scanned``
    drops the CSE barrier, which a scan body does not need."""
    check_policy(policy)
    if policy == "none":
        return cls
    return nn.remat(cls, policy=REMAT_POLICIES[policy], prevent_cse=not scanned)
