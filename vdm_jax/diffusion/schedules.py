"""Noise schedules as maps from continuous time to log SNR.

Time ``t`` runs over [0, 1] (0 = clean, 1 = pure noise). A schedule gives the log
signal-to-noise ratio ``λ(t)`` (monotone decreasing); the variance-preserving process is

    α² = sigmoid(λ),  σ² = sigmoid(−λ),  z_t = α x0 + σ ε.

``Schedule`` is a frozen (hashable) dataclass, so it can be a static argument of ``jax.jit``
or be closed over. Build one with ``cosine``, ``linear``, ``scaled_linear``,
``shifted_cosine`` or ``get_schedule(name, **kwargs)``.

Discrete-step schedules (``linear``, ``scaled_linear``) map DDPM step ``n`` (1-based; ``ᾱ_n =
∏_{i≤n} (1 − β_i)``) to ``t = n / N``. A 0-based diffusers timestep ``k`` is ``t = (k + 1) / N``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# Keeps log() finite where cos or sin reach 0 at the ends, so values (and gradients) stay finite.
_TINY = 1e-30


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A log-SNR schedule ``t -> λ(t)``.

    Attributes:
      kind: one of ``SCHEDULES``.
      logsnr_min, logsnr_max: λ is clipped to this range (keeps α and σ away from 0 at the ends).
      s: cosine offset (Nichol & Dhariwal); cosine kinds only.
      shift: added to λ after clipping, ``2·log(base_resolution / resolution)``;
        ``shifted_cosine`` only.
      beta_start, beta_end, num_train_steps: discrete beta schedule; linear kinds only.
    """

    kind: str
    logsnr_min: float = -20.0
    logsnr_max: float = 20.0
    s: float = 0.008
    shift: float = 0.0
    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_train_steps: int = 1000

    def __post_init__(self):
        if self.kind not in _LOG_SNR_FNS:
            raise ValueError(f"Unknown schedule kind {self.kind!r}; expected one of "
                             f"{sorted(_LOG_SNR_FNS)}.")
        if not self.logsnr_min < self.logsnr_max:
            raise ValueError(f"Expected logsnr_min < logsnr_max, got "
                             f"{self.logsnr_min} and {self.logsnr_max}.")
        if self.num_train_steps < 1:
            raise ValueError(f"Expected num_train_steps >= 1, got {self.num_train_steps}.")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(f"Expected 0 < beta_start <= beta_end < 1, got "
                             f"{self.beta_start}, {self.beta_end}.")

    def log_snr(self, t: jax.Array) -> jax.Array:
        """λ(t), float32, same shape as ``t`` (any shape, e.g. ``(b,)``)."""
        t = jnp.asarray(t, jnp.float32)
        return _LOG_SNR_FNS[self.kind](self, t)

    def snr(self, t: jax.Array) -> jax.Array:
        """SNR(t) = α²/σ² = exp(λ(t)), same shape as ``t``."""
        return jnp.exp(self.log_snr(t))

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(α(t), σ(t)), each the shape of ``t``; α² + σ² = 1."""
        return alpha_sigma_from_log_snr(self.log_snr(t))


def alpha_sigma_from_log_snr(log_snr: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(α, σ) = (sqrt(sigmoid(λ)), sqrt(sigmoid(−λ))), elementwise."""
    return jnp.sqrt(jax.nn.sigmoid(log_snr)), jnp.sqrt(jax.nn.sigmoid(-log_snr))


def _cosine_unclipped(sch: Schedule, t: jax.Array) -> jax.Array:
    """λ(t) of ᾱ(t) = cos²(u)/cos²(u0), u = (t+s)/(1+s)·π/2, written without 1 − ᾱ.

    σ² ∝ cos²u0 − cos²u = sin(u − u0)·sin(u + u0), which stays accurate near t = 0.
    """
    u0 = sch.s / (1.0 + sch.s) * math.pi / 2
    u = (t + sch.s) / (1.0 + sch.s) * (math.pi / 2)
    num = jnp.maximum(jnp.cos(u) ** 2, _TINY)
    den = jnp.maximum(jnp.sin(u - u0) * jnp.sin(u + u0), _TINY)
    return jnp.log(num) - jnp.log(den)


def _cosine(sch: Schedule, t: jax.Array) -> jax.Array:
    return jnp.clip(_cosine_unclipped(sch, t), sch.logsnr_min, sch.logsnr_max)


def _shifted_cosine(sch: Schedule, t: jax.Array) -> jax.Array:
    # Shift after clipping (as in simple diffusion), so the shift is exact for every t.
    return _cosine(sch, t) + sch.shift


