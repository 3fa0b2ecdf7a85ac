"""Schedule identities: α² + σ² = 1, monotone λ, endpoints, discrete-ᾱ and paper formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.diffusion import schedules as S

ALL = {
    "cosine": S.cosine(),
    "shifted_cosine": S.shifted_cosine(resolution=128),
    "linear": S.linear(),
    "scaled_linear": S.scaled_linear(),
}
T_GRID = jnp.linspace(0.0, 1.0, 1001)


@pytest.mark.parametrize("name", sorted(ALL))
def test_variance_preserving_and_monotone(name):
    sch = ALL[name]
    alpha, sigma = sch.alpha_sigma(T_GRID)
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, atol=1e-6)
    lam = np.asarray(sch.log_snr(T_GRID))
    assert np.all(np.isfinite(lam)) and lam.dtype == np.float32
    assert np.all(np.diff(lam) <= 0)
    interior = lam[10:-10]
    assert np.all(np.diff(interior) < 0), "λ should be strictly decreasing inside (0, 1)"


def test_cosine_endpoints_and_nichol_formula():
    sch = S.cosine()
    assert float(sch.log_snr(jnp.float32(0.0))) == 20.0
    assert float(sch.log_snr(jnp.float32(1.0))) == -20.0
    t = np.linspace(0.02, 0.98, 49)
    s = 0.008
    f = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2
    alpha_bar = f / np.cos(s / (1 + s) * np.pi / 2) ** 2
    alpha, _ = sch.alpha_sigma(jnp.asarray(t, jnp.float32))
    np.testing.assert_allclose(np.asarray(alpha) ** 2, alpha_bar, rtol=2e-5, atol=1e-6)


def _alpha_bar(betas):
    return np.cumprod(1.0 - betas)


@pytest.mark.parametrize("name,betas", [
    ("linear", np.linspace(1e-4, 0.02, 1000)),
    ("scaled_linear", np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2),
])
def test_discrete_schedules_exact_at_integer_steps(name, betas):
    sch = ALL[name]
    alpha_bar = _alpha_bar(betas)  # alpha_bar[n - 1] = ᾱ_n
    steps = np.array([1, 2, 10, 250, 500, 999, 1000])
    t = jnp.asarray(steps / 1000.0, jnp.float32)
    lam = np.asarray(sch.log_snr(t), np.float64)
    ab = alpha_bar[steps - 1]
    np.testing.assert_allclose(lam, np.log(ab / (1 - ab)), atol=2e-4)
    alpha, _ = sch.alpha_sigma(t)
    np.testing.assert_allclose(np.asarray(alpha, np.float64) ** 2, ab, rtol=1e-5)
    # t = 0 is clean (ᾱ_0 = 1): λ sits at the clip value.
    assert float(sch.log_snr(jnp.float32(0.0))) == sch.logsnr_max
    # Between steps, λ lies between its neighbours.
    mid = float(sch.log_snr(jnp.float32(0.2505)))
    assert float(sch.log_snr(jnp.float32(0.251))) < mid < float(sch.log_snr(jnp.float32(0.250)))


def test_shifted_cosine_shift():
    base, shifted = S.cosine(), S.shifted_cosine(resolution=256, base_resolution=64)
    diff = shifted.log_snr(T_GRID) - base.log_snr(T_GRID)
    np.testing.assert_allclose(diff, 2 * math.log(64 / 256), atol=1e-5)
    same = S.shifted_cosine(resolution=64, base_resolution=64)
    np.testing.assert_array_equal(same.log_snr(T_GRID), base.log_snr(T_GRID))


def test_get_schedule_and_static_jit_arg():
    assert S.get_schedule("linear", num_train_steps=10) == S.linear(num_train_steps=10)
    assert S.get_schedule("shifted_cosine", resolution=32).shift == pytest.approx(2 * math.log(2))
    with pytest.raises(ValueError, match="known schedules.*cosine"):
        S.get_schedule("sigmoid")
    with pytest.raises(ValueError, match="logsnr_min < logsnr_max"):
        S.cosine(logsnr_min=5.0, logsnr_max=1.0)
    fn = jax.jit(lambda t, sch: sch.log_snr(t), static_argnums=1)
    out = fn(jnp.array([0.5]), S.cosine())
    np.testing.assert_allclose(out, S.cosine().log_snr(jnp.array([0.5])), atol=1e-6)
    assert hash(S.cosine()) == hash(S.cosine())
