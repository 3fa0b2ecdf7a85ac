"""Rematerialisation by policy name: which activations a block keeps for the backward pass.

- ``none``: keep everything (fastest, most memory);
- ``dots_saveable``: keep matmul and conv outputs, recompute the elementwise work around them;
- ``dots_with_no_batch_dims_saveable``: keep only matmuls without batch dimensions (the
  projections), recompute attention scores;
- ``full``: keep only the block's inputs and recompute the whole block.

The two ``dots`` policies also keep each attention's output and softmax statistics
(:data:`vdm_jax.nn.attention_core.RESIDUAL_NAMES`, the size of its queries): the backward pass
needs them and recomputes the scores itself, so without them a block would run its attention
forward a second time (the ModelScope UNet training step of ``bench/vs_diffusers.py`` under
``dots_saveable``, A/B in one process on a 2-core CPU: 4165 -> 3951 ms).
"""

import flax.linen as nn
import jax

from vdm_jax.nn.attention_core import RESIDUAL_NAMES

_policies = jax.checkpoint_policies
_attention_residuals = _policies.save_only_these_names(*RESIDUAL_NAMES)

REMAT_POLICIES = {
    "none": None,
    "full": _policies.nothing_saveable,
    "dots_saveable": _policies.save_from_both_policies(_policies.dots_saveable,
                                                       _attention_residuals),
    "dots_with_no_batch_dims_saveable": _policies.save_from_both_policies(
        _policies.dots_with_no_batch_dims_saveable, _attention_residuals),
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