def _betas(sch: Schedule) -> np.ndarray:
    """Discrete betas ``(N,)`` in float64."""
    n = sch.num_train_steps
    if sch.kind == "scaled_linear":
        return np.linspace(sch.beta_start**0.5, sch.beta_end**0.5, n, dtype=np.float64) ** 2
    return np.linspace(sch.beta_start, sch.beta_end, n, dtype=np.float64)


def discrete_log_alpha_bar(sch: Schedule) -> np.ndarray:
    """log ᾱ_n for n = 0..N, shape ``(N + 1,)``, float64; ``ᾱ_0 = 1``."""
    return np.concatenate([[0.0], np.cumsum(np.log1p(-_betas(sch)))])


def _discrete(sch: Schedule, t: jax.Array) -> jax.Array:
    """Interpolates log ᾱ linearly in the step index ``t·N``; exact at integer steps."""
    table = discrete_log_alpha_bar(sch)
    steps = jnp.arange(table.shape[0], dtype=jnp.float32)
    log_ab = jnp.interp(t * sch.num_train_steps, steps, jnp.asarray(table, jnp.float32))
    log_ab = jnp.minimum(log_ab, -_TINY)  # ᾱ_0 = 1 gives λ = +inf before clipping
    log_snr = log_ab - jnp.log(-jnp.expm1(log_ab))
    return jnp.clip(log_snr, sch.logsnr_min, sch.logsnr_max)


_LOG_SNR_FNS: dict[str, Callable[[Schedule, jax.Array], jax.Array]] = {
    "cosine": _cosine,
    "shifted_cosine": _shifted_cosine,
    "linear": _discrete,
    "scaled_linear": _discrete,
}


def cosine(s: float = 0.008, logsnr_min: float = -20.0, logsnr_max: float = 20.0) -> Schedule:
    """Cosine schedule (Nichol & Dhariwal 2021) with λ clipped to [logsnr_min, logsnr_max]."""
    return Schedule("cosine", logsnr_min=logsnr_min, logsnr_max=logsnr_max, s=s)


def shifted_cosine(resolution: float, base_resolution: float = 64.0, s: float = 0.008,
                   logsnr_min: float = -20.0, logsnr_max: float = 20.0) -> Schedule:
    """Shifted cosine (simple diffusion, Hoogeboom et al. 2023).

    λ(t) = λ_cosine(t) + 2·log(base_resolution / resolution): at a higher resolution than the
    base, each noise level is noisier. For video, pass the spatial side length (or an
    effective one, e.g. sqrt(frames)·side, if the whole volume should count).
    """
    if resolution <= 0 or base_resolution <= 0:
        raise ValueError(f"Expected positive resolutions, got resolution={resolution}, "
                         f"base_resolution={base_resolution}.")
    shift = 2.0 * math.log(base_resolution / resolution)
    return Schedule("shifted_cosine", logsnr_min=logsnr_min, logsnr_max=logsnr_max, s=s,
                    shift=shift)


def linear(beta_start: float = 1e-4, beta_end: float = 0.02, num_train_steps: int = 1000,
           logsnr_min: float = -20.0, logsnr_max: float = 20.0) -> Schedule:
    """DDPM's linear betas (Ho et al. 2020), continuous in t via log ᾱ interpolation."""
    return Schedule("linear", logsnr_min=logsnr_min, logsnr_max=logsnr_max,
                    beta_start=beta_start, beta_end=beta_end, num_train_steps=num_train_steps)


def scaled_linear(beta_start: float = 0.00085, beta_end: float = 0.012,
                  num_train_steps: int = 1000, logsnr_min: float = -20.0,
                  logsnr_max: float = 20.0) -> Schedule:
    """Stable Diffusion's betas: linear in sqrt(β) from sqrt(beta_start) to sqrt(beta_end)."""
    return Schedule("scaled_linear", logsnr_min=logsnr_min, logsnr_max=logsnr_max,
                    beta_start=beta_start, beta_end=beta_end, num_train_steps=num_train_steps)


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "cosine": cosine,
    "shifted_cosine": shifted_cosine,
    "linear": linear,
    "scaled_linear": scaled_linear,
}


def get_schedule(name: str, **kwargs) -> Schedule:
    """Builds a schedule by name, e.g. ``get_schedule("shifted_cosine", resolution=128)``."""
    if name not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}; known schedules: {sorted(SCHEDULES)}.")
    return SCHEDULES[name](**kwargs)
