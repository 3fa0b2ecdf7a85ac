"""PSNR, SSIM and flicker against closed forms and a brute-force SSIM."""

import numpy as np
import pytest

from vdm_jax.eval.video_metrics import flicker, psnr, reconstruction_metrics, ssim


def _videos(seed=0, shape=(2, 3, 16, 16, 3)):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, shape).astype(np.float32)


def _ssim_brute_force(x, y, size=11, sigma=1.5):
    """Direct windowed sums over every valid position of every plane."""
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.02**2, 0.06**2
    out = []
    for p, q in zip(np.moveaxis(x, -1, 0).reshape(-1, *x.shape[-3:-1]),
                    np.moveaxis(y, -1, 0).reshape(-1, *y.shape[-3:-1]), strict=True):
        h, wd = p.shape
        for i in range(h - size + 1):
            for j in range(wd - size + 1):
                a, b = p[i:i + size, j:j + size], q[i:i + size, j:j + size]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb = (w * a * a).sum() - ma**2, (w * b * b).sum() - mb**2
                cov = (w * a * b).sum() - ma * mb
                out.append((2 * ma * mb + c1) * (2 * cov + c2)
                           / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return np.mean(out)


def test_psnr_of_a_constant_error():
    x = _videos()
    assert np.allclose(psnr(x, x + 0.1), 10 * np.log10(4 / 0.01), atol=1e-3)


def test_ssim_matches_brute_force_and_orders_noise():
    x = _videos(shape=(1, 2, 14, 13, 2))
    y = x + 0.3 * _videos(1, x.shape)
    assert abs(float(ssim(x, y)[0]) - _ssim_brute_force(x[0], y[0])) < 1e-5
    assert np.allclose(ssim(x, x), 1.0, atol=1e-5)
    noisier = x + 0.6 * _videos(1, x.shape)
    assert float(ssim(x, noisier)[0]) < float(ssim(x, y)[0]) < 1.0


def test_flicker_ignores_a_static_offset_and_counts_alternating_error():
    x = _videos()
    assert np.allclose(flicker(x + 0.2, x), 0.0, atol=1e-6)
    signs = np.where(np.arange(x.shape[1]) % 2 == 0, 1.0, -1.0)[None, :, None, None, None]
    assert np.allclose(flicker(x + 0.1 * signs, x), 0.2, atol=1e-5)
    assert np.allclose(flicker(x[:, :1], x[:, :1]), 0.0)


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        reconstruction_metrics(_videos(), _videos()[:, :2])
