"""Guidance: classifier-free guidance, conditioning dropout, VDM reconstruction guidance."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from vdm_jax.diffusion.parameterization import expand_like

CondModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
ModelFn = Callable[[jax.Array, jax.Array], jax.Array]
DenoiseFn = Callable[[jax.Array], jax.Array]


def _batch_size(tree: Any) -> int:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError("Expected a conditioning pytree with at least one array leaf.")
    return jnp.shape(leaves[0])[0]


def classifier_free(model_fn_cond: CondModelFn, cond: Any, uncond: Any,
                    scale: float | jax.Array) -> ModelFn:
    """Classifier-free guidance (Ho & Salimans 2022) as a plain ``model_fn(z, t)``.

    ``model_fn_cond(z, t, cond)``: ``cond`` is a pytree whose leaves are batch-first. ``uncond``
    has the same structure; each leaf broadcasts to the matching ``cond`` leaf (e.g. a null
    embedding with batch 1). The conditional and unconditional branches run as ONE call on a
    doubled batch ``[cond; uncond]`` and the result is ``uncond + scale·(cond − uncond)``. The
    combination is linear in the prediction, so it means the same for eps, v and x0 models.
    A Python ``scale == 1.0`` evaluates the conditional branch only.
    """
    if isinstance(scale, (int, float)) and scale == 1.0:
        return lambda z, t: model_fn_cond(z, t, cond)

    def doubled(c: jax.Array, u: jax.Array) -> jax.Array:
        c = jnp.asarray(c)
        return jnp.concatenate([c, jnp.broadcast_to(u, c.shape).astype(c.dtype)], axis=0)

    both_cond = jax.tree.map(doubled, cond, uncond)

    def guided(z: jax.Array, t: jax.Array) -> jax.Array:
        b = z.shape[0]
        out = model_fn_cond(jnp.concatenate([z, z]), jnp.concatenate([t, t]), both_cond)
        out_cond, out_uncond = out[:b], out[b:]
        return out_uncond + scale * (out_cond - out_uncond)

    return guided


def drop_conditioning(key: jax.Array, cond: Any, null_cond: Any, rate: float) -> Any:
    """Replaces each example's conditioning by ``null_cond`` with probability ``rate``.

    For classifier-free guidance training. ``cond`` is a batch-first pytree; ``null_cond`` has
    the same structure with leaves broadcastable to ``cond``'s. One draw per example decides for
    all leaves together. Returns a pytree like ``cond``.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"Expected a drop rate in [0, 1], got {rate}.")
    drop = jax.random.uniform(key, (_batch_size(cond),)) < rate

    def pick(c: jax.Array, n: jax.Array) -> jax.Array:
        c = jnp.asarray(c)
        return jnp.where(expand_like(drop, c), jnp.broadcast_to(n, c.shape).astype(c.dtype), c)

    return jax.tree.map(pick, cond, null_cond)


class Guidance(Protocol):
    """What ``sample(..., guidance=...)`` calls at every step in place of the plain denoiser.

    ``guide(denoise, z, alpha, sigma, key) -> (z, x0_hat)``: ``denoise(z) -> x0_hat`` is the
    model at the current t (unclipped x0 estimate, shaped like ``z``); ``alpha``/``sigma`` are
    ``(b,)``. It returns the (possibly modified) current latent, which the sampler's update then
    uses, and the guided x0 estimate.
    """

    def guide(self, denoise: DenoiseFn, z: jax.Array, alpha: jax.Array, sigma: jax.Array,
              key: jax.Array) -> tuple[jax.Array, jax.Array]: ...


@dataclasses.dataclass(frozen=True)
class ReconstructionGuidance:
    """Conditional sampling from an unconditional video model (Ho et al. 2022, §3.1, eq. 7).

    Known frames ``x_a`` steer the unknown ones ``x_b``. At each step, with the current α_t, σ_t:

    1. replacement: the observed part of z_t becomes a fresh draw α_t·x_a + σ_t·ε;
    2. the model gives x̂0(z_t); with G = ∇_{z_t} ‖x_a − x̂0_a(z_t)‖² (sum of squares over the
       observed elements, gradient w.r.t. the whole z_t), the unobserved part becomes
       x̃0_b = x̂0_b − (weight·α_t/2)·G_b; the observed part of x̂0 is kept.

    Attributes:
      observed: shaped like the sample ``(b, t, h, w, c)`` (or broadcastable, e.g. batch 1),
        the known values at observed positions; values elsewhere are ignored.
      mask: 1/True where observed; a prefix of the sample's shape (e.g. a frame mask ``(b, t)``
        or ``(1, t)``) or broadcastable to it. Float masks blend.
      weight: w_r; the paper uses large values (2 or more). A Python 0 skips the gradient
        (replacement only, no backward pass).

    A pytree (observed, mask and weight are leaves), so it can be a traced ``jax.jit`` argument.
    """

    observed: jax.Array
    mask: jax.Array
    weight: float | jax.Array = 2.0

    def guide(self, denoise: DenoiseFn, z: jax.Array, alpha: jax.Array, sigma: jax.Array,
              key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(z with observed part replaced, guided x0_hat); both shaped like ``z``."""
        m = jnp.broadcast_to(expand_like(self.mask, z), z.shape).astype(z.dtype)
        a, s = expand_like(alpha, z), expand_like(sigma, z)
        z_obs = a * self.observed + s * jax.random.normal(key, z.shape, z.dtype)
        z = m * z_obs + (1.0 - m) * z
        if isinstance(self.weight, (int, float)) and self.weight == 0:
            return z, denoise(z)
        x0_hat, vjp = jax.vjp(denoise, z)
        # d/dx̂0 of ‖m·(x_a − x̂0)‖² is −2·m²·(x_a − x̂0); pull it back to z_t.
        (grad_z,) = vjp(-2.0 * m * m * (self.observed - x0_hat))
        step = (expand_like(self.weight, z) * a / 2.0) * grad_z
        return z, x0_hat - (1.0 - m) * step


jax.tree_util.register_dataclass(
    ReconstructionGuidance, data_fields=["observed", "mask", "weight"], meta_fields=[])
