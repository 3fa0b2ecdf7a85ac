"""Parameterisation round trips and the training loss (weightings, masks, time sampling)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax import diffusion as D

PARAMS = ("eps", "v", "x0")
SCH = D.cosine()


def rbg_key(seed):
    """Any key type works; "rbg" keys compile much faster than threefry on CPU."""
    return jax.random.key(seed, impl="rbg")


def _data(shape=(4, 3, 4, 4, 2), seed=0):
    k1, k2 = jax.random.split(rbg_key(seed))
    x0 = jax.random.uniform(k1, shape, minval=-1.0, maxval=1.0)
    return x0, jax.random.normal(k2, shape)


@pytest.mark.parametrize("param", PARAMS)
def test_round_trip(param):
    x0, eps = _data()
    alpha, sigma = D.alpha_sigma_from_log_snr(jnp.array([-8.0, -1.0, 2.0, 8.0]))
    z = D.expand_like(alpha, x0) * x0 + D.expand_like(sigma, x0) * eps
    pred = D.training_target(param, x0, eps, alpha, sigma)
    x0_hat, eps_hat = D.to_x0_eps(param, pred, z, alpha, sigma)
    np.testing.assert_allclose(x0_hat, x0, atol=1e-4)
    np.testing.assert_allclose(eps_hat, eps, atol=1e-4)
    back = D.prediction_from_x0_eps(param, x0_hat, eps_hat, alpha, sigma)
    np.testing.assert_allclose(back, pred, atol=1e-4)


def test_targets_are_the_textbook_ones():
    x0, eps = _data()
    alpha, sigma = jnp.full((4,), 0.6), jnp.full((4,), 0.8)
    np.testing.assert_array_equal(D.training_target("eps", x0, eps, alpha, sigma), eps)
    np.testing.assert_array_equal(D.training_target("x0", x0, eps, alpha, sigma), x0)
    np.testing.assert_allclose(D.training_target("v", x0, eps, alpha, sigma),
                               0.6 * eps - 0.8 * x0, atol=1e-6)
    with pytest.raises(ValueError, match="expected one of.*'eps'"):
        D.training_target("score", x0, eps, alpha, sigma)


def test_min_snr_closed_forms():
    lam = np.linspace(-12.0, 12.0, 97)
    snr = np.exp(lam)
    g = 5.0
    expected = {
        "eps": np.minimum(snr, g) / snr,
        "v": np.minimum(snr, g) / (snr + 1),
        "x0": np.minimum(snr, g),
    }
    for param, want in expected.items():
        got = D.loss_weight("min_snr", param, jnp.asarray(lam, jnp.float32), min_snr_gamma=g)
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=param)


def test_other_weightings_closed_forms():
    lam = np.linspace(-10.0, 10.0, 41)
    snr = np.exp(lam)
    c = {"eps": snr, "v": snr + 1, "x0": np.ones_like(snr)}
    lam32 = jnp.asarray(lam, jnp.float32)
    for param in PARAMS:
        np.testing.assert_allclose(D.loss_weight("snr", param, lam32), snr / c[param], rtol=1e-5)
        np.testing.assert_allclose(D.loss_weight("truncated_snr", param, lam32),
                                   np.maximum(snr, 1) / c[param], rtol=1e-5)
        np.testing.assert_array_equal(D.loss_weight("none", param, lam32), 1.0)
    with pytest.raises(ValueError, match="Unknown weighting"):
        D.loss_weight("p2", "eps", lam32)


def _x0_model(x0_true):
    """An imperfect x0 predictor: shrinks the truth toward a noisy view of z (depends on t)."""
    def predict_x0(z, t):
        return 0.7 * x0_true + 0.2 * jnp.tanh(z) * D.expand_like(t, z)
    return predict_x0


def _as_param_model(predict_x0, param):
    """Wraps an x0 predictor as an eps / v / x0 model (same x0 estimate for every param)."""
    def model_fn(z, t):
        alpha, sigma = SCH.alpha_sigma(t)
        x0_hat = predict_x0(z, t)
        eps_hat = D.eps_from_x0(x0_hat, z, alpha, sigma)
        return D.prediction_from_x0_eps(param, x0_hat, eps_hat, alpha, sigma)
    return model_fn


@pytest.mark.parametrize("weighting", ["snr", "min_snr", "truncated_snr"])
def test_weightings_mean_the_same_objective_for_every_param(weighting):
    x0, _ = _data(shape=(8, 2, 4, 4, 1))
    f = _x0_model(x0)
    key = rbg_key(3)
    losses = {p: D.diffusion_loss(_as_param_model(f, p), x0, key, schedule=SCH,
                                  parameterization=p, weighting=weighting)[0] for p in PARAMS}
    np.testing.assert_allclose(losses["eps"], losses["x0"], rtol=2e-3)
    np.testing.assert_allclose(losses["v"], losses["x0"], rtol=2e-3)
    # In x0 terms the loss is w_x0(λ)·‖x0_hat − x0‖² (mean over elements).
    _, aux = D.diffusion_loss(_as_param_model(f, "x0"), x0, key, schedule=SCH,
                              parameterization="x0", weighting="none")
    snr = np.exp(np.asarray(aux["log_snr"], np.float64))
    w_x0 = {"snr": snr, "min_snr": np.minimum(snr, 5.0), "truncated_snr": np.maximum(snr, 1.0)}
    assert float(jnp.min(aux["mse"])) > 1e-3
    np.testing.assert_allclose(losses["x0"], w_x0[weighting] * aux["mse"], rtol=1e-5)


@pytest.mark.parametrize("param", PARAMS)
def test_perfect_model_has_zero_loss(param):
    x0, _ = _data()
    loss, aux = D.diffusion_loss(_as_param_model(lambda z, t: x0, param), x0, rbg_key(1),
                                 schedule=SCH, parameterization=param, weighting="min_snr")
    assert loss.shape == (4,) and aux["t"].shape == (4,)
    np.testing.assert_allclose(aux["mse"], 0.0, atol=1e-6)


def test_loss_value_and_low_discrepancy_times():
    x0, _ = _data(shape=(8, 2, 2, 2, 1))
    key = rbg_key(7)
    zeros = lambda z, t: jnp.zeros_like(z)  # noqa: E731
    loss, aux = D.diffusion_loss(zeros, x0, key, schedule=SCH, parameterization="x0")
    np.testing.assert_allclose(loss, jnp.mean(x0**2, axis=(1, 2, 3, 4)), rtol=1e-6)
    t = np.sort(np.asarray(aux["t"]))
    assert np.all((t >= 0) & (t < 1))
    np.testing.assert_allclose(np.diff(t), 1 / 8, atol=1e-6)
    np.testing.assert_allclose(aux["log_snr"], SCH.log_snr(aux["t"]))
    _, aux_u = D.diffusion_loss(zeros, x0, key, schedule=SCH, parameterization="x0",
                                time_sampling="uniform")
    assert not np.allclose(np.diff(np.sort(np.asarray(aux_u["t"]))), 1 / 8, atol=1e-3)


def test_frame_mask_excludes_padding_frames():
    x0, _ = _data(shape=(2, 4, 2, 2, 1))
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], jnp.float32)  # (b, t) frame mask
    key = rbg_key(2)

    def model(junk):
        def fn(z, t):
            pad = 1.0 - D.expand_like(mask, z)
            return 0.5 * x0 + junk * pad  # junk only lands on padding frames
        return fn

    kw = dict(schedule=SCH, parameterization="x0", mask=mask)
    a, _ = D.diffusion_loss(model(0.0), x0, key, **kw)
    b, _ = D.diffusion_loss(model(100.0), x0, key, **kw)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    sq = np.asarray((0.5 * x0) ** 2).mean(axis=(2, 3, 4))  # per-frame MSE (b, t)
    np.testing.assert_allclose(a, [sq[0, :3].mean(), sq[1, :2].mean()], rtol=1e-5)
    c, _ = D.diffusion_loss(model(100.0), x0, key, schedule=SCH, parameterization="x0")
    assert np.all(np.asarray(c) > 100 * np.asarray(a))


def test_time_warp_favours_high_noise():
    from vdm_jax.diffusion.losses import warp_time

    t = jnp.linspace(0.0, 1.0, 11)
    np.testing.assert_array_equal(warp_time(t, 1.0), t)
    warped = np.asarray(warp_time(t, 2.0))
    np.testing.assert_allclose(warped, 1 - (1 - np.asarray(t)) ** 2, rtol=1e-6)
    assert warped[0] == 0.0 and warped[-1] == 1.0 and np.all(warped >= np.asarray(t))
    with pytest.raises(ValueError, match="positive time-warp power"):
        warp_time(t, 0.0)
