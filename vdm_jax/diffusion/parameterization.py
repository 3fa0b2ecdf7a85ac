"""Model output parameterisations: what the network predicts from ``z = α x0 + σ ε``.

- ``"eps"``: the noise ε.
- ``"v"``:   v = α ε − σ x0 (Salimans & Ho 2022).
- ``"x0"``:  the clean sample x0.

``alpha`` and ``sigma`` may be scalars, per-example ``(b,)`` arrays, or already broadcast to
the data's shape; per-example values are broadcast over the trailing dims.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PARAMETERIZATIONS = ("eps", "v", "x0")


def check_parameterization(param: str) -> str:
    """Returns ``param`` or raises a ValueError naming the known parameterisations."""
    if param not in PARAMETERIZATIONS:
        raise ValueError(f"Unknown parameterization {param!r}; expected one of "
                         f"{list(PARAMETERIZATIONS)}.")
    return param


def expand_like(a: jax.Array, x: jax.Array) -> jax.Array:
    """Appends trailing unit axes so ``a`` (shape a prefix of ``x.shape``) broadcasts to ``x``.

    E.g. ``(b,) -> (b, 1, 1, 1, 1)`` or a frame mask ``(b, t) -> (b, t, 1, 1, 1)`` for a video
    ``(b, t, h, w, c)``. Scalars and arrays of ``x``'s rank are returned unchanged.
    """
    a = jnp.asarray(a)
    if a.ndim > x.ndim:
        raise ValueError(f"Cannot broadcast shape {a.shape} against data of shape {x.shape}: "
                         "expected at most as many dims as the data.")
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) if a.ndim else a


def prediction_from_x0_eps(param: str, x0: jax.Array, eps: jax.Array, alpha: jax.Array,
                           sigma: jax.Array) -> jax.Array:
    """The model output that corresponds to (x0, ε) at (α, σ); same shape as ``x0``."""
    check_parameterization(param)
    if param == "eps":
        return eps
    if param == "x0":
        return x0
    alpha, sigma = expand_like(alpha, x0), expand_like(sigma, x0)
    return alpha * eps - sigma * x0


def training_target(param: str, x0: jax.Array, eps: jax.Array, alpha: jax.Array,
                    sigma: jax.Array) -> jax.Array:
    """Regression target of ``param`` for ``z = α x0 + σ ε``; same shape as ``x0``."""
    return prediction_from_x0_eps(param, x0, eps, alpha, sigma)


def to_x0_eps(param: str, prediction: jax.Array, z: jax.Array, alpha: jax.Array,
              sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(x0_hat, eps_hat) implied by a model ``prediction`` at ``z``; each shaped like ``z``.

    Uses α² + σ² = 1: for v, x0 = α z − σ v and ε = σ z + α v.
    """
    check_parameterization(param)
    alpha, sigma = expand_like(alpha, z), expand_like(sigma, z)
    if param == "eps":
        return (z - sigma * prediction) / alpha, prediction
    if param == "x0":
        return prediction, (z - alpha * prediction) / sigma
    return alpha * z - sigma * prediction, sigma * z + alpha * prediction


def eps_from_x0(x0: jax.Array, z: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """ε = (z − α x0) / σ, shaped like ``z``."""
    return (z - expand_like(alpha, z) * x0) / expand_like(sigma, z)


def log_x0_mse_factor(param: str, log_snr: jax.Array) -> jax.Array:
    """log c with ‖pred − target‖² = c · ‖x0_hat − x0‖² for ``param``; shape of ``log_snr``.

    c = SNR for eps, SNR + 1 (= 1/σ²) for v, 1 for x0.
    """
    check_parameterization(param)
    if param == "eps":
        return log_snr
    if param == "v":
        return jax.nn.softplus(log_snr)
    return jnp.zeros_like(log_snr)
