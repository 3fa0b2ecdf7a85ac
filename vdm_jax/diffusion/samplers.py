"""DDPM (ancestral) and DDIM(η) samplers as one ``jax.lax.scan`` over an even time grid.

The grid is t_i = 1 − i/num_steps, i = 0..num_steps; step i moves from t = t_i to s = t_{i+1}.
Every step evaluates the model once at t, forms x0_hat (clipped to [−1, 1] if ``clip_x0``,
then ε_hat is recomputed from it so the update stays consistent), and draws z_s:

- DDIM(η) (Song et al. 2021): z_s = α_s x0_hat + sqrt(σ_s² − c²) ε_hat + c·n with
  c² = η²(1 − SNR_t/SNR_s)·σ_s²; η = 0 is deterministic.
- DDPM: a draw from the posterior q(z_s | z_t, x0 = x0_hat) (Ho et al. 2020); equal in law to
  DDIM with η = 1.

The final step returns x0_hat from the model at t = 1/num_steps.

Jitting: ``noise`` and ``key`` (and ``guidance``, a pytree) are traced; ``model_fn``,
``schedule``, ``parameterization``, ``sampler``, ``num_steps``, ``clip_x0`` and ``progress``
are static Python values (close over them or mark them static); ``eta`` may be either. The
usual pattern jits a function that builds ``model_fn`` from traced params::

    @jax.jit
    def generate(params, noise, key):
        model_fn = lambda z, t: model.apply(params, z, t)
        return sample(model_fn, noise, key, schedule=sch, parameterization="v")

The model is traced once per shape (inside the scan body), whatever ``num_steps`` is.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from vdm_jax.diffusion.guidance import Guidance
from vdm_jax.diffusion.parameterization import check_parameterization, eps_from_x0, to_x0_eps
from vdm_jax.diffusion.schedules import Schedule, alpha_sigma_from_log_snr

SAMPLERS = ("ddim", "ddpm")

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def time_grid(num_steps: int) -> jax.Array:
    """Evenly spaced times from 1 to 0, shape ``(num_steps + 1,)``, float32."""
    return jnp.linspace(1.0, 0.0, num_steps + 1, dtype=jnp.float32)


def _ddim_update(z: jax.Array, x0: jax.Array, eps: jax.Array, log_snr_t: jax.Array,
                 log_snr_s: jax.Array, eta: float | jax.Array, key: jax.Array) -> jax.Array:
    """z_s from DDIM(η); λ's are scalars, arrays shaped like ``z``."""
    alpha_s, sigma_s = alpha_sigma_from_log_snr(log_snr_s)
    # 1 − SNR_t/SNR_s, accurate when the two times are close.
    one_minus_r = -jnp.expm1(log_snr_t - log_snr_s)
    if isinstance(eta, (int, float)) and eta == 0:
        return alpha_s * x0 + sigma_s * eps  # deterministic: skip drawing unused noise
    c = eta * sigma_s * jnp.sqrt(one_minus_r)
    direction = jnp.sqrt(jnp.maximum(sigma_s**2 - c**2, 0.0))
    noise = jax.random.normal(key, z.shape, z.dtype)
    return alpha_s * x0 + direction * eps + c * noise


def _ddpm_update(z: jax.Array, x0: jax.Array, log_snr_t: jax.Array, log_snr_s: jax.Array,
                 key: jax.Array) -> jax.Array:
    """z_s ~ q(z_s | z_t, x0): mean α_s(1−r)·x0 + (α_t σ_s²/(α_s σ_t²))·z_t, var (1−r)·σ_s²."""
    alpha_t, sigma_t = alpha_sigma_from_log_snr(log_snr_t)
    alpha_s, sigma_s = alpha_sigma_from_log_snr(log_snr_s)
    one_minus_r = -jnp.expm1(log_snr_t - log_snr_s)  # r = SNR_t / SNR_s
    mean = alpha_s * one_minus_r * x0 + (alpha_t * sigma_s**2 / (alpha_s * sigma_t**2)) * z
    std = sigma_s * jnp.sqrt(one_minus_r)
    return mean + std * jax.random.normal(key, z.shape, z.dtype)


