"""The denoising training loss with SNR-based weightings.

Every weighting is defined as a weight ``w_x0(λ)`` on the x0 error ``‖x0_hat − x0‖²`` and
converted to the parameterisation's own error with ``‖pred − target‖² = c · ‖x0_hat − x0‖²``
(c = SNR for eps, SNR + 1 for v, 1 for x0), so a weighting means the same objective whatever the
network predicts:

============== ====================== ===================== ===================== ==============
weighting      w_x0                   eps weight            v weight              x0 weight
============== ====================== ===================== ===================== ==============
none           (plain MSE of param)   1                     1                     1
snr            SNR                    1                     SNR/(SNR+1)           SNR
min_snr        min(SNR, γ)            min(SNR, γ)/SNR       min(SNR, γ)/(SNR+1)   min(SNR, γ)
truncated_snr  max(SNR, 1)            max(SNR, 1)/SNR       max(SNR, 1)/(SNR+1)   max(SNR, 1)
============== ====================== ===================== ===================== ==============

``snr`` is the x0 loss weighted by SNR, i.e. plain eps-MSE; ``min_snr`` is Min-SNR-γ (Hang et
al. 2023); ``truncated_snr`` is the truncated SNR weighting of Salimans & Ho (2022).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from vdm_jax.diffusion.parameterization import (
    check_parameterization,
    expand_like,
    log_x0_mse_factor,
    training_target,
)
from vdm_jax.diffusion.schedules import Schedule, alpha_sigma_from_log_snr

WEIGHTINGS = ("none", "snr", "min_snr", "truncated_snr")
TIME_SAMPLINGS = ("low_discrepancy", "uniform")

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def loss_weight(weighting: str, param: str, log_snr: jax.Array,
                min_snr_gamma: float = 5.0) -> jax.Array:
    """Per-example weight on the parameterisation's MSE (table above); shape of ``log_snr``.

    Computed in log space so it stays finite for λ in [−20, 20] and beyond.
    """
    check_parameterization(param)
    log_snr = jnp.asarray(log_snr, jnp.float32)
    if weighting == "none":
        return jnp.ones_like(log_snr)
    if weighting == "snr":
        log_w = log_snr
    elif weighting == "min_snr":
        log_w = jnp.minimum(log_snr, math.log(min_snr_gamma))
    elif weighting == "truncated_snr":
        log_w = jnp.maximum(log_snr, 0.0)
    else:
        raise ValueError(f"Unknown weighting {weighting!r}; expected one of {list(WEIGHTINGS)}.")
    return jnp.exp(log_w - log_x0_mse_factor(param, log_snr))


def sample_time(key: jax.Array, batch: int, method: str = "low_discrepancy") -> jax.Array:
    """Training times in [0, 1), shape ``(batch,)``.

    ``low_discrepancy`` (Kingma et al. 2021): t_i = (u + i/b) mod 1 with one shared u, so each
    batch covers [0, 1) evenly (lower-variance loss estimates); each t_i is still U(0, 1).
    """
    if method == "uniform":
        return jax.random.uniform(key, (batch,), jnp.float32)
    if method == "low_discrepancy":
        u = jax.random.uniform(key, (), jnp.float32)
        return jnp.mod(u + jnp.arange(batch, dtype=jnp.float32) / batch, 1.0)
    raise ValueError(f"Unknown time sampling {method!r}; expected one of {list(TIME_SAMPLINGS)}.")


def warp_time(t: jax.Array, power: float) -> jax.Array:
    """``1 − (1 − t)^power``: ``power > 1`` draws more training times near pure noise (t = 1),
    ``power = 1`` is the identity. A warped draw has density ``(1 − t)^(1/power − 1) / power``.
    """
    if power <= 0:
        raise ValueError(f"Expected a positive time-warp power, got {power}.")
    if power == 1.0:
        return t
    return 1.0 - jnp.power(1.0 - t, power)


def masked_mean(sq_err: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean of ``sq_err`` (b, ...) over non-batch dims, over ``mask``ed elements only -> (b,).

    ``mask`` has a prefix of the data's shape (e.g. a frame mask ``(b, t)``) or broadcasts to it;
    an example whose mask is all zero gets 0.
    """
    axes = tuple(range(1, sq_err.ndim))
    if mask is None:
        return jnp.mean(sq_err, axis=axes)
    mask = jnp.broadcast_to(expand_like(mask, sq_err), sq_err.shape).astype(sq_err.dtype)
    total = jnp.sum(sq_err * mask, axis=axes)
    count = jnp.sum(mask, axis=axes)
    return jnp.where(count > 0, total / jnp.maximum(count, 1e-12), 0.0)


def diffusion_loss(model_fn: ModelFn, x0: jax.Array, key: jax.Array, *, schedule: Schedule,
                   parameterization: str, weighting: str = "none",
                   mask: jax.Array | None = None, min_snr_gamma: float = 5.0,
                   time_sampling: str = "low_discrepancy",
                   time_warp: float = 1.0) -> tuple[jax.Array, dict]:
    """Weighted denoising loss per example.

    Args:
      model_fn: ``model_fn(z_t, t) -> prediction``, z_t like ``x0``, t ``(b,)`` in [0, 1].
      x0: clean data ``(b, ...)``, e.g. a video ``(b, t, h, w, c)`` in [−1, 1].
      key: PRNG key for t and ε.
      mask: optional, 1 where the loss counts (e.g. a frame mask ``(b, t)`` that excludes
        padding frames); a prefix of ``x0.shape`` or broadcastable to it.
      time_warp: power of :func:`warp_time` applied to the drawn times (1: none).

    Returns:
      ``(loss (b,), aux)`` where aux holds ``t``, ``log_snr``, ``weight`` (each ``(b,)``) and
      ``mse`` (the unweighted per-example MSE in the parameterisation's space).
    """
    check_parameterization(parameterization)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"Unknown weighting {weighting!r}; expected one of {list(WEIGHTINGS)}.")
    if x0.ndim < 1:
        raise ValueError(f"Expected x0 with a batch dim, got shape {x0.shape}.")
    t_key, eps_key = jax.random.split(key)
    t = warp_time(sample_time(t_key, x0.shape[0], time_sampling), time_warp)
    log_snr = schedule.log_snr(t)
    alpha, sigma = alpha_sigma_from_log_snr(log_snr)
    x0 = x0.astype(jnp.float32)
    eps = jax.random.normal(eps_key, x0.shape, jnp.float32)
    z_t = expand_like(alpha, x0) * x0 + expand_like(sigma, x0) * eps
    pred = model_fn(z_t, t).astype(jnp.float32)
    if pred.shape != x0.shape:
        raise ValueError(f"model_fn returned shape {pred.shape}; expected {x0.shape}.")
    target = training_target(parameterization, x0, eps, alpha, sigma)
    mse = masked_mean(jnp.square(pred - target), mask)
    weight = loss_weight(weighting, parameterization, log_snr, min_snr_gamma)
    aux = {"t": t, "log_snr": log_snr, "weight": weight, "mse": mse}
    return weight * mse, aux
