"""Remat policies: a rematerialised attention block does not run its attention forward again."""

import jax
import jax.numpy as jnp
import pytest

from vdm_jax.nn.attention_core import local_attention
from vdm_jax.nn.remat import REMAT_POLICIES


def _block(w, x):
    """A projection, attention over 256 tokens, and a nonlinearity: ``(1, 256, 64) -> ()``."""
    q = jnp.einsum("bnd,de->bne", x, w).reshape(1, 256, 2, 32)
    return jnp.sum(jnp.sin(local_attention(q, 2 * q, 3 * q, implementation="einsum")))


def _exponentials(fn, *args) -> int:
    """How many ``exp`` the gradient program of ``fn`` computes (softmax passes)."""
    return str(jax.make_jaxpr(jax.grad(fn))(*args)).count(" exp ")


@pytest.mark.parametrize("policy", ["dots_saveable", "dots_with_no_batch_dims_saveable"])
def test_dots_policies_keep_the_attention_residuals(policy):
    w = 0.1 * jax.random.normal(jax.random.key(0), (64, 64))
    x = jax.random.normal(jax.random.key(1), (1, 256, 64))
    rematted = jax.checkpoint(_block, policy=REMAT_POLICIES[policy])
    # forward: two (statistics, probabilities); backward: one (probabilities again)
    assert _exponentials(rematted, w, x) == _exponentials(_block, w, x) == 3
    plain, kept = jax.grad(_block)(w, x), jax.grad(rematted)(w, x)
    assert jnp.allclose(plain, kept, rtol=1e-5, atol=1e-6)


def test_full_policy_recomputes_the_attention():
    w = 0.1 * jax.random.normal(jax.random.key(0), (64, 64))
    x = jax.random.normal(jax.random.key(1), (1, 256, 64))
    rematted = jax.checkpoint(_block, policy=REMAT_POLICIES["full"])
    assert _exponentials(rematted, w, x) > 3