def _check_settings(parameterization: str, sampler: str, num_steps: int,
                    eta: float | jax.Array) -> None:
    check_parameterization(parameterization)
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; expected one of {list(SAMPLERS)}.")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"Expected num_steps to be a positive Python int, got {num_steps!r}.")
    if isinstance(eta, (int, float)) and eta < 0:
        raise ValueError(f"Expected eta >= 0, got {eta}.")


def sample(model_fn: ModelFn, noise: jax.Array, key: jax.Array, *, schedule: Schedule,
           parameterization: str, sampler: str = "ddim", num_steps: int = 50,
           eta: float | jax.Array = 0.0, clip_x0: bool = True,
           guidance: Guidance | None = None,
           progress: Callable[[int], None] | None = None) -> jax.Array:
    """Draws x0 from ``model_fn`` starting at ``noise`` (z at t = 1).

    Args:
      model_fn: ``model_fn(z_t, t) -> prediction`` (eps, v or x0 per ``parameterization``),
        z_t ``(b, ...)``, t ``(b,)``.
      noise: ``(b, ...)``, e.g. a video ``(b, t, h, w, c)``; usually N(0, I).
      key: PRNG key for the stochastic updates and guidance.
      sampler: ``"ddim"`` (with ``eta``) or ``"ddpm"`` (ignores ``eta``).
      clip_x0: clip x0_hat to [−1, 1] at each step.
      guidance: an object with ``guide(denoise, z, alpha, sigma, key)`` (see ``Guidance``),
        e.g. ``ReconstructionGuidance``; classifier-free guidance wraps ``model_fn`` instead.
      progress: ``progress(step_index)`` called from inside the loop (unordered host
        callback), e.g. to advance a tqdm bar.

    Returns:
      x0 ``(b, ...)`` shaped like ``noise``.
    """
    _check_settings(parameterization, sampler, num_steps, eta)
    ts = time_grid(num_steps)

    def step(carry, xs):
        z, _ = carry
        i, t, s = xs
        log_snr_t, log_snr_s = schedule.log_snr(t), schedule.log_snr(s)
        alpha_t, sigma_t = alpha_sigma_from_log_snr(log_snr_t)
        alpha_b = jnp.full((z.shape[0],), alpha_t)
        sigma_b = jnp.full((z.shape[0],), sigma_t)
        t_b = jnp.full((z.shape[0],), t)
        step_key, guide_key = jax.random.split(jax.random.fold_in(key, i))

        def denoise(z_in: jax.Array) -> jax.Array:
            pred = model_fn(z_in, t_b)
            if pred.shape != z_in.shape:
                raise ValueError(f"model_fn returned shape {pred.shape}; expected {z_in.shape}.")
            pred = pred.astype(z_in.dtype)
            return to_x0_eps(parameterization, pred, z_in, alpha_b, sigma_b)

        if guidance is None:
            x0, eps = denoise(z)
        else:
            z, x0 = guidance.guide(lambda z_in: denoise(z_in)[0], z, alpha_b, sigma_b,
                                   guide_key)
        if clip_x0:
            x0 = jnp.clip(x0, -1.0, 1.0)
        if clip_x0 or guidance is not None:
            eps = eps_from_x0(x0, z, alpha_b, sigma_b)
        if sampler == "ddpm":
            z_next = _ddpm_update(z, x0, log_snr_t, log_snr_s, step_key)
        else:
            z_next = _ddim_update(z, x0, eps, log_snr_t, log_snr_s, eta, step_key)
        if progress is not None:
            jax.debug.callback(lambda idx: progress(int(idx)), i, ordered=False)
        # Keep the carry's dtype (e.g. bf16 noise) fixed across steps.
        return (z_next.astype(noise.dtype), x0.astype(noise.dtype)), None

    steps = jnp.arange(num_steps, dtype=jnp.int32)
    init = (noise, jnp.zeros_like(noise))
    (_, x0), _ = jax.lax.scan(step, init, (steps, ts[:-1], ts[1:]))
    return x0

